package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/socketrooms/membership/internal/store"
)

// client is one WebSocket. Its reader goroutine (owned by Gateway.wg) reads
// and, when the socket goes, cleans up. After the upgrade only the writer
// goroutine writes the connection. Writes go through a bounded queue
// that producers never block on: a socket that falls a full queue behind is
// disconnected. A writer goroutine exists only while there is something to
// write, so an idle socket costs one goroutine, and the queue holds no memory
// while empty.
type client struct {
	memberCore // id, and rooms guarded by hub.mu
	sid        store.SocketID
	user       string          // the authenticated user ("" without authentication)
	conn       *websocket.Conn // for reading; the library writes nothing after the upgrade (netConn)
	nc         net.Conn        // the connection itself, which only the writer writes
	rd         *netConn        // the library's view of it: its read buffer and the poller's state
	// alive reports whether the session the socket lives on can still prove
	// its lease; the writer checks it before every batch of frames.
	alive        func() bool
	maxQueue     int
	maxBytes     int64 // bound on queuedBytes; 0: none
	writeTimeout time.Duration
	onSlow       func() // counts a disconnect for a full queue

	mu    sync.Mutex
	queue []outFrame  // frames waiting for the writer
	qbuf  *frameQueue // the pooled array queue was taken from (writer.go); nil with queue
	// queuedBytes counts the bytes of the frames in queue and of those the
	// writer is writing, as written (seq included): what the socket holds.
	queuedBytes int64
	ctrl        uint8 // control frames waiting: ctrlPing, ctrlPong
	writing     bool  // a writer goroutine is running
	held        bool  // frames wait until the socket is registered (release)
	closing     bool  // shutdown was called; the writer sends the close frame

	midFrame bool // a failed write ended inside a frame: no close frame may follow; the writer's own

	done        chan struct{} // closed by shutdown
	connClosed  chan struct{} // closed once the close frame went and the conn is closed
	closeCode   int
	closeReason string

	maxInflight int
	inflight    chan struct{}  // a slot per socket request in flight; made by the reader on first use
	requests    sync.WaitGroup // socket request goroutines

	// The reader's, kept across its goroutines (an idle socket has none:
	// readpoll_linux.go).
	readSess  *session           // the session it removes the socket under
	reads     *readPoller        // where the socket parks; nil before it reads
	reqCtx    context.Context    // socket requests'; made on the first one
	cancelReq context.CancelFunc // cancels reqCtx
	bucket    *tokenBucket       // client frames' rate; made on the first frame
	over      int                // frames over the rate in a row

	// rs is the socket's recoverable state (resume.go), shared by each
	// connection the socket has had; nil when sockets are not resumable.
	rs *resumable

	// Handoffs between gateways (handoff.go); hub.mu guards these.
	handingOff bool             // being handed off to another gateway
	movedIn    bool             // handed off to this gateway
	quiet      bool             // joined and left frames are not sent (until the handoff finishes)
	since      map[string]int64 // room → the revision it joined at, for a socket moved in
	blastSince int64            // for a socket moved in: the revision from which blasts are this gateway's
}

const (
	ctrlPing = 1 << iota
	ctrlPong
)

func newClient(sid store.SocketID, conn *websocket.Conn, maxQueue, inflight int, writeTimeout time.Duration, alive func() bool) *client {
	return &client{
		memberCore:   memberCore{id: sid.String()},
		sid:          sid,
		conn:         conn,
		alive:        alive,
		maxQueue:     maxQueue,
		writeTimeout: writeTimeout,
		held:         true,
		done:         make(chan struct{}),
		connClosed:   make(chan struct{}),
		maxInflight:  inflight,
	}
}

// outFrame is a frame waiting for the writer: b as it is, or, with a seq,
// a message frame shared by every socket of its room, into which the writer
// splices the socket's own "seq" (resume.go) as it writes it, so that
// numbering a message costs a socket no copy of it.
type outFrame struct {
	b   []byte
	seq uint64 // 0: none (seqs start at 1)
}

// size is the frame's length as written.
func (f outFrame) size() int {
	if f.seq == 0 {
		return len(f.b)
	}
	return len(f.b) + seqFieldLen(f.seq)
}

