package engineio

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// poll serves a long-polling GET: it answers at once with the queued
// packets, or holds the request until there are some, until the session
// closes (then the close packet), or until an upgrade needs the client to
// stop polling (then a noop). One GET at a time: a second one is an overlap
// and closes the session, as in engine.io lib/transports/polling.ts.
func (s *Session) poll(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.getWait {
		s.mu.Unlock()
		s.closeWith(ErrOverlap, false)
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "overlap from client"})
		return
	}
	if s.transport != transportPolling {
		s.mu.Unlock()
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "transport mismatch"})
		return
	}
	s.getWait = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.getWait = false
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		n := s.queued
		packets, closing, noop := s.pollReadyLocked()
		probed, upgraded, gate := s.probed, s.upgraded, s.gate
		s.mu.Unlock()
		if err := gateFails(gate, packets); err != nil {
			// Nothing queued goes out: the client gets the close alone.
			s.closeWith(err, false)
			s.mu.Lock()
			s.closeSent = true
			s.mu.Unlock()
			packets, closing, noop = nil, true, false
		}
		if packets != nil || closing || noop {
			if closing {
				packets = append(packets, Packet{Type: PacketClose})
				s.srv.remove(s)
			} else if len(packets) == 0 {
				packets = append(packets, Packet{Type: PacketNoop})
			}
			writePollResponse(w, AppendPayload(make([]byte, 0, 64), s.proto, packets))
			s.wrote(n)
			return
		}
		select {
		case <-s.wake:
		case <-s.done:
		case <-probed:
		case <-upgraded:
		case <-r.Context().Done():
			s.closeWith(ErrTransportClosed, false)
			return
		}
	}
}

// pollReadyLocked tells what a held GET answers now: queued packets, the
// close, or a noop while an upgrade waits for polling to pause; all zero
// means wait.
func (s *Session) pollReadyLocked() (packets []Packet, closing, noop bool) {
	if len(s.queue) > 0 {
		packets = s.takeLocked(nil)
	}
	if s.reason != nil {
		if s.closeSent {
			return nil, false, true
		}
		s.closeSent = true
		return packets, true, false
	}
	if packets != nil {
		return packets, false, false
	}
	if s.transport != transportPolling {
		return nil, false, true
	}
	select {
	case <-s.probed:
		return nil, false, true
	default:
	}
	return nil, false, false
}

// receive serves a polling POST: its body is a payload of packets, handled
// in order; engine.io answers "ok".
func (s *Session) receive(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.postBusy {
		s.mu.Unlock()
		s.closeWith(ErrOverlap, false)
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "data request overlap from client"})
		return
	}
	if s.transport != transportPolling || s.reason != nil {
		s.mu.Unlock()
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "transport mismatch"})
		return
	}
	s.postBusy = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.postBusy = false
		s.mu.Unlock()
	}()
	if r.Header.Get("Content-Type") == "application/octet-stream" {
		// engine.io-client 3 posts binary payloads this way; only text
		// payloads are read.
		s.closeWith(ErrNotText, false)
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "binary payloads are not supported"})
		return
	}
	// A slow POST must not outlive the heartbeat.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.srv.pingInterval() + s.srv.pingTimeout()))
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.srv.maxPayload()))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			s.closeWith(ErrPayloadTooLarge, false)
			writeError(w, &HandshakeError{Status: http.StatusRequestEntityTooLarge, Code: CodeBadRequest, Message: "Payload too large"})
			return
		}
		s.closeWith(ErrTransportClosed, false)
		return
	}
	packets, err := DecodePayload(s.proto, body)
	if err != nil {
		s.closeWith(err, false)
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "Bad payload"})
		return
	}
	for _, p := range packets {
		if s.Err() != nil {
			break
		}
		s.onPacket(p)
	}
	h := w.Header()
	// text/html as engine.io answers, so no user agent offers a download.
	h.Set("Content-Type", "text/html")
	h.Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, "ok")
}
