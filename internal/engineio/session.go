package engineio

import (
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// transport kinds of a session.
const (
	transportPolling   = "polling"
	transportWebSocket = "websocket"
)

// Session is one Engine.IO connection, on long-polling or on a WebSocket,
// from its open packet to its close. Its methods are safe for concurrent use.
type Session struct {
	id     string
	proto  int
	srv    *Server
	done   chan struct{}
	wake   chan struct{} // cap 1: the queue has something for the writer
	handle func(data []byte, binary bool)

	mu        sync.Mutex
	transport string
	queue     []Packet // outbound, in order
	queued    int      // bytes of data in queue
	// writing is the bytes of data a writer has taken from the queue and
	// not yet written: they count against MaxQueueBytes until written, as
	// a native socket's frames do, so a writer stuck on a client that
	// stopped reading does not let the queue grow by another bound.
	writing   int
	ws        *websocket.Conn // the WebSocket once the session is on one
	reason    error           // why the session closed; nil while open
	flushOut  bool            // at close, still deliver queue (a graceful close)
	getWait   bool            // a polling GET is held open
	postBusy  bool            // a polling POST is being read
	upgrading bool            // a WebSocket probe is under way
	probed    chan struct{}
	upgraded  chan struct{} // closed when the session moved to WebSocket
	closeSent bool          // the close reached a polling GET
	gate      func() error  // SetWriteGate; nil: none
	pingTimer *time.Timer   // protocol 4: next ping; protocol 3: unused
	liveTimer *time.Timer   // protocol 4: pong deadline; protocol 3: silence deadline
}

func newSession(srv *Server, id string, proto int, transport string) *Session {
	return &Session{
		id:        id,
		proto:     proto,
		srv:       srv,
		transport: transport,
		done:      make(chan struct{}),
		wake:      make(chan struct{}, 1),
		probed:    make(chan struct{}),
		upgraded:  make(chan struct{}),
	}
}

// ID is the session id the handshake gave (Server.NewID's answer).
func (s *Session) ID() string { return s.id }

// Protocol is the Engine.IO protocol revision, Protocol3 or Protocol4.
func (s *Session) Protocol() int { return s.proto }

// Transport is "polling" or "websocket", the transport in use now.
func (s *Session) Transport() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transport
}

// OnMessage sets the function each inbound message packet is given to, in
// order, on the goroutine that read it (the WebSocket reader or the polling
// POST's handler); it must be set in Server.OnSession, before any packet is
// read. The function may keep data. A slow function slows that client's reads
// only. Messages that arrive with no function set are dropped.
func (s *Session) OnMessage(fn func(data []byte, binary bool)) { s.handle = fn }

// SetWriteGate sets a check the writers make before they write message
// packets (a WebSocket batch, a polling response): an error closes the
// session with that reason at once, and the queued messages are dropped, not
// written. It is for a caller whose right to deliver can lapse while packets
// wait, such as a gateway whose lease may have expired while it was frozen.
// Set it in Server.OnSession; fn must be cheap and must not call the
// session's methods.
func (s *Session) SetWriteGate(fn func() error) {
	s.mu.Lock()
	s.gate = fn
	s.mu.Unlock()
}

// gateFails runs the write gate when packets hold a message and reports the
// gate's error.
func gateFails(gate func() error, packets []Packet) error {
	if gate == nil {
		return nil
	}
	for _, p := range packets {
		if p.Type == PacketMessage {
			return gate()
		}
	}
	return nil
}

// Done is closed when the session has closed; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is the reason the session closed, nil while it is open.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Send queues message packets, each UTF-8 text (for Socket.IO, an encoded
// packet), to go out in order. The slices are kept until written and must not
// change after the call; one slice may go to many sessions. Send never
// blocks: past Server.MaxQueueFrames packets or Server.MaxQueueBytes bytes
// waiting, the session closes with ErrQueueFull (a client that does not keep
// up is disconnected, not waited for). It returns ErrClosed after the close,
// ErrQueueFull on that overflow, ErrNotText for a slice that is not UTF-8
// (nothing of that call is queued).
func (s *Session) Send(msgs ...[]byte) error {
	for _, m := range msgs {
		if !utf8.Valid(m) {
			return ErrNotText
		}
	}
	s.mu.Lock()
	if s.reason != nil {
		s.mu.Unlock()
		return ErrClosed
	}
	n := 0
	for _, m := range msgs {
		n += len(m)
	}
	if len(s.queue)+len(msgs) > s.srv.maxQueueFrames() || s.queued+s.writing+n > s.srv.maxQueueBytes() {
		s.mu.Unlock()
		s.Close(ErrQueueFull)
		return ErrQueueFull
	}
	for _, m := range msgs {
		s.queue = append(s.queue, Packet{Type: PacketMessage, Data: m})
	}
	s.queued += n
	s.mu.Unlock()
	s.signal()
	return nil
}