// deliver queues the message's native frame (member).
// A resumable socket's goes through its log, numbered (resume.go).
func (c *client) deliver(o *outbound) bool {
	if c.since != nil && o.rev != 0 {
		if rev, ok := c.since[o.room]; ok && o.rev < rev {
			// The old gateway of a socket handed off here gives it the
			// messages below the revision its room moved at.
			return true
		}
	}
	if o.room == "" && c.movedIn && o.rev != 0 && o.rev < c.blastSince {
		return true // the old gateway's to give, as a room's message above
	}
	if c.rs != nil {
		blastRev := int64(0)
		if o.room == "" {
			blastRev = o.rev
		}
		queued, busy := c.rs.g.deliverResumable(c.rs, o.nativeFrame(), blastRev, o, true)
		if busy {
			o.later = append(o.later, laterDelivery{c, o.nativeFrame(), blastRev})
			return true // counted now; a drop at the retry is counted then
		}
		return queued
	}
	queued, start := c.queueFrame(outFrame{b: o.nativeFrame()})
	if start {
		o.starts = append(o.starts, c)
	}
	return queued
}

// notice queues a joined or left frame (member).
func (c *client) notice(joined bool, room string) {
	if c.quiet {
		return // the resumed connected frame will carry the rooms
	}
	typ := frameLeft
	if joined {
		typ = frameJoined
	}
	c.enqueue(controlFrame(typ, room))
}

