package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/socketrooms/membership/internal/store"
)

// Connection state recovery for native sockets (protocol.go states the
// client's side; docs/ARCHITECTURE.md the design).
//
// With Config.ResumeWindow > 0 every native socket has a resumable: its
// resume token's secret, its message counter (seq) and a log of the message
// frames it was given, oldest first. The log keeps frames already written
// too, bounded by Config.ResumeBufferBytes, because a connection that drops
// may have lost what was written to it last; a resume replays what follows
// the client's last_seq.
//
// A socket whose connection drops without a close frame from the client (a
// read error, the ping timeout, a failed write) is detached rather than
// removed: it stays in the hub, so the watch keeps applying its joins and
// leaves to its rooms and Deliver keeps logging its messages, and its etcd
// keys stay, the record marked with detached_since. It ends, its keys going
// as a closed socket's do (removals.go), when:
//   - the window passes (a later resume gets EXPIRED);
//   - the messages logged since it detached pass the byte bound (a later
//     resume gets TOO_FAR_BEHIND);
//   - the API disconnects it (disconnect.go; a later resume gets UNKNOWN);
//   - its session ends, its lease taking the keys (GATEWAY_LOST).
//
// Locks: hub.mu, then resumable.mu, then client.mu. Deliver holds hub.mu
// for reading and assigns a message's seq and queues it under resumable.mu,
// so seq order is queue order; a resume holds hub.mu for writing while it
// swaps the connection, so no delivery is half done meanwhile.

// Resume outcomes: the resume_error a client is given, and the outcome label
// of gateway_resumes_total ("resumed" for a success).
const (
	resumeOK           = "resumed"
	resumeExpired      = "EXPIRED"
	resumeUnknown      = "UNKNOWN"
	resumeTooFarBehind = "TOO_FAR_BEHIND"
	resumeGatewayLost  = "GATEWAY_LOST"
	// resumeRetry is never sent: the socket could not be resumed now but
	// stays resumable with the same token (a handoff of it is under way, or
	// one failed and was undone), so the connection is closed with 1013
	// before any connected frame and the client tries again, as after any
	// failed connection attempt. Giving it a new socket instead would lose
	// the one it has.
	resumeRetry = "RETRY"
)

// Resume defaults (Config.ResumeBufferBytes): 1 MiB of message frames per
// socket, each counted with its 32-byte log entry (loggedSize). The log
// holds the frames Deliver encoded once per room, shared by every socket of
// that room, so a socket of a busy room holds its entries (32 bytes a
// message) and the room's frames are held once; 1 MiB is the most one
// socket can hold even when no frame is shared. It is a quarter of the send
// queue's default bound (4 MiB), which a socket may already hold; it keeps a
// two-minute outage of a chat room (a few thousand messages of a few hundred
// bytes); and a detached socket of a room busier than that ends
// TOO_FAR_BEHIND soon rather than holding a backlog nobody may claim.
const defaultResumeBufferBytes = 1 << 20

// minTombstone is how long at least a socket that ended while resumable is
// remembered, for a late resume to be told why (EXPIRED, TOO_FAR_BEHIND,
// GATEWAY_LOST) rather than UNKNOWN: a window's length, and no less than
// this. It costs a map entry per ended socket.
const minTombstone = time.Minute

// tokenSecretBytes is the resume token's secret: 256 random bits.
const tokenSecretBytes = 32

// tokenVersion prefixes every token, so its shape can change later.
const tokenVersion = "r1"

// loggedSize is what a logged frame counts against the bound: its bytes
// and the entry that holds it (a seq and a slice header), so that the bound
// caps a socket's own memory even where every frame is shared.
func loggedSize(frame []byte) int64 { return int64(len(frame)) + 32 }

// logged is one message frame of a socket: its seq and the frame without
// it, shared with the room's other sockets (the writer puts the seq in:
// appendFrames).
type logged struct {
	seq   uint64
	frame []byte
}

// msgLog is a socket's logged frames, oldest first, in a ring: a log kept
// at its bound logs a message and trims the oldest without moving or
// allocating anything, where a slice trimmed from the front would be copied
// to a new array every few hundred messages, for every socket. It grows by
// doubling and never shrinks; its bound in bytes (loggedSize) bounds its
// entries.
type msgLog struct {
	ring []logged // its length is 0 or a power of two
	head int      // the oldest entry's index in ring
	n    int      // entries
}

func (l *msgLog) len() int { return l.n }