// sendControl queues a protocol packet (ping, pong, noop) under the same
// bounds as messages.
func (s *Session) sendControl(p Packet) {
	s.mu.Lock()
	if s.reason != nil {
		s.mu.Unlock()
		return
	}
	if len(s.queue)+1 > s.srv.maxQueueFrames() || s.queued+s.writing+len(p.Data) > s.srv.maxQueueBytes() {
		s.mu.Unlock()
		s.Close(ErrQueueFull)
		return
	}
	s.queue = append(s.queue, p)
	s.queued += len(p.Data)
	s.mu.Unlock()
	s.signal()
}

func (s *Session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// takeLocked removes and returns the queued packets; spare (the previous
// batch, written) becomes the new queue's storage, so a busy session swaps
// two slices instead of allocating. Their bytes count as being written until
// the writer calls wrote.
func (s *Session) takeLocked(spare []Packet) []Packet {
	q := s.queue
	s.queue = spare[:0]
	s.writing += s.queued
	s.queued = 0
	return q
}

// wrote tells that the n bytes of a batch takeLocked returned are written
// (or dropped).
func (s *Session) wrote(n int) {
	s.mu.Lock()
	s.writing = max(0, s.writing-n)
	s.mu.Unlock()
}

// Close ends the session with reason (nil means ErrServerClosed). Packets
// already queued still go out, and then the close: a close frame on a
// WebSocket, a close packet to the next polling GET. A second Close does
// nothing.
func (s *Session) Close(reason error) {
	if reason == nil {
		reason = ErrServerClosed
	}
	s.closeWith(reason, true)
}

func (s *Session) closeWith(reason error, graceful bool) {
	s.mu.Lock()
	if s.reason != nil {
		s.mu.Unlock()
		return
	}
	s.reason = reason
	s.flushOut = graceful && reason != ErrQueueFull
	if !s.flushOut {
		s.queue, s.queued = nil, 0
	}
	if reason == ErrQueueFull && s.ws != nil {
		// A writer stuck on the client's full buffers gives up now rather
		// than at WriteTimeout, holding its batch meanwhile, as a native
		// socket's does.
		_ = s.ws.NetConn().SetWriteDeadline(time.Now())
	}
	// A polling client learns of the close only from its next GET; keep the
	// session findable until then, for at most a heartbeat.
	keep := s.transport == transportPolling && !s.getWait && graceful
	if s.pingTimer != nil {
		s.pingTimer.Stop()
	}
	if s.liveTimer != nil {
		s.liveTimer.Stop()
	}
	s.mu.Unlock()
	close(s.done)
	if keep {
		time.AfterFunc(s.srv.pingInterval()+s.srv.pingTimeout(), func() { s.srv.remove(s) })
	} else {
		s.srv.remove(s)
	}
}

// startHeartbeat arms the timers of the protocol's heartbeat
// (engine.io lib/socket.ts: schedulePing, resetPingTimeout).
func (s *Session) startHeartbeat() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reason != nil {
		return
	}
	if s.proto == Protocol4 {
		s.liveTimer = time.AfterFunc(time.Hour, func() { s.closeWith(ErrPingTimeout, false) })
		s.liveTimer.Stop()
		s.pingTimer = time.AfterFunc(s.srv.pingInterval(), s.ping)
		return
	}
	s.liveTimer = time.AfterFunc(s.srv.pingInterval()+s.srv.pingTimeout(), func() { s.closeWith(ErrPingTimeout, false) })
}

// ping sends the protocol 4 server ping and expects a pong within
// pingTimeout.
func (s *Session) ping() {
	s.mu.Lock()
	if s.reason != nil {
		s.mu.Unlock()
		return
	}
	s.liveTimer.Reset(s.srv.pingTimeout())
	s.mu.Unlock()
	s.sendControl(Packet{Type: PacketPing})
}