// serveWS upgrades a request to a socket, registers it in etcd on the
// gateway's current lease, and hands it to a reader goroutine. The HTTP
// handler returns at once, so net/http's per-connection buffers are freed.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	var user string
	if g.cfg.Authenticate != nil {
		var err error
		if user, err = g.cfg.Authenticate(r); err != nil {
			g.metrics.authFailures.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "unauthorized: "+err.Error(), http.StatusUnauthorized)
			return
		}
	}
	sess := g.currentSession()
	if sess == nil || !sess.alive() {
		http.Error(w, "gateway is not registered in etcd", http.StatusServiceUnavailable)
		return
	}
	if g.Draining() {
		// Resumes too: the socket is resumed on another gateway.
		http.Error(w, "gateway is draining; try another", http.StatusServiceUnavailable)
		return
	}
	if g.cfg.MaxSockets > 0 && g.hub.count() >= g.cfg.MaxSockets {
		http.Error(w, "gateway is full; try another", http.StatusServiceUnavailable)
		return
	}
	var resume *resumeRequest
	if g.resumeOn() {
		var err error
		if resume, err = parseResumeQuery(r.URL.Query()); err != nil {
			http.Error(w, "bad resume parameters: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	if !g.startHandler() {
		http.Error(w, "gateway is shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := g.upgrader.Upgrade(&hijacker{ResponseWriter: w}, r, nil)
	if err != nil {
		g.wg.Done()
		return // the upgrader already answered
	}
	go g.runSocket(sess, conn, user, resume)
}

// runSocket registers the socket, or resumes the one resume names, and hands
// it to readSocket; the Gateway.wg count it was started with passes on with
// it.
func (g *Gateway) runSocket(sess *session, conn *websocket.Conn, user string, resume *resumeRequest) {
	sid := store.NewSocketID(g.cfg.ID, sess.leaseForSocket())
	nc := conn.NetConn().(*netConn)
	c := newClient(sid, conn, g.cfg.SendQueue, g.cfg.MaxInflight, g.cfg.WriteTimeout, sess.alive)
	c.nc, c.rd = nc.Conn, nc
	c.maxBytes = g.cfg.MaxSocketQueueBytes
	c.user = user
	c.onSlow = g.metrics.slowClients.WithLabelValues(protocolNative).Inc
	resumeErr := ""
	if resume != nil {
		var r *resumable
		var outcome string
		if t, err := parseToken(resume.token); err == nil && t.issuer != g.cfg.ID && !g.handedInHere(t.socket) {
			r, outcome = g.handOffIn(sess, resume, user, c, t)
			if r == nil {
				c.sid, c.id, c.rs, c.movedIn, c.quiet, c.since, c.blastSince = sid, sid.String(), nil, false, false, nil, 0
			}
		} else {
			r, outcome = g.resume(resume, user, c)
		}
		g.metrics.resumes.WithLabelValues(outcomeLabel(outcome)).Inc()
		if r != nil {
			c.readSess, c.reads = r.sess, g.reads // before release: the writer reads reads once it may run
			c.release()
			nc.handOver(c)
			g.startReading(c)
			return
		}
		if outcome == resumeRetry {
			c.shutdown(closeTryAgainLater, "socket busy resuming elsewhere; try again")
			<-c.connClosed
			g.wg.Done()
			return
		}
		resumeErr = outcome
	}
	rec := store.SocketRecord{Gateway: g.cfg.ID, ConnectedAt: time.Now().UTC(), User: user}
	token := ""
	if g.resumeOn() {
		c.rs = g.newResumable(sess, sid, rec)
		c.rs.conn, c.rs.member = c, c
		token = g.tokenLocked(c.rs) // c.rs is no one else's yet
	}
	// Queued (and held) before the socket exists in etcd, so no joined frame
	// can precede it, and none is written before the socket can be joined.
	c.enqueue(connectedFrame(c.id, user, token, resume != nil, resumeErr))
	if !g.hub.add(c) {
		g.endResumable(c)
		c.shutdown(closeServiceRestart, "gateway is re-registering")
		<-c.connClosed
		g.wg.Done()
		return
	}
	ctx, cancel := context.WithTimeout(sess.ctx, g.cfg.EtcdTimeout)
	_, err := g.store.AddSocket(ctx, sid, rec)
	cancel()
	if err != nil {
		g.endResumable(c)
		g.log.Warn("register socket failed", "socket", c.id, "err", err)
		g.hub.remove(c)
		// The put may have committed after all.
		g.removeSocket(sess, sid)
		c.shutdown(closeInternal, "cannot register socket")
		<-c.connClosed
		g.wg.Done()
		return
	}
	c.readSess, c.reads = sess, g.reads // before release: the writer reads reads once it may run
	c.release()
	nc.handOver(c)
	g.startReading(c)
}

// startReading sets up the reading of a socket handed over (its session,
// c.readSess, set before its release), and parks it until its client sends something: an idle socket has no
// reader goroutine (readpoll_linux.go). Registering went deep into the etcd
// client and grew this goroutine's stack; readers start afresh, with small
// ones.
func (g *Gateway) startReading(c *client) {
	c.conn.SetReadLimit(g.cfg.MaxFrameBytes)
	_ = g.extendRead(c)
	c.conn.SetPongHandler(func(string) error { return g.extendRead(c) })
	// The writer goroutine is the only one to write the connection, so the
	// reader never writes: pings are answered, and closes acknowledged, by
	// the writer; the close frame the library sends on a read-limit (1009) or
	// protocol error (1002) is handed to the writer by netConn.
	c.conn.SetPingHandler(func(string) error {
		c.control(ctrlPong) // one pong answers any number of pings
		return g.extendRead(c)
	})
	c.conn.SetCloseHandler(func(int, string) error { return nil })
	if !g.reads.park(c) {
		go g.readSocket(c)
	}
}

// extendRead gives the socket's client two ping intervals from now to send
// its next frame (any frame: a pong, a ping, a request), past which its
// read fails and the socket is dropped.
func (g *Gateway) extendRead(c *client) error {
	return c.conn.SetReadDeadline(time.Now().Add(2 * g.cfg.PingInterval))
}

// readSocket reads until nothing is left to read, then parks the socket
// (the poller runs readSocket again when there is), or until the socket
// goes: it then removes it everywhere. One runs at a time for a socket.
func (g *Gateway) readSocket(c *client) {
	parked, err := g.readLoop(c)
	if parked {
		return
	}
	defer g.wg.Done()
	sess, sid := c.readSess, c.sid
	// The connection failed: no close frame came from the client, and the
	// gateway chose no close but for a failed write. A resumable socket
	// then detaches (resume.go) instead of ending.
	// (The library reports a connection that ended without a close frame as
	// a CloseError of 1006, which no peer can send.)
	var ce *websocket.CloseError
	clientClosed := errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure
	code := c.closingCode()
	failed := err != nil && !clientClosed && (code == 0 || code == closeAbnormal)
	drained := g.drainedClose(c)
	if drained {
		// Closed by a drain (drain.go): kept resumable as a failed
		// connection is, to be resumed on another gateway.
		failed = true
	}
	if failed && c.rs != nil {
		c.shutdown(closeAbnormal, "connection failed") // nothing to say on a dead connection
	} else {
		c.shutdown(closeNormal, "")
	}
	if c.cancelReq != nil {
		c.cancelReq()
	}
	c.requests.Wait()
	<-c.connClosed
	c.rd.detachReadBuf()
	if g.release(c, failed) {
		if drained {
			g.metrics.drainDetached.Inc()
		}
		return
	}
	g.hub.remove(c)
	g.removeSocket(sess, sid)
}

// closingCode is the code of the close under way, 0 when none is.
func (c *client) closingCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		return 0
	}
	return c.closeCode
}

// readLoop reads client frames until none is buffered and the socket
// parks (parked), or the connection fails or closes: it returns the read
// error that ended it (a *websocket.CloseError when the client sent a close
// frame), or nil when the gateway closed the socket.
func (g *Gateway) readLoop(c *client) (parked bool, err error) {
	// Started (by the poller or startReading) when there is something to
	// read, or a failure to see.
	for {
		c.rd.attachReadBuf()
		if !g.takeControl(c) {
			typ, data, err := c.conn.ReadMessage()
			if err != nil {
				return false, err
			}
			_ = g.extendRead(c)
			if code, reason := g.takeFrame(c, typ, data); code != 0 {
				c.shutdown(code, reason)
				return false, nil
			}
		}
		if c.rd.br.Buffered() == 0 && g.reads.park(c) {
			return true, nil
		}
	}
}

// takeControl takes a ping or pong frame from the head of the socket's
// read buffer, waiting for the rest of it, and reports whether it did. The
// library would take it too, but then wait inside ReadMessage for the next
// data frame: a socket that answers the gateway's pings would never park.
// Anything else, or a frame the library would refuse (unmasked, reserved
// bits, a payload past 125 bytes), or a failed read, is left to the library.
func (g *Gateway) takeControl(c *client) bool {
	const fin = 0x80
	br := &c.rd.br
	h, err := br.Peek(2)
	if err != nil {
		return false
	}
	op := int(h[0] &^ fin)
	if h[0]&fin == 0 || (op != websocket.PingMessage && op != websocket.PongMessage) || h[1]&0x80 == 0 || h[1]&0x7f > 125 {
		return false
	}
	n := 2 + 4 + int(h[1]&0x7f) // header, mask, payload: at most 131 bytes, in the buffer
	if _, err := br.Peek(n); err != nil {
		return false
	}
	_, _ = br.Discard(n)
	if op == websocket.PingMessage {
		c.control(ctrlPong) // as the ping handler (startReading)
	}
	_ = g.extendRead(c)
	return true
}

// takeFrame acts on one client frame within the socket's rate: over it, a
// request is answered 429 and nothing else is done, and a client that keeps
// going long past it is closed. A non-zero code means the socket must be
// closed with it.
func (g *Gateway) takeFrame(c *client, typ int, data []byte) (code int, reason string) {
	if c.bucket == nil {
		c.bucket = newTokenBucket(g.cfg.FramesPerSecond, burstSeconds*g.cfg.FramesPerSecond)
	}
	if !c.bucket.take(time.Now()) {
		if c.over++; float64(c.over) > maxOverRate*g.cfg.FramesPerSecond {
			return closePolicyViolation, "too many frames"
		}
		var f requestFrame
		if json.Unmarshal(data, &f) == nil && len(f.ID) > 0 {
			c.respond(f.ID, http.StatusTooManyRequests, errorBody("too many frames; slow down"))
		}
		return 0, ""
	}
	c.over = 0
	if c.reqCtx == nil {
		c.reqCtx, c.cancelReq = context.WithCancel(context.Background())
	}
	return g.handleFrame(c.reqCtx, c, typ, data)
}

// handleFrame acts on one client frame; a non-zero code means the socket
// must be closed with it. It never writes to the connection itself.
func (g *Gateway) handleFrame(ctx context.Context, c *client, typ int, data []byte) (code int, reason string) {
	if typ != websocket.TextMessage {
		return closeUnsupportedData, "text frames only"
	}
	var f struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return closeBadData, "frames must be JSON objects"
	}
	switch f.Type {
	case frameRequest:
		g.handleRequest(ctx, c, data)
	default:
		g.log.Debug("ignoring client frame", "socket", c.id, "type", f.Type)
	}
	return 0, ""
}