// at is the i-th oldest entry, i < l.len().
func (l *msgLog) at(i int) *logged { return &l.ring[(l.head+i)&(len(l.ring)-1)] }

// push logs e as the newest entry.
func (l *msgLog) push(e logged) {
	if l.n == len(l.ring) {
		ring := make([]logged, max(4, 2*len(l.ring)))
		for i := range l.n {
			ring[i] = *l.at(i)
		}
		l.ring, l.head = ring, 0
	}
	l.n++
	*l.at(l.n - 1) = e
}

// shift removes and returns the oldest entry (l.len() > 0), letting go of
// its frame.
func (l *msgLog) shift() logged {
	p := l.at(0)
	e := *p
	*p = logged{}
	l.head = (l.head + 1) & (len(l.ring) - 1)
	l.n--
	return e
}

// resumable is a native socket's recoverable state. mu guards all of it.
type resumable struct {
	g      *Gateway
	sid    store.SocketID
	record store.SocketRecord // as registered; DetachedSince follows detach and resume
	sess   *session

	mu       sync.Mutex
	secret   []byte  // the current token's secret; replaced on every resume
	conn     *client // the connection attached; nil while detached
	member   *client // the hub's member for the socket (the first connection, or the last resumed one)
	seq      uint64  // the last seq given
	log      msgLog
	logBytes int64
	// detachSeq is the last seq given before the socket detached: frames
	// after it were never written, and are what the byte bound is checked
	// against while detached.
	detachSeq uint64
	since     time.Time   // when it detached
	timer     *time.Timer // the window, while detached
	detaches  int         // how many times it detached: names the timer's window
	ended     string      // why it ended; "" while resumable
	syncing   bool        // a goroutine writes the record's detached_since
	dirty     bool        // the record must be written again
	// out is set once a handoff of the socket to another gateway began
	// (handoff.go); it stays once the handoff finished.
	out *handoffOut
	// in is set while a handoff of the socket to this gateway is under way.
	in *handoffIn
	// inToken is the token (another gateway's) the socket was handed off
	// here with, since its client may have given up before the resumed
	// frame carrying the new token reached it (handoff.go): good here as
	// its own token is while the socket is detached and not being handed
	// off again, until inUntil or a resume or a handoff away spends it.
	inToken string
	inUntil time.Time
}

// inTokenGrace is how long after its handoff a socket takes the token it
// was handed off with: a client that gave up waiting tries again within
// membership.js's longest backoff (30 s by default), and a token is a
// secret that may have passed through logs (a query parameter), so it is
// good for little longer than that.
const inTokenGrace = time.Minute

// inTokenGoodLocked reports, with r.mu held, whether r's handed-in token is
// good now.
func (r *resumable) inTokenGoodLocked() bool {
	return r.inToken != "" && r.conn == nil && r.out == nil && r.in == nil && time.Now().Before(r.inUntil)
}

// resumes is the gateway's register of resumable sockets, by socket id, and
// of recently ended ones, so that a late resume learns why (EXPIRED, …)
// rather than UNKNOWN.
type resumes struct {
	incarnation string // random per process: names the process in tokens
	mu          sync.Mutex
	live        map[string]*resumable
	ended       map[string]tombstone
	swept       time.Time // when ended was last cleared of old entries
	detached    atomic.Int64
	bytes       atomic.Int64 // logged bytes of every socket
}

type tombstone struct {
	outcome string
	until   time.Time
}

func newResumes() *resumes {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &resumes{incarnation: hex.EncodeToString(b[:]), live: map[string]*resumable{}, ended: map[string]tombstone{}}
}

// resumeOn reports whether native sockets are resumable.
func (g *Gateway) resumeOn() bool { return g.cfg.ResumeWindow > 0 }

// newResumable makes the state of a new native socket and registers it.
func (g *Gateway) newResumable(sess *session, sid store.SocketID, rec store.SocketRecord) *resumable {
	r := &resumable{g: g, sid: sid, record: rec, sess: sess, secret: newSecret()}
	g.resumes.mu.Lock()
	g.resumes.live[sid.String()] = r
	g.resumes.mu.Unlock()
	return r
}

func newSecret() []byte {
	b := make([]byte, tokenSecretBytes)
	_, _ = rand.Read(b)
	return b
}

