package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/socketrooms/membership/internal/store"
)

// client is one WebSocket. Its handler goroutine reads; one writer goroutine
// owns all writes and drains a bounded queue, so producers never block: a
// socket that falls a full queue behind is disconnected.
type client struct {
	id   string
	sid  store.SocketID
	conn *websocket.Conn
	// alive reports whether the session the socket lives on can still prove
	// its lease; the writer checks it before every frame.
	alive func() bool
	send  chan []byte
	done  chan struct{} // closed by shutdown

	once        sync.Once
	closeCode   int
	closeReason string

	rooms map[string]struct{} // guarded by hub.mu

	inflight chan struct{}  // a slot per socket request in flight
	requests sync.WaitGroup // socket request goroutines
}

func newClient(sid store.SocketID, conn *websocket.Conn, queue, inflight int, alive func() bool) *client {
	return &client{
		id:       sid.String(),
		sid:      sid,
		conn:     conn,
		alive:    alive,
		send:     make(chan []byte, queue),
		done:     make(chan struct{}),
		rooms:    map[string]struct{}{},
		inflight: make(chan struct{}, inflight),
	}
}

// enqueue queues a frame without blocking. A full queue disconnects the client.
func (c *client) enqueue(b []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.send <- b:
		return true
	default:
		c.shutdown(closeTryAgainLater, "send queue full")
		return false
	}
}

// shutdown asks the writer to send a close frame and drop the connection. The
// first call's code wins.
func (c *client) shutdown(code int, reason string) {
	c.once.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.done)
	})
}

// writeLoop is the only writer of the connection.
func (c *client) writeLoop(writeTimeout, pingEvery time.Duration) {
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	defer c.conn.Close()
	for {
		select {
		case <-c.done:
			c.writeClose(writeTimeout)
			return
		case b := <-c.send:
			// Nothing is written once the client is told to go, or once the
			// lease its memberships live on may have expired: a frozen gateway
			// that resumes must not deliver a single frame it queued before.
			select {
			case <-c.done:
				c.writeClose(writeTimeout)
				return
			default:
			}
			if !c.alive() {
				c.shutdown(closeServiceRestart, "gateway lost its registration; reconnect")
				c.writeClose(writeTimeout)
				return
			}
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				c.shutdown(websocket.CloseAbnormalClosure, "write failed")
				return
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
				c.shutdown(websocket.CloseAbnormalClosure, "ping failed")
				return
			}
		}
	}
}

func (c *client) writeClose(timeout time.Duration) {
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
	_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(timeout))
}

// serveWS upgrades a request to a socket, registers it in etcd on the
// gateway's current lease, and reads from it until it goes. On the way out the
// socket and its memberships are removed from etcd at once.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	sess := g.currentSession()
	if sess == nil || !sess.alive() || !g.startHandler() {
		http.Error(w, "gateway is not registered in etcd", http.StatusServiceUnavailable)
		return
	}
	defer g.wg.Done()
	conn, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered
	}

	sid := store.NewSocketID(g.cfg.ID, sess.lease)
	c := newClient(sid, conn, g.cfg.SendQueue, g.cfg.MaxInflight, sess.alive)
	log := g.log.With("socket", c.id)
	// Queued before the socket exists in etcd, so no joined frame can precede it.
	c.enqueue(encode(frame{Type: "connected", SocketID: c.id}))
	if !g.hub.add(c) {
		c.shutdown(closeServiceRestart, "gateway is re-registering")
		c.writeLoop(g.cfg.WriteTimeout, g.cfg.PingInterval)
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, g.cfg.EtcdTimeout)
	_, err = g.store.AddSocket(ctx, sid, store.SocketRecord{Gateway: g.cfg.ID, ConnectedAt: time.Now().UTC()})
	cancel()
	if err != nil {
		log.Warn("register socket failed", "err", err)
		g.hub.remove(c)
		// The put may have committed after all.
		g.removeSocket(sess, sid)
		c.shutdown(closeInternal, "cannot register socket")
		c.writeLoop(g.cfg.WriteTimeout, g.cfg.PingInterval)
		return
	}
	log.Debug("socket connected")

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop(g.cfg.WriteTimeout, g.cfg.PingInterval)
	}()
	reqCtx, cancelRequests := context.WithCancel(context.Background())
	g.readLoop(reqCtx, c, log)
	c.shutdown(websocket.CloseNormalClosure, "")
	cancelRequests()
	c.requests.Wait()
	<-writerDone
	g.hub.remove(c)

	g.removeSocket(sess, sid)
	log.Debug("socket disconnected")
}

// readLoop reads client frames until the connection fails or closes.
func (g *Gateway) readLoop(ctx context.Context, c *client, log *slog.Logger) {
	c.conn.SetReadLimit(g.cfg.MaxFrameBytes)
	pongWait := 2 * g.cfg.PingInterval
	_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(pongWait))
	})
	for {
		typ, data, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
		if typ != websocket.TextMessage {
			c.shutdown(websocket.CloseUnsupportedData, "text frames only")
			return
		}
		var f struct {
			Type string          `json:"type"`
			ID   json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(data, &f); err != nil {
			c.shutdown(closeBadData, "frames must be JSON objects")
			return
		}
		switch f.Type {
		case "request":
			g.handleRequest(ctx, c, data)
		default:
			log.Debug("ignoring client frame", "type", f.Type)
		}
	}
}
