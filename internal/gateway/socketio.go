// Socket.IO clients at /socket.io/: how the client protocol (protocol.go)
// maps onto Socket.IO, in one place. The packet layer is internal/socketio,
// the transport internal/engineio; this file joins them to the hub.
//
//	native (/ws)                                  Socket.IO (/socket.io/, main namespace "/")
//	{"type":"connected","socket_id":ID}           protocol 5: 0{"sid":ID} (socket.id = ID)
//	                                              protocol 4: 0; socket.id is the Engine.IO sid = ID
//	{"type":"joined","room":R}                    2["membership:joined",R]
//	{"type":"left","room":R}                      2["membership:left",R]
//	{"type":"message","room":R,"event":E,"data":D} 2[E,D]  (2[E] without data; the room is not sent)
//	{"type":"request","id":N,…} / response        Sails virtual request 2N["post",{url,data,…}]
//	                                              answered 3N[{"body":…,"headers":{},"statusCode":S}]
//	close codes                                   the Engine.IO session closes; the client reconnects
//	                                              as a new socket in no room
//
// Engine.IO adds its message type "4" in front of every packet here
// (engineio.Session.Send), so a room message is 42["chat",{…}] on the wire.
//
// Handshake: Authorize runs the origin check, --max-sockets and, for
// protocol 4 (EIO=3) with JWTs configured, the token of the handshake
// request (?token= or Authorization), refusing with HTTP 403 and the
// Engine.IO error body. Protocol 5 (EIO=4) reads auth.token from the
// client's CONNECT packet (the handshake's own token when auth has none); a
// refused token is answered 4{"message":"Not authorized"} and the session
// closes. Every request, the polling ones and CORS preflights included, is
// checked against --allowed-origins (engineio.Server.CheckOrigin), which
// also gives admitted origins engine.io's CORS headers, so a page on
// another origin can poll. A CONNECT to any namespace other than "/" is
// answered with CONNECT_ERROR "Invalid namespace". A protocol-5 client that
// sends no CONNECT within sioConnectTimeout is closed.
//
// The socket is registered in etcd exactly as a native socket is
// (runSocket): added to the hub, its record written on the gateway's lease,
// packets held until then; the CONNECT answer is the first packet. When the
// session ends its keys go through the pending removals (removals.go).
//
// Inbound packets count against --frames-per-second like native frames:
// past the rate a virtual request is answered 429, far past it the session
// closes. A packet Decode refuses (malformed, a binary attachment, larger
// than --max-frame-bytes, nested too deep) closes the session. Events other
// than Sails methods are answered 404 through their ack, or dropped without
// one (see the socketio package doc).
//
// Not supported: namespaces other than "/", binary attachments, rooms
// chosen by the client (rooms are the membership API's), JSONP polling.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/socketrooms/membership/internal/engineio"
	"github.com/socketrooms/membership/internal/socketio"
	"github.com/socketrooms/membership/internal/store"
)

// sioConnectTimeout is how long a protocol-5 client has to send its CONNECT
// after the Engine.IO handshake (socket.io's connectTimeout).
const sioConnectTimeout = 45 * time.Second

// sioPath is where Socket.IO clients connect (their default path).
const sioPath = "/socket.io/"

// Reasons a Socket.IO session is closed by the gateway (Session.Err).
var (
	errSIOUnauthorized = errors.New("socket.io: not authorized")
	errSIONoConnect    = errors.New("socket.io: no CONNECT in time")
	errSIOBinary       = errors.New("socket.io: binary messages are not supported")
	errSIOTooFast      = errors.New("socket.io: too many packets")
	errSIODisconnect   = errors.New("socket.io: the client disconnected")
	errSIORegister     = errors.New("socket.io: cannot register socket")
	errSIOLeaseLost    = errors.New("socket.io: gateway lost its registration; reconnect")
)

// sioSocket is one Socket.IO connection to the main namespace, riding one
// Engine.IO session; it is a hub member like a native client.
type sioSocket struct {
	memberCore
	sid      store.SocketID
	v        socketio.Version
	es       *engineio.Session
	alive    func() bool
	maxHeld  int
	user     string        // set before registration, read-only after
	hs       *http.Request // the handshake request, for protocol-5 credentials
	connect  chan socketio.Packet
	ready    atomic.Bool     // registered: events are handled
	reqCtx   context.Context // canceled when the session ends
	cancel   context.CancelFunc
	requests sync.WaitGroup

	mu      sync.Mutex
	holding bool     // packets wait in held until registered
	held    [][]byte // packets sent while holding
	closed  bool

	rmu       sync.Mutex // inbound state; Engine.IO hands messages on one at a time, this keeps it so
	bucket    *tokenBucket
	over      int
	connected bool // a CONNECT to "/" was received (protocol 5)
	inflight  chan struct{}
}