// tokenLocked is the socket's current resume token:
// "r1.{issuing gateway id}.{process incarnation}.{secret}.{socket id}".
// The issuer and incarnation say which gateway process can verify it (the
// one holding the secret); a gateway id has no dot and the secret is
// base64url, so the socket id is everything after the fourth dot.
func (g *Gateway) tokenLocked(r *resumable) string {
	return tokenVersion + "." + g.cfg.ID + "." + g.resumes.incarnation + "." +
		base64.RawURLEncoding.EncodeToString(r.secret) + "." + r.sid.String()
}

// parsedToken is a resume token's parts.
type parsedToken struct {
	issuer, incarnation, socket string
	secret                      []byte
}

var errBadToken = errors.New("malformed resume token")

func parseToken(tok string) (parsedToken, error) {
	parts := strings.SplitN(tok, ".", 5)
	if len(parts) != 5 || parts[0] != tokenVersion {
		return parsedToken{}, errBadToken
	}
	secret, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil || len(secret) != tokenSecretBytes {
		return parsedToken{}, errBadToken
	}
	return parsedToken{issuer: parts[1], incarnation: parts[2], secret: secret, socket: parts[4]}, nil
}

// resumeRequest is what a client asked for with ?resume_token=…&last_seq=N.
type resumeRequest struct {
	token   string
	lastSeq uint64
}

