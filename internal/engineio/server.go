package engineio

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Defaults, engine.io's own (lib/server.ts ServerOptions).
const (
	DefaultPingInterval   = 25 * time.Second
	DefaultPingTimeout    = 20 * time.Second
	DefaultUpgradeTimeout = 10 * time.Second
	DefaultMaxPayload     = 1_000_000 // bytes, engine.io's maxHttpBufferSize
	DefaultMaxQueueFrames = 1024
	DefaultMaxQueueBytes  = 1 << 20
	DefaultWriteTimeout   = 10 * time.Second
)

// Server serves Engine.IO 3 and 4 at the path it is mounted on (for
// Socket.IO, /socket.io/): handshakes, long-polling requests, WebSocket
// connections and the upgrade from one to the other. Set the fields before
// the first request; NewID is required.
type Server struct {
	// NewID names a new session from its handshake request. The id is the
	// session id clients send back (?sid=) and, for Socket.IO protocol 4,
	// the socket id, so it must be unique among open sessions and
	// unguessable. An error refuses the handshake: a *HandshakeError with
	// its status and code, any other error with 500 and code 3.
	NewID func(r *http.Request) (string, error)
	// Authorize, if set, admits or refuses a handshake (origin checks, a
	// token in the query). An error refuses it: a *HandshakeError with its
	// status, any other error with 403 and code 4 ("Forbidden"). Requests
	// after the handshake are admitted by their session id, and the
	// WebSocket upgrade checks no origin of its own: do it here.
	Authorize func(r *http.Request) error
	// OnSession is called once per session on the handshake's goroutine,
	// after the session is registered and before any of its packets is
	// read; set Session.OnMessage here. Packets sent here follow the open
	// packet. r is the handshake request.
	OnSession func(s *Session, r *http.Request)
	// CheckOrigin, if set, admits browser requests by their Origin header,
	// on every request of a session (handshake, polling GET and POST,
	// WebSocket upgrade) and on CORS preflights. An admitted origin gets
	// the CORS headers engine.io's cors option (origin allowed, credentials:
	// true) sends: Access-Control-Allow-Origin echoing it,
	// Access-Control-Allow-Credentials: true and Vary: Origin, so a page on
	// another origin can poll; an OPTIONS preflight is answered 204 with the
	// methods GET, POST, OPTIONS and the headers it asked for. A refused one
	// gets 403 and code 4, without CORS headers. Requests without an Origin
	// (not from a browser) are not checked. Nil: no CORS headers, and
	// origins are Authorize's to check.
	CheckOrigin func(r *http.Request) bool

	PingInterval   time.Duration // between heartbeats; DefaultPingInterval if 0
	PingTimeout    time.Duration // to answer one; DefaultPingTimeout if 0
	UpgradeTimeout time.Duration // probe to upgrade packet; DefaultUpgradeTimeout if 0
	// MaxPayload bounds an inbound WebSocket message and a polling POST body
	// in bytes; past it the session closes with ErrPayloadTooLarge.
	// Announced to protocol 4 clients in the open packet.
	MaxPayload     int64
	MaxQueueFrames int           // outbound packets waiting per session
	MaxQueueBytes  int           // outbound bytes waiting per session
	WriteTimeout   time.Duration // per WebSocket write

	mu       sync.Mutex
	closed   bool // Close was called: no new sessions or WebSocket goroutines
	sessions map[string]*Session
	wg       sync.WaitGroup // WebSocket goroutines
	upgrader websocket.Upgrader
	once     sync.Once
}

func (s *Server) pingInterval() time.Duration { return orDefault(s.PingInterval, DefaultPingInterval) }
func (s *Server) pingTimeout() time.Duration  { return orDefault(s.PingTimeout, DefaultPingTimeout) }
func (s *Server) upgradeTimeout() time.Duration {
	return orDefault(s.UpgradeTimeout, DefaultUpgradeTimeout)
}
func (s *Server) writeTimeout() time.Duration { return orDefault(s.WriteTimeout, DefaultWriteTimeout) }
func (s *Server) maxPayload() int64           { return orDefault(s.MaxPayload, DefaultMaxPayload) }
func (s *Server) maxQueueFrames() int         { return orDefault(s.MaxQueueFrames, DefaultMaxQueueFrames) }
func (s *Server) maxQueueBytes() int          { return orDefault(s.MaxQueueBytes, DefaultMaxQueueBytes) }