// send queues one Socket.IO packet (without Engine.IO's "4"): held until the
// socket is registered, refused once it closes, and never written once the
// gateway's lease can no longer be proven alive.
func (s *sioSocket) send(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.holding {
		if len(s.held) >= s.maxHeld { // --send-queue, as for a native socket's held frames
			s.closed = true
			s.es.Close(engineio.ErrQueueFull)
			return false
		}
		s.held = append(s.held, b)
		return true
	}
	if !s.alive() {
		s.closed = true
		s.es.Close(errSIOLeaseLost)
		return false
	}
	// Past --send-queue or --max-socket-queue-bytes the session closes with
	// ErrQueueFull, counted once when it has ended (runSIO).
	return s.es.Send(b) == nil
}

// release sends what was held, in order, and stops holding.
func (s *sioSocket) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holding = false
	held := s.held
	s.held = nil
	if s.closed || len(held) == 0 {
		return
	}
	_ = s.es.Send(held...) // an overflow closes the session, as in send
}

// deliver queues the message's EVENT packet (member).
func (s *sioSocket) deliver(o *outbound) bool { return s.send(o.sioPacket()) }

// notice queues membership:joined or membership:left (member).
func (s *sioSocket) notice(joined bool, room string) {
	if joined {
		s.send(socketio.AppendJoined(nil, socketio.DefaultNamespace, room))
	} else {
		s.send(socketio.AppendLeft(nil, socketio.DefaultNamespace, room))
	}
}

// shutdown closes the Engine.IO session (member). Every gateway-side close
// is a transport close to the client, which reconnects as a new socket.
func (s *sioSocket) shutdown(code int, reason string) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.es.Close(errors.New("gateway closed the socket (" + strconv.Itoa(code) + "): " + reason))
}

// newEngineIO makes the Engine.IO server for /socket.io/.
func (g *Gateway) newEngineIO() *engineio.Server {
	return &engineio.Server{
		NewID:          g.sioNewID,
		Authorize:      g.sioAuthorize,
		CheckOrigin:    g.upgrader.CheckOrigin, // --allowed-origins, as on /ws; also the CORS of polling
		OnSession:      g.sioOnSession,
		PingInterval:   g.cfg.PingInterval,
		MaxPayload:     g.cfg.MaxFrameBytes,
		MaxQueueFrames: g.cfg.SendQueue,
		MaxQueueBytes:  int(g.cfg.MaxSocketQueueBytes),
		WriteTimeout:   g.cfg.WriteTimeout,
	}
}

// sioNewID names the session with a new membership socket id on the current
// session's lease: the id a native socket would get.
func (g *Gateway) sioNewID(*http.Request) (string, error) {
	sess := g.currentSession()
	if sess == nil || !sess.alive() {
		return "", &engineio.HandshakeError{Status: http.StatusServiceUnavailable, Code: engineio.CodeBadRequest, Message: "gateway is not registered in etcd"}
	}
	return store.NewSocketID(g.cfg.ID, sess.leaseForSocket()).String(), nil
}

// sioAuthorize applies the native handshake's checks.
func (g *Gateway) sioAuthorize(r *http.Request) error {
	if !g.upgrader.CheckOrigin(r) {
		return &engineio.HandshakeError{Status: http.StatusForbidden, Code: engineio.CodeForbidden, Message: "origin not allowed"}
	}
	// Sessions still connecting count: a client that opens sessions and
	// never sends CONNECT holds them for sioConnectTimeout each.
	if g.Draining() {
		return &engineio.HandshakeError{Status: http.StatusServiceUnavailable, Code: engineio.CodeBadRequest, Message: "gateway is draining; try another"}
	}
	if g.cfg.MaxSockets > 0 && g.hub.count()+int(g.sioConnecting.Load()) >= g.cfg.MaxSockets {
		return &engineio.HandshakeError{Status: http.StatusServiceUnavailable, Code: engineio.CodeBadRequest, Message: "gateway is full; try another"}
	}
	if g.cfg.Authenticate != nil && r.URL.Query().Get("EIO") == "3" {
		if _, err := g.cfg.Authenticate(r); err != nil {
			g.metrics.authFailures.Inc()
			return &engineio.HandshakeError{Status: http.StatusForbidden, Code: engineio.CodeForbidden, Message: "Not authorized"}
		}
	}
	return nil
}