// onPacket handles one inbound packet on the reading goroutine.
func (s *Session) onPacket(p Packet) {
	if s.proto == Protocol3 {
		// Protocol 3: the client pings; anything it sends shows it alive.
		s.mu.Lock()
		if s.reason == nil && s.liveTimer != nil {
			s.liveTimer.Reset(s.srv.pingInterval() + s.srv.pingTimeout())
		}
		s.mu.Unlock()
	}
	switch p.Type {
	case PacketMessage:
		if s.handle != nil {
			s.handle(p.Data, p.Binary)
		}
	case PacketPing:
		if s.proto != Protocol3 {
			s.closeWith(ErrHeartbeat, false)
			return
		}
		s.sendControl(Packet{Type: PacketPong, Data: p.Data})
	case PacketPong:
		if s.proto != Protocol4 {
			s.closeWith(ErrHeartbeat, false)
			return
		}
		s.mu.Lock()
		if s.reason == nil && s.pingTimer != nil {
			s.liveTimer.Stop()
			s.pingTimer.Reset(s.srv.pingInterval())
		}
		s.mu.Unlock()
	case PacketClose:
		s.closeWith(ErrClientClosed, false)
	}
	// open, upgrade and noop from a client carry nothing for an open
	// session; engine.io ignores them too.
}

// runWebSocket serves the session on conn until it closes: this goroutine
// reads, a second one (writeLoop) is the connection's only writer. It returns
// once both are done.
func (s *Session) runWebSocket(conn *websocket.Conn) {
	conn.SetReadLimit(s.srv.maxPayload())
	s.mu.Lock()
	s.ws = conn
	s.mu.Unlock()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop(conn)
	}()
	for {
		mt, data, err := conn.ReadMessage()
		if err != nil {
			if err == websocket.ErrReadLimit {
				s.closeWith(ErrPayloadTooLarge, false)
			} else {
				s.closeWith(ErrTransportClosed, false)
			}
			break
		}
		p, err := DecodePacket(s.proto, data, mt == websocket.BinaryMessage)
		if err != nil {
			s.closeWith(err, false)
			break
		}
		s.onPacket(p)
		select {
		case <-s.done:
		default:
			continue
		}
		break
	}
	<-writerDone
}

// writeLoop writes queued packets as frames, one packet a frame, and at the
// close the close frame; then it closes conn, which ends the reader.
func (s *Session) writeLoop(conn *websocket.Conn) {
	defer conn.Close()
	var batch []Packet
	var buf []byte
	write := func(p Packet) error {
		var binary bool
		buf, binary = AppendPacket(buf[:0], s.proto, p, false)
		mt := websocket.TextMessage
		if binary {
			mt = websocket.BinaryMessage
		}
		_ = conn.SetWriteDeadline(time.Now().Add(s.srv.writeTimeout()))
		return conn.WriteMessage(mt, buf)
	}
	for {
		select {
		case <-s.wake:
		case <-s.done:
			s.mu.Lock()
			batch = s.takeLocked(batch)
			flush, gate := s.flushOut, s.gate
			s.mu.Unlock()
			if flush && gateFails(gate, batch) == nil {
				for _, p := range batch {
					if write(p) != nil {
						return
					}
				}
			}
			_ = conn.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
				time.Now().Add(s.srv.writeTimeout()))
			return
		}
		s.mu.Lock()
		n := s.queued
		batch = s.takeLocked(batch)
		gate := s.gate
		s.mu.Unlock()
		if err := gateFails(gate, batch); err != nil {
			clear(batch)
			s.wrote(n)
			s.closeWith(err, false)
			continue
		}
	writing:
		for i, p := range batch {
			select {
			case <-s.done:
				// Closed meanwhile: the rest goes only in a graceful close
				// (a queue overflow is not one), and then at the close.
				s.mu.Lock()
				flush := s.flushOut
				s.mu.Unlock()
				if !flush {
					clear(batch[i:])
					break writing
				}
			default:
			}
			if write(p) != nil {
				s.closeWith(ErrTransportClosed, false)
				return
			}
			batch[i] = Packet{} // let the message go
		}
		s.wrote(n)
		if len(buf) > 64<<10 {
			buf = nil // keep no large buffer per idle socket
		}
	}
}

// writePollResponse answers a polling GET with the given payload.
func writePollResponse(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}