// hijacker hands the WebSocket library a netConn in place of the hijacked
// connection.
type hijacker struct {
	http.ResponseWriter
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("gateway: the HTTP server cannot hand over connections")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	nc := &netConn{Conn: conn}
	if brw.Reader.Buffered() > 0 {
		return nc, brw, nil // the library refuses it: data before the handshake ended
	}
	// The library reads through the reader given here (Upgrader's
	// ReadBufferSize is 0), whose buffer the socket lends back to a pool
	// while idle (readBufs).
	nc.attachReadBuf()
	return nc, bufio.NewReadWriter(&nc.br, brw.Writer), nil
}

// netConn is a socket's connection as the WebSocket library sees it. The
// library writes the handshake through it; once the socket is handed over
// (handOver), the socket's writer goroutine is the only one to write the
// connection, and what the library still writes by itself, the close frame
// its reader sends on a read-limit or protocol error, goes to that writer
// instead, as the socket's close code. Written here, beside the writer, it
// could land between data frames still being written or before more of them,
// and its write deadline would cut the writer's writes short.
type netConn struct {
	net.Conn
	c *client // set before the reader starts, by the goroutine that starts it

	// br is the WebSocket library's read buffer. Its array (rbuf's) is
	// taken from readBufs only while the socket reads: an idle socket
	// parked (readpoll_linux.go) holds none.
	br   bufio.Reader
	rbuf *bufio.Reader // the pooled reader whose array br uses; nil: none
	// deadline is the read deadline (readClock; 0: none), for the poller to
	// wake a parked socket whose client went silent.
	deadline atomic.Int64
	// The poller's (readpoll_linux.go), guarded by readPoller.mu.
	key    uint64 // names the socket in epoll events; 0 until parked once
	parked bool
}