func orDefault[T comparable](v, d T) T {
	var zero T
	if v == zero {
		return d
	}
	return v
}

func (s *Server) init() {
	s.once.Do(func() {
		s.sessions = make(map[string]*Session)
		s.upgrader = websocket.Upgrader{
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
			// An idle session holds no write buffer.
			WriteBufferPool: &sync.Pool{},
			// Authorize is the origin check; see its comment.
			CheckOrigin: func(*http.Request) bool { return true },
		}
	})
}

// Session returns the open session with the id, or nil.
func (s *Server) Session(id string) *Session {
	if sess := s.lookup(id); sess != nil && sess.Err() == nil {
		return sess
	}
	return nil
}

// lookup finds a session by id, closed ones included: a closed polling
// session stays until its client has been sent the close packet.
func (s *Server) lookup(id string) *Session {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

// Len is the number of sessions registered, including closed ones a polling
// client has not yet been told of.
func (s *Server) Len() int {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close refuses new handshakes and upgrades (503), closes every session
// with ErrServerClosed and waits for their WebSocket goroutines. Polling
// requests held open are answered with the close packet.
func (s *Server) Close() {
	s.init()
	s.mu.Lock()
	s.closed = true
	all := make([]*Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		if sess != nil { // nil: reserved by a handshake, which closes it
			all = append(all, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.Close(ErrServerClosed)
	}
	s.wg.Wait()
}

// track counts a WebSocket goroutine for Close to wait for; false once
// Close was called.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

var errServerClosing = &HandshakeError{Status: http.StatusServiceUnavailable, Code: CodeBadRequest, Message: "Server closing"}

func (s *Server) unreserve(id string) {
	s.mu.Lock()
	if s.sessions[id] == nil {
		delete(s.sessions, id)
	}
	s.mu.Unlock()
}

func (s *Server) remove(sess *Session) {
	s.mu.Lock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
	}
	s.mu.Unlock()
}

// ServeHTTP routes one request: a handshake without sid, or a polling GET or
// POST or a WebSocket upgrade of the session named by sid
// (engine.io lib/server.ts verify and handleRequest).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	// CORS comes first, as engine.io runs its cors middleware before it
	// verifies the request: a browser can then read the refusals too.
	if origin := r.Header.Get("Origin"); origin != "" && s.CheckOrigin != nil {
		if !s.CheckOrigin(r) {
			writeError(w, &HandshakeError{Status: http.StatusForbidden, Code: CodeForbidden, Message: "origin not allowed"})
			return
		}
		if r.Method == http.MethodOptions {
			writePreflight(w, r, origin)
			return
		}
		if !websocket.IsWebSocketUpgrade(r) {
			setCORS(w.Header(), origin)
		}
	}
	q := r.URL.Query()
	var proto int
	switch q.Get("EIO") {
	case "3":
		proto = Protocol3
	case "4":
		proto = Protocol4
	default:
		writeError(w, &HandshakeError{Code: CodeUnsupportedProtocolVersion})
		return
	}
	transport := q.Get("transport")
	if transport != transportPolling && transport != transportWebSocket {
		writeError(w, &HandshakeError{Code: CodeUnknownTransport})
		return
	}
	if q.Has("j") {
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "JSONP polling is not supported"})
		return
	}
	isWS := websocket.IsWebSocketUpgrade(r)
	sid := q.Get("sid")
	if sid == "" {
		if r.Method != http.MethodGet {
			writeError(w, &HandshakeError{Code: CodeBadHandshakeMethod})
			return
		}
		if transport == transportWebSocket && !isWS {
			writeError(w, &HandshakeError{Code: CodeBadRequest})
			return
		}
		s.handshake(w, r, proto, transport)
		return
	}
	sess := s.lookup(sid)
	if sess == nil || sess.proto != proto {
		writeError(w, &HandshakeError{Code: CodeUnknownSID})
		return
	}
	if transport == transportWebSocket {
		if !isWS {
			writeError(w, &HandshakeError{Code: CodeBadRequest})
			return
		}
		s.upgrade(sess, w, r)
		return
	}
	switch r.Method {
	case http.MethodGet:
		sess.poll(w, r)
	case http.MethodPost:
		sess.receive(w, r)
	default:
		writeError(w, &HandshakeError{Code: CodeBadRequest, Message: "Bad request method"})
	}
}

