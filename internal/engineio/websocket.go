package engineio

import (
	"bytes"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// upgrade moves a polling session to the WebSocket this request opens
// (engine.io lib/socket.ts maybeUpgrade): the client sends ping "probe" and
// gets pong "probe"; held GETs are then answered with noops so the client
// can pause polling; the client's upgrade packet switches the session over,
// and this goroutine becomes its reader. Anything else, or no upgrade
// packet within UpgradeTimeout, closes this WebSocket and leaves the session
// on polling.
func (s *Server) upgrade(sess *Session, w http.ResponseWriter, r *http.Request) {
	sess.mu.Lock()
	ok := sess.transport == transportPolling && !sess.upgrading && sess.reason == nil
	if ok {
		sess.upgrading = true
	}
	sess.mu.Unlock()
	if !ok {
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "upgrade not possible"})
		return
	}
	if !s.track() {
		sess.endProbe(nil)
		writeError(w, errServerClosing)
		return
	}
	defer s.wg.Done()
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		sess.endProbe(nil)
		return
	}
	conn.SetReadLimit(s.maxPayload())
	_ = conn.SetReadDeadline(time.Now().Add(s.upgradeTimeout()))
	// A session that closes during the probe ends the probe at once.
	probing := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-sess.done:
			conn.Close()
		case <-probing:
		}
	}()
	upgraded := s.probe(sess, conn)
	close(probing)
	<-watcherDone
	if !upgraded {
		sess.endProbe(conn)
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	sess.mu.Lock()
	if sess.reason != nil {
		sess.mu.Unlock()
		sess.endProbe(conn)
		return
	}
	sess.transport = transportWebSocket
	sess.upgrading = false
	close(sess.upgraded)
	sess.mu.Unlock()
	sess.signal()
	sess.runWebSocket(conn)
}

// probe runs the probe exchange on conn, the only writer to it until the
// session switches over; true once the upgrade packet came.
func (s *Server) probe(sess *Session, conn *websocket.Conn) bool {
	for {
		mt, data, err := conn.ReadMessage()
		if err != nil || mt != websocket.TextMessage {
			return false
		}
		p, err := DecodePacket(sess.proto, data, false)
		if err != nil {
			return false
		}
		switch {
		case p.Type == PacketPing && bytes.Equal(p.Data, []byte("probe")):
			_ = conn.SetWriteDeadline(time.Now().Add(s.writeTimeout()))
			if conn.WriteMessage(websocket.TextMessage, []byte("3probe")) != nil {
				return false
			}
			sess.mu.Lock()
			select {
			case <-sess.probed:
			default:
				close(sess.probed)
			}
			sess.mu.Unlock()
		case p.Type == PacketUpgrade:
			return true
		default:
			return false
		}
	}
}

// endProbe abandons an upgrade: the session stays on polling.
func (sess *Session) endProbe(conn *websocket.Conn) {
	if conn != nil {
		conn.Close()
	}
	sess.mu.Lock()
	sess.upgrading = false
	select {
	case <-sess.probed:
		sess.probed = make(chan struct{})
	default:
	}
	sess.mu.Unlock()
}