// parseResumeQuery reads the resume parameters of a /ws request: none, or
// both; last_seq is a decimal seq, 0 when no message was received.
func parseResumeQuery(q map[string][]string) (*resumeRequest, error) {
	tok, seq := first(q["resume_token"]), first(q["last_seq"])
	if tok == "" && seq == "" {
		return nil, nil
	}
	if tok == "" {
		return nil, errors.New("last_seq without resume_token")
	}
	if seq == "" {
		seq = "0"
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return nil, errors.New("last_seq: want a non-negative decimal integer")
	}
	return &resumeRequest{token: tok, lastSeq: n}, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// messageHead is how every frame messageFrame makes begins; the seq goes
// right after it.
const messageHead = `{"type":"message",`

// isMessageFrame reports whether b is a message frame as messageFrame makes
// them: the writer splices the seq in after messageHead, so a frame another
// gateway hands over (handoff.go) must be one.
func isMessageFrame(b []byte) bool {
	return bytes.HasPrefix(b, []byte(messageHead)) && json.Valid(b)
}

// appendSeqHead appends the head of a numbered message frame,
// `{"type":"message","seq":N,`; the rest of the frame messageFrame made
// follows it (appendFrames). The frame is shared by the sockets of a room,
// each with its own seq, so the seq is put in as each socket's writer
// writes it rather than into a copy per socket.
func appendSeqHead(b []byte, seq uint64) []byte {
	b = append(b, messageHead...)
	b = append(b, `"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, ',')
}

// seqFieldLen is the length of `"seq":N,` for seq N.
func seqFieldLen(seq uint64) int {
	n := len(`"seq":,`) + 1
	for ; seq >= 10; seq /= 10 {
		n++
	}
	return n
}

// deliver gives the message the socket's next seq, logs it and queues it to
// the attached connection, if any (client.deliver, under hub.mu read-locked).
// A detached socket whose frames logged since it detached pass the bound
// ends TOO_FAR_BEHIND.
//
// blastRev is a blast's revision (0 for a room's message): a handoff
// decides by it which gateway gives the socket a blast (handoff.go). o, when
// not nil, collects the change to the gateway's logged-bytes count for the
// whole fan-out (outbound.flushLogged).
//
// With try, it does nothing and reports busy when another Deliver holds the
// socket's state: hub.deliver comes back to the socket once it has been
// through the rest (outbound.later). Waiting instead parked the goroutine
// and woke it right behind the other Deliver, at the next socket too, so
// that concurrent broadcasts to a room went at the pace of one (a lock
// convoy); they now pass each other.
func (g *Gateway) deliverResumable(r *resumable, frame []byte, blastRev int64, o *outbound, try bool) (queued, busy bool) {
	// The connection's writer, when it must be started, starts once r.mu
	// is let go (deferred before its Unlock, so run after it): making a
	// goroutine under r.mu made a concurrent Deliver at the same socket
	// wait for it, and park, behind every writer the fan-out had made
	// runnable. A fan-out (o) starts it only once it has been to every
	// socket (outbound.starts).
	var start *client
	defer func() {
		switch {
		case start == nil:
		case o != nil:
			o.starts = append(o.starts, start)
		default:
			go start.writeLoop()
		}
	}()
	if !try {
		r.mu.Lock()
	} else if !r.mu.TryLock() {
		return false, true
	}
	defer r.mu.Unlock()
	queued, start = g.deliverResumableLocked(r, frame, blastRev, o)
	return queued, false
}

// deliverResumableLocked is deliverResumable with r.mu held. While a
// handoff to this gateway is under way the frame is held, to be numbered
// after the old gateway's frames; while one away from it is, nothing is
// trimmed nor ended for the bound, for the new gateway asks for the frames
// after the client's last seq (the handoff is bounded in time instead).
// start is the connection whose writer the caller must start once it has
// let r.mu go (nil: none).
func (g *Gateway) deliverResumableLocked(r *resumable, frame []byte, blastRev int64, o *outbound) (queued bool, start *client) {
	if r.ended != "" {
		return false, nil
	}
	if r.in != nil && r.in.holding {
		r.in.pending = append(r.in.pending, held{frame: frame, blastRev: blastRev})
		return true, nil
	}
	r.seq++
	if r.out != nil && blastRev != 0 {
		r.out.blastRevs[r.seq] = blastRev
	}
	before := r.logBytes
	r.log.push(logged{seq: r.seq, frame: frame})
	r.logBytes += loggedSize(frame)
	limit := g.cfg.ResumeBufferBytes
	for r.out == nil && r.logBytes > limit && r.log.len() > 1 && (r.conn != nil || r.log.at(0).seq <= r.detachSeq) {
		r.logBytes -= loggedSize(r.log.shift().frame)
	}
	// The gateway's sum changes by the net change, once per message when o
	// collects it (outbound.flushLogged): none for a log at its bound that
	// logged a frame of the size it trimmed, and the shared counter is not
	// touched per socket per message while logs grow.
	if d := r.logBytes - before; d != 0 {
		if o != nil {
			o.addLogged(&g.resumes.bytes, d)
		} else {
			g.resumes.bytes.Add(d)
		}
	}
	if r.conn == nil {
		if r.logBytes > limit && r.out == nil {
			// Frames never written pass the bound: ended, removed off the
			// caller's (read-locked) goroutine.
			g.endLocked(r, resumeTooFarBehind)
			go g.dropDetached(r)
			return false, nil
		}
		return true, nil
	}
	queued, st := r.conn.queueFrame(outFrame{b: frame, seq: r.seq})
	if st {
		start = r.conn
	}
	return queued, start
}

// endLocked ends r with outcome: its token is forgotten, later resumes are
// told outcome (for a window, at least minTombstone; UNKNOWN needs no
// entry), its log is freed.
func (g *Gateway) endLocked(r *resumable, outcome string) {
	if r.ended != "" {
		return
	}
	r.ended = outcome
	if r.timer != nil {
		r.timer.Stop()
	}
	if r.conn == nil {
		g.resumes.detached.Add(-1)
	}
	g.resumes.bytes.Add(-r.logBytes)
	r.log, r.logBytes = msgLog{}, 0
	g.resumes.mu.Lock()
	if g.resumes.live[r.sid.String()] == r {
		delete(g.resumes.live, r.sid.String())
	}
	now := time.Now()
	if outcome != resumeUnknown {
		g.resumes.ended[r.sid.String()] = tombstone{outcome: outcome, until: now.Add(max(g.cfg.ResumeWindow, minTombstone))}
	}
	if now.Sub(g.resumes.swept) >= minTombstone {
		// At most once a minTombstone: a pass costs one step per entry.
		g.resumes.swept = now
		for id, t := range g.resumes.ended {
			if now.After(t.until) {
				delete(g.resumes.ended, id)
			}
		}
	}
	g.resumes.mu.Unlock()
}

// dropDetached removes an ended detached socket from the hub and its keys
// from etcd, as a closed socket's.
func (g *Gateway) dropDetached(r *resumable) {
	r.mu.Lock()
	m := r.member
	r.mu.Unlock()
	g.hub.remove(m)
	g.removeSocket(r.sess, r.sid)
}

// release decides, once c's connection is closed, what becomes of its
// socket: true when it lives on (detached, or already resumed on another
// connection), false when it ends and the caller removes it as today.
// failed is whether the connection failed (readSocket: no close frame from
// the client, no close the gateway chose but a failed write).
func (g *Gateway) release(c *client, failed bool) bool {
	r := c.rs
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out != nil {
		// Being handed off, or handed off, to another gateway: its keys
		// are (or will be) that gateway's, and an undone handoff keeps it
		// here, detached.
		return true
	}
	if r.ended != "" {
		return false
	}
	if r.conn != c {
		return true // a resume took the socket over
	}
	if !failed || r.sess.ctx.Err() != nil {
		g.endLocked(r, resumeUnknown)
		return false
	}
	r.conn = nil
	r.detachSeq = r.seq
	r.since = time.Now().UTC()
	g.resumes.detached.Add(1)
	r.detaches++
	n := r.detaches
	r.timer = time.AfterFunc(g.cfg.ResumeWindow, func() { g.expire(r, n) })
	g.syncRecordLocked(r)
	return true
}

// expire ends a socket still detached when the window of its detach number
// n passes. (A timer stopped by a resume may already be running: n tells it
// from the timer of a later detach.)
func (g *Gateway) expire(r *resumable, n int) {
	r.mu.Lock()
	if r.ended != "" || r.conn != nil || r.detaches != n {
		r.mu.Unlock()
		return
	}
	g.endLocked(r, resumeExpired)
	r.mu.Unlock()
	g.dropDetached(r)
}

// forgetResumable ends the socket of member m when it is detached (the API
// disconnected it; disconnect.go removes its keys), removing it from the
// hub; an attached one ends when its connection closes.
func (g *Gateway) forgetResumable(m member) {
	c, ok := m.(*client)
	if !ok || c.rs == nil {
		return
	}
	r := c.rs
	r.mu.Lock()
	if r.ended != "" || r.conn != nil {
		r.mu.Unlock()
		return
	}
	g.endLocked(r, resumeUnknown)
	r.mu.Unlock()
	g.hub.remove(m)
}

// endResumables ends every resumable socket of the ended session s: its
// lease took their keys (GATEWAY_LOST).
func (g *Gateway) endResumables(s *session) {
	g.resumes.mu.Lock()
	var all []*resumable
	for _, r := range g.resumes.live {
		if r.sess == s {
			all = append(all, r)
		}
	}
	g.resumes.mu.Unlock()
	for _, r := range all {
		r.mu.Lock()
		g.endLocked(r, resumeGatewayLost)
		r.mu.Unlock()
	}
}

// handedInHere reports whether socket was handed off to this gateway and
// its handed-in token is good here now (resumable.inToken).
func (g *Gateway) handedInHere(socket string) bool {
	g.resumes.mu.Lock()
	r := g.resumes.live[socket]
	g.resumes.mu.Unlock()
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inTokenGoodLocked()
}

// resume resolves a resume request presented with c, a new connection not
// yet registered anywhere: on success ("resumed") c becomes the socket's
// connection, its token spent, and c's first frames (held until the caller
// releases c) are the resumed connected frame and every logged message after
// lastSeq, then whatever comes next. c takes the hub member's place, with
// its rooms, so joins and leaves applied while detached are current. A
// connection still attached (the gateway had not yet seen it fail) is taken
// over and closed. Otherwise it returns the resume_error and c is untouched.
// A token of another gateway is good here only as a socket's handed-in
// token (resumable.inToken).
func (g *Gateway) resume(req *resumeRequest, user string, c *client) (*resumable, string) {
	t, err := parseToken(req.token)
	if err != nil {
		return nil, resumeUnknown
	}
	handedIn := t.issuer != g.cfg.ID
	if handedIn && !g.handedInHere(t.socket) {
		// Only the issuing gateway can verify a token: runSocket asks it
		// (handOffIn).
		return nil, resumeUnknown
	}
	if !handedIn && t.incarnation != g.resumes.incarnation {
		// Issued by an earlier process with this gateway id: its lease,
		// and the socket's keys with it, are gone.
		return nil, resumeGatewayLost
	}
	g.resumes.mu.Lock()
	r := g.resumes.live[t.socket]
	tomb, hasTomb := g.resumes.ended[t.socket]
	g.resumes.mu.Unlock()
	if r == nil {
		if hasTomb && time.Now().Before(tomb.until) {
			return nil, tomb.outcome
		}
		return nil, resumeUnknown
	}
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out != nil && !r.out.finished && !tokenMismatch(t.secret, r.out.oldSecret) && r.record.User == user {
		// An earlier attempt with this token is handing the socket off to
		// another gateway; if it fails, the token is good here again.
		return nil, resumeRetry
	}
	matches := subtle.ConstantTimeCompare(t.secret, r.secret) == 1
	if handedIn {
		matches = r.inTokenGoodLocked() && subtle.ConstantTimeCompare([]byte(req.token), []byte(r.inToken)) == 1
	}
	if !matches || r.record.User != user {
		// A guessed or spent token, or one presented by another user: the
		// same answer for each, so none tells which.
		return nil, resumeUnknown
	}
	if r.ended != "" {
		return nil, r.ended
	}
	if r.sess.ctx.Err() != nil {
		g.endLocked(r, resumeGatewayLost)
		return nil, resumeGatewayLost
	}
	if req.lastSeq > r.seq {
		return nil, resumeUnknown // the socket was never sent that message
	}
	if req.lastSeq < r.seq && (r.log.len() == 0 || r.log.at(0).seq > req.lastSeq+1) {
		// Messages after last_seq are no longer logged.
		g.endLocked(r, resumeTooFarBehind)
		if r.conn != nil {
			r.conn.shutdown(closeNormal, "socket resumed on another connection")
		} else {
			go g.dropDetached(r)
		}
		return nil, resumeTooFarBehind
	}
	old := r.member
	if r.conn == nil {
		g.resumes.detached.Add(-1)
		r.timer.Stop()
	} else {
		r.conn.shutdown(closeNormal, "socket resumed on another connection")
	}
	r.secret, r.inToken = newSecret(), "" // the presented token is spent, and the one it was handed in with
	c.sid, c.id, c.alive, c.rs = r.sid, r.sid.String(), r.sess.alive, r
	r.conn, r.member = c, c
	rooms := g.hub.replaceLocked(old, c)
	c.enqueue(resumedFrame(c.id, r.record.User, rooms, g.tokenLocked(r)))
	for i := range r.log.len() {
		l := r.log.at(i)
		if l.seq > req.lastSeq {
			c.enqueueSeq(l.frame, l.seq)
		}
	}
	g.syncRecordLocked(r)
	return r, resumeOK
}

// replaceLocked puts c in the place of old (the same socket id), with old's
// rooms, and returns those rooms, sorted.
func (h *hub) replaceLocked(old, c *client) []string {
	rooms := old.rooms
	old.rooms = nil
	c.rooms = rooms
	c.movedIn, c.since, c.blastSince = old.movedIn, old.since, old.blastSince // a socket handed off here keeps its revisions
	if h.sockets[c.id] == member(old) {
		h.sockets[c.id] = c
	}
	out := make([]string, 0, len(rooms))
	for room := range rooms {
		if m := h.rooms[room]; m != nil {
			m[c.id] = c
		}
		out = append(out, room)
	}
	slices.Sort(out)
	return out
}

// syncRecordLocked has the socket's record follow its state: detached_since
// set while detached, absent while attached. One goroutine per socket at a
// time writes it, retrying while etcd fails, until the record matches or
// the socket or its session ends.
func (g *Gateway) syncRecordLocked(r *resumable) {
	r.dirty = true
	if r.syncing {
		return
	}
	r.syncing = true
	go g.syncRecord(r)
}

func (g *Gateway) syncRecord(r *resumable) {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for {
		r.mu.Lock()
		if !r.dirty || r.ended != "" || r.out != nil || r.sess.ctx.Err() != nil {
			r.syncing = false
			r.mu.Unlock()
			return
		}
		r.dirty = false
		rec := r.record
		if r.conn == nil {
			since := r.since
			rec.DetachedSince = &since
		}
		r.mu.Unlock()
		ctx, cancel := context.WithTimeout(r.sess.ctx, g.cfg.EtcdTimeout)
		_, err := g.store.SetSocketRecord(ctx, r.sid, rec)
		cancel()
		if err == nil || errors.Is(err, store.ErrSocketNotFound) {
			backoff.reset()
			continue
		}
		g.log.Warn("cannot mark socket record detached or attached; retrying", "socket", r.sid.String(), "err", err)
		r.mu.Lock()
		r.dirty = true
		r.mu.Unlock()
		sleepCtx(r.sess.ctx, backoff.next())
	}
}

// endResumable ends the state of a socket that never got registered.
func (g *Gateway) endResumable(c *client) {
	if c.rs == nil {
		return
	}
	c.rs.mu.Lock()
	g.endLocked(c.rs, resumeUnknown)
	c.rs.mu.Unlock()
}

// outcomeLabel is gateway_resumes_total's outcome label for a resume outcome.
func outcomeLabel(outcome string) string { return strings.ToLower(outcome) }
