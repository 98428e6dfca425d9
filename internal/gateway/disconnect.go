package gateway

import (
	"encoding/json"

	"github.com/socketrooms/membership/internal/socketio"
	"github.com/socketrooms/membership/internal/store"
)

// Disconnects ordered through the API (store/disconnect.go): the socket's
// record is already gone from etcd and a notice with the close code and
// reason waits under gwm/{gateway}/!disconnect/. The watch (or a re-listing
// after a compaction) hands the notice here, once per notice event.

// applyDisconnect closes the notice's socket with its code and reason and
// makes the socket's removal pending, which deletes what is left of its
// keys and the notice itself. A socket the hub no longer holds (closed
// meanwhile) is made pending all the same, so no notice outlives its
// socket until the lease ends.
func (g *Gateway) applyDisconnect(s *session, d store.DisconnectRequest) {
	if m := g.hub.get(d.Socket.String()); m != nil {
		if sio, ok := m.(*sioSocket); ok {
			sio.serverDisconnect(d.Notice.Code, d.Notice.Reason)
		} else {
			m.shutdown(d.Notice.Code, d.Notice.Reason)
			g.forgetResumable(m) // a detached socket has no connection to close
		}
	}
	g.removeSocket(s, d.Socket)
}

// get returns the member with id, or nil.
func (h *hub) get(id string) member {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.sockets[id]
}

// sioDisconnectEvent is the event a Socket.IO client gets before a
// Disconnect's DISCONNECT packet, with {"code","reason"}: Socket.IO's own
// DISCONNECT carries neither.
const sioDisconnectEvent = "membership:disconnected"

// serverDisconnect tells a Socket.IO client it is disconnected on purpose:
// a membership:disconnected event with the code and reason, then a
// DISCONNECT packet, after which socket.io-client does not reconnect ("io
// server disconnect"); then the session closes once they are written.
func (s *sioSocket) serverDisconnect(code int, reason string) {
	data, _ := json.Marshal(struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{code, reason})
	s.send(socketio.AppendEvent(nil, socketio.DefaultNamespace, sioDisconnectEvent, data))
	s.send(socketio.AppendPacket(nil, s.v, socketio.Packet{Type: socketio.Disconnect, Namespace: socketio.DefaultNamespace}))
	s.shutdown(code, reason)
}