// sioOnSession starts a Socket.IO socket on a new Engine.IO session.
func (g *Gateway) sioOnSession(es *engineio.Session, r *http.Request) {
	sid, err := store.ParseSocketID(es.ID())
	sess := g.currentSession()
	if err != nil || sess == nil || !sess.holds(sid.Lease) {
		es.Close(errors.New("gateway is re-registering"))
		return
	}
	v, _ := socketio.ForEngineIO(es.Protocol())
	if !g.startHandler() {
		es.Close(engineio.ErrServerClosed)
		return
	}
	reqCtx, cancel := context.WithCancel(context.Background())
	s := &sioSocket{
		memberCore: memberCore{id: es.ID()},
		sid:        sid,
		v:          v,
		es:         es,
		alive:      sess.alive,
		maxHeld:    g.cfg.SendQueue,
		hs:         r,
		connect:    make(chan socketio.Packet, 1),
		reqCtx:     reqCtx,
		cancel:     cancel,
		holding:    true,
		bucket:     newTokenBucket(g.cfg.FramesPerSecond, burstSeconds*g.cfg.FramesPerSecond),
	}
	es.OnMessage(func(data []byte, binary bool) { g.sioMessage(s, data, binary) })
	// As a native socket's writer does (writer.go): nothing queued is written
	// once the lease the socket's memberships live on may have expired.
	es.SetWriteGate(func() error {
		if !sess.alive() {
			return errSIOLeaseLost
		}
		return nil
	})
	g.sioConnecting.Add(1)
	go func() {
		defer g.wg.Done()
		g.runSIO(sess, s)
		cancel()
		s.requests.Wait()
	}()
}

// runSIO connects the socket to "/", registers it, waits for the session to
// end and removes it; it runs on its own goroutine, counted in Gateway.wg.
func (g *Gateway) runSIO(sess *session, s *sioSocket) {
	connecting := true
	defer func() {
		if connecting {
			g.sioConnecting.Add(-1)
		}
		// Every way out closes the session. Counted here, once, whichever
		// send overflowed the queue: an event, a notice, a held packet or
		// Engine.IO's own ping.
		<-s.es.Done()
		if errors.Is(s.es.Err(), engineio.ErrQueueFull) {
			g.metrics.slowClients.WithLabelValues(protocolSocketIO).Inc()
		}
	}()
	if s.v == socketio.V4 {
		if g.cfg.Authenticate != nil {
			user, err := g.cfg.Authenticate(s.hs)
			if err != nil { // checked in sioAuthorize already; a token can expire in between
				s.es.Close(errSIOUnauthorized)
				return
			}
			s.user = user
		}
		s.send(socketio.AppendConnect(nil, s.v, socketio.DefaultNamespace, ""))
	} else {
		timer := time.NewTimer(sioConnectTimeout)
		var p socketio.Packet
		select {
		case p = <-s.connect:
			timer.Stop()
		case <-timer.C:
			s.es.Close(errSIONoConnect)
			return
		case <-s.es.Done():
			timer.Stop()
			return
		}
		if g.cfg.Authenticate != nil {
			user, err := g.sioConnectUser(s.hs, p)
			if err != nil {
				g.metrics.authFailures.Inc()
				// Sent past the hold: the socket is not registered and never will be.
				_ = s.es.Send(socketio.AppendConnectError(nil, s.v, socketio.DefaultNamespace, socketio.MessageUnauthorized, nil))
				s.mu.Lock()
				s.closed = true
				s.mu.Unlock()
				s.es.Close(errSIOUnauthorized)
				return
			}
			s.user = user
		}
		s.send(socketio.AppendConnect(nil, s.v, socketio.DefaultNamespace, s.id))
	}
	s.hs = nil
	added := g.hub.add(s)
	g.sioConnecting.Add(-1)
	connecting = false
	if !added {
		s.shutdown(closeServiceRestart, "gateway is re-registering")
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, g.cfg.EtcdTimeout)
	_, err := g.store.AddSocket(ctx, s.sid, store.SocketRecord{Gateway: g.cfg.ID, ConnectedAt: time.Now().UTC(), User: s.user})
	cancel()
	if err != nil {
		g.log.Warn("register socket failed", "socket", s.id, "protocol", "socket.io", "err", err)
		g.hub.remove(s)
		g.removeSocket(sess, s.sid) // the put may have committed after all
		s.shutdown(closeInternal, errSIORegister.Error())
		return
	}
	s.ready.Store(true)
	s.release()
	<-s.es.Done()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	g.hub.remove(s)
	g.removeSocket(sess, s.sid)
}