// setCORS adds the headers that let a page on origin read the response,
// credentials included (the cors package with origin reflected and
// credentials: true, as engine.io uses it).
func setCORS(h http.Header, origin string) {
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
}

// writePreflight answers a CORS preflight (OPTIONS) from an admitted origin:
// 204, the methods a session uses and the request headers the browser asked
// for, reflected.
func writePreflight(w http.ResponseWriter, r *http.Request, origin string) {
	h := w.Header()
	setCORS(h, origin)
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", req)
		h.Add("Vary", "Access-Control-Request-Headers")
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
}

// handshake opens a session and sends its open packet: as the first
// WebSocket frame, or as the answer to the polling GET.
func (s *Server) handshake(w http.ResponseWriter, r *http.Request, proto int, transport string) {
	if s.Authorize != nil {
		if err := s.Authorize(r); err != nil {
			writeError(w, asHandshakeError(err, http.StatusForbidden, CodeForbidden))
			return
		}
	}
	id, err := s.NewID(r)
	if err != nil {
		writeError(w, asHandshakeError(err, http.StatusInternalServerError, CodeBadRequest))
		return
	}
	sess := newSession(s, id, proto, transport)
	s.mu.Lock()
	_, taken := s.sessions[id]
	closed := s.closed
	if !taken && id != "" && !closed {
		s.sessions[id] = nil // reserved; published once OnSession returns
	}
	s.mu.Unlock()
	if closed {
		writeError(w, errServerClosing)
		return
	}
	if taken || id == "" {
		writeError(w, &HandshakeError{Status: http.StatusInternalServerError, Code: CodeBadRequest, Message: "Session ID unusable"})
		return
	}
	var conn *websocket.Conn
	if transport == transportWebSocket {
		if !s.track() {
			s.unreserve(id)
			writeError(w, errServerClosing)
			return
		}
		defer s.wg.Done()
		conn, err = s.upgrader.Upgrade(w, r, nil)
		if err != nil { // the upgrader has answered
			s.unreserve(id)
			return
		}
	}
	sess.queue = append(sess.queue, s.openPacket(sess))
	sess.signal()
	if s.OnSession != nil {
		s.OnSession(sess, r)
	}
	sess.startHeartbeat()
	// Publishing under s.mu orders OnSession's writes (the message
	// function) and the timers before any request that finds the session by
	// its sid.
	s.mu.Lock()
	if sess.Err() == nil && !s.closed {
		s.sessions[id] = sess
	} else {
		delete(s.sessions, id)
	}
	closed = s.closed
	s.mu.Unlock()
	if closed { // Server.Close ran meanwhile and could not see this session
		sess.Close(ErrServerClosed)
	}
	if conn != nil {
		sess.runWebSocket(conn)
		return
	}
	sess.poll(w, r)
}

// openPacket is the handshake's open packet (engine.io-protocol "Handshake").
func (s *Server) openPacket(sess *Session) Packet {
	upgrades := []string{}
	if sess.transport == transportPolling {
		upgrades = append(upgrades, transportWebSocket)
	}
	open := struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int64    `json:"maxPayload,omitempty"`
	}{sess.id, upgrades, s.pingInterval().Milliseconds(), s.pingTimeout().Milliseconds(), 0}
	if sess.proto == Protocol4 {
		open.MaxPayload = s.maxPayload()
	}
	data, _ := json.Marshal(open)
	return Packet{Type: PacketOpen, Data: data}
}