// readBufSize is a reading socket's read buffer: a client frame of up to
// about a kilobyte (a request) comes in one read.
const readBufSize = 1024

// readBufs holds the read buffers of sockets that stopped reading, for the
// next to start. It is bounded (not a sync.Pool, which keeps what it is
// given until two collections pass): a ping round wakes every socket at
// once, and the buffers of that peak must not stay.
var readBufs = make(chan *bufio.Reader, 256)

// attachReadBuf gives br a buffer, unless it has one.
func (n *netConn) attachReadBuf() {
	if n.rbuf != nil {
		return
	}
	var r *bufio.Reader
	select {
	case r = <-readBufs:
		r.Reset(n)
	default:
		r = bufio.NewReaderSize(n, readBufSize)
	}
	n.br, n.rbuf = *r, r
}

// detachReadBuf lets go of br's buffer; br holds nothing (Buffered() == 0),
// and is not read again before attachReadBuf.
func (n *netConn) detachReadBuf() {
	r := n.rbuf
	if r == nil {
		return
	}
	n.br, n.rbuf = bufio.Reader{}, nil
	r.Reset(nil)
	select {
	case readBufs <- r:
	default:
	}
}

// handOver routes the library's writes to c's writer from now on.
func (n *netConn) handOver(c *client) { n.c = c }

func (n *netConn) Write(p []byte) (int, error) {
	if n.c == nil {
		return n.Conn.Write(p)
	}
	// The library writes one whole control frame per call, unmasked as a
	// server's, so its payload length fits the second byte.
	if len(p) >= 2 && int(p[0]&0x0f) == websocket.CloseMessage {
		payload := p[2:min(len(p), 2+int(p[1]&0x7f))]
		code, reason := websocket.CloseNoStatusReceived, ""
		if len(payload) >= 2 {
			code, reason = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
		}
		n.c.shutdown(code, reason)
	}
	return len(p), nil
}

// SetWriteDeadline is the writer's alone once the socket is handed over.
func (n *netConn) SetWriteDeadline(t time.Time) error {
	if n.c == nil {
		return n.Conn.SetWriteDeadline(t)
	}
	return nil
}

func (n *netConn) SetDeadline(t time.Time) error {
	if n.c == nil {
		return n.Conn.SetDeadline(t)
	}
	return n.SetReadDeadline(t)
}

// readEpoch is the origin of readClock.
var readEpoch = time.Now()

// readClock is t on the monotonic clock, in ns since readEpoch: what the
// connection's own deadline goes by. A wall-clock reading would let a clock
// step wake every parked socket at once (stepped forward) or keep a silent
// one past its deadline (stepped back).
func readClock(t time.Time) int64 { return int64(t.Sub(readEpoch)) }

// SetReadDeadline notes the deadline for the poller too.
func (n *netConn) SetReadDeadline(t time.Time) error {
	d := int64(0)
	if !t.IsZero() {
		d = max(readClock(t), 1)
	}
	n.deadline.Store(d)
	return n.Conn.SetReadDeadline(t)
}