// sioConnectUser authenticates a protocol-5 CONNECT: auth.token when given,
// else the handshake request's own token (Authorization header or ?token=).
// The token goes through Config.Authenticate as a Bearer header, so one
// authenticator serves both paths.
func (g *Gateway) sioConnectUser(hs *http.Request, p socketio.Packet) (string, error) {
	auth, err := socketio.ConnectAuth(p)
	if err != nil {
		return "", err
	}
	r := hs
	if auth.Token != "" {
		r = hs.Clone(hs.Context())
		r.Header.Set("Authorization", "Bearer "+auth.Token)
	}
	return g.cfg.Authenticate(r)
}

// sioMessage handles one inbound Engine.IO message: one Socket.IO packet.
func (g *Gateway) sioMessage(s *sioSocket, data []byte, binary bool) {
	if binary {
		s.es.Close(errSIOBinary)
		return
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	limited := !s.bucket.take(time.Now())
	if limited {
		if s.over++; float64(s.over) > maxOverRate*g.cfg.FramesPerSecond {
			s.es.Close(errSIOTooFast)
			return
		}
	} else {
		s.over = 0
	}
	p, err := socketio.Limits{MaxBytes: int(g.cfg.MaxFrameBytes), MaxDepth: socketio.DefaultLimits.MaxDepth}.Decode(s.v, string(data))
	if err != nil {
		// The protocol: an invalid packet closes the connection.
		g.log.Debug("closing Socket.IO session on a bad packet", "socket", s.id, "err", err)
		s.es.Close(err)
		return
	}
	switch p.Type {
	case socketio.Connect:
		switch {
		case p.Namespace != socketio.DefaultNamespace:
			_ = s.es.Send(socketio.AppendConnectError(nil, s.v, p.Namespace, socketio.MessageInvalidNamespace, nil))
		case s.v == socketio.V5 && !s.connected:
			s.connected = true
			s.connect <- p
		}
	case socketio.Disconnect:
		if p.Namespace == socketio.DefaultNamespace {
			s.es.Close(errSIODisconnect)
		}
	case socketio.Event:
		if p.Namespace != socketio.DefaultNamespace || !s.ready.Load() {
			return // not connected to that namespace (yet)
		}
		g.sioEvent(s, p, limited)
	}
	// ACKs from the client answer nothing the gateway asked; CONNECT_ERROR
	// is the server's to send.
}

// sioEvent answers one client EVENT: a Sails virtual request is forwarded to
// the upstream as a native request frame is (request.go).
func (g *Gateway) sioEvent(s *sioSocket, p socketio.Packet, limited bool) {
	req, ok, err := socketio.ParseVirtualRequest(p)
	if !ok {
		if p.HasID {
			name, _, _ := p.Event()
			s.send(socketio.AppendUnhandledEvent(nil, socketio.DefaultNamespace, p.ID, name))
		}
		return
	}
	answer := func(status int, body json.RawMessage) {
		if req.HasAck {
			s.send(socketio.AppendSailsResponse(nil, socketio.DefaultNamespace, req.AckID, status, nil, body))
		}
	}
	if limited {
		answer(http.StatusTooManyRequests, errorBody("too many frames; slow down"))
		return
	}
	if err != nil {
		answer(http.StatusBadRequest, errorBody(err.Error()))
		return
	}
	path, body, err := req.Target()
	if err != nil {
		answer(http.StatusBadRequest, errorBody(err.Error()))
		return
	}
	target, err := g.upstreamURL(path)
	if err != nil {
		answer(http.StatusBadRequest, errorBody(err.Error()))
		return
	}
	if target == nil {
		answer(http.StatusNotImplemented, errorBody("socket requests are not configured on this gateway"))
		return
	}
	if int64(len(body)) > g.cfg.MaxRequestBody {
		answer(http.StatusRequestEntityTooLarge, errorBody("request body too large"))
		return
	}
	if s.inflight == nil {
		s.inflight = make(chan struct{}, g.cfg.MaxInflight)
	}
	select {
	case s.inflight <- struct{}{}:
	default:
		answer(http.StatusTooManyRequests, errorBody("too many requests in flight"))
		return
	}
	s.requests.Add(1)
	go func() {
		defer func() { <-s.inflight; s.requests.Done() }()
		// reqCtx ends with the session, as a native request ends with its socket.
		status, rbody := g.forward(s.reqCtx, s.id, s.user, req.Method, target, body)
		answer(status, rbody)
	}()
}
