package gateway

import (
	"context"
	cryptosubtle "crypto/subtle"
	"errors"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	"github.com/socketrooms/membership/internal/store"
)

// Resuming a socket on another gateway than the one holding it (the handoff;
// docs/ARCHITECTURE.md, "Connection state recovery", states the design).
//
// The old gateway A holds the socket detached; its client reconnects to the
// new gateway B with A's token. B calls A (GatewayService.Handoff, one
// stream, so that B going away is visible to A at once):
//
//  1. begin: A verifies the token as a local resume would, closes the old
//     connection if it is still up, stops the window and answers accepted;
//     the token is spent (no other resume of the socket can succeed) but
//     kept, to be restored if the handoff fails.
//  2. B adds the socket to its hub (held: nothing is written yet) and moves
//     its keys to its own lease (store.MoveSocket): in one transaction when
//     they fit one (every room at one revision), else each room r in one,
//     at revision M_r. A's watch sees its gwm/ key go, B's sees one come,
//     both at M_r. A move whose answer was lost is settled by reading back.
//  3. Exactly once, by revision: a Deliver carries its Broadcast's revision
//     R. A gives the socket a message for r iff R < M_r (hub.gone keeps
//     M_r after its watch removed the membership), B iff R >= M_r
//     (client.since). The broadcast target index names A for R < M_r for a
//     while after the move (store.TargetTombstoneTTL).
//  4. finish: once its watch has applied the move, B asks A for the frames
//     after last_seq; A answers once its own watch has applied the same
//     revision, so every message A will log for the socket is logged. B
//     continues A's seq: the resumed connected frame, A's frames, then what
//     B held meanwhile. A forgets the socket without removing its keys; a
//     message with R < M_r reaching A later is forwarded to B
//     (ForwardMessage) for store.TargetTombstoneTTL, synchronously within
//     A's Deliver, so that a Broadcast that returned reached the socket
//     before any later one does.
//  5. A stream that ends before finish is answered (B went away, or gave
//     up) makes A undo the move (store.AbortMove): the socket is back on
//     A's lease before B's lease can expire, resumable with the same token.
//     A that dies takes the socket's record with its lease: B's MoveSocket
//     then fails with store.ErrSocketNotFound, having removed what it moved,
//     and the client gets a new socket with GATEWAY_LOST.
//  6. A handoff that finishes after its client gave up leaves the socket
//     detached on B, which takes A's token (resumable.inToken) as the
//     socket's until a resume there spends it.

// defaultHandoffTimeout is Gateway.handoffTimeout, T: B's steps up to the
// move have T (with handoffQueueWait, within membership.js's 10 s connect
// timeout, so that a client does not give up on a handoff that fails in
// the usual time); a move whose answer was lost is settled by reading it back
// within the etcd timeout; once the move committed, B has T again to
// finish (the keys are then B's, and only finishing keeps the socket), and
// A T to apply it. A waits 2T and its etcd timeout for finish before it
// undoes the move.
const defaultHandoffTimeout = 8 * time.Second

// maxHandoffsIn bounds the handoffs to this gateway under way at once, and
// handoffQueueWait how long one waits for its turn before its client is
// told to try again; handoffQueueWait + defaultHandoffTimeout stay within
// membership.js's 10 s connect timeout. A handoff that finishes later (its
// move was slow, and committed) may find its client gone: it leaves the
// socket detached here, resumable here with the token the client holds
// (resumable.inToken).
const (
	maxHandoffsIn    = 32
	handoffQueueWait = 1500 * time.Millisecond
)

// Handoff outcomes (gateway_handoffs_total's outcome label) beyond the
// resume errors: handed_off (done), aborted (undone: the socket stays on the
// old gateway), failed (the new gateway could not complete it).
const (
	handoffDone    = "handed_off"
	handoffAborted = "aborted"
	handoffFailed  = "failed"
)

// handoffOut is the old gateway's state of a socket being handed off.
type handoffOut struct {
	oldSecret []byte // the token's secret, restored when the handoff is undone
	lastSeq   uint64 // the client's last_seq
	beginSeq  uint64 // the seq when the handoff began: later ones were never sent
	// blastRevs are the revisions of the blasts logged since the handoff
	// began, by seq: those at or above the finish revision are the new
	// gateway's to give, and are left out of the frames handed over.
	blastRevs map[uint64]int64
	toID      string // the new gateway, its record's lease, its address
	toLease   int64
	toAddr    string
	finished  bool // the socket is the new gateway's; resumable.mu guards it
}

// handoffIn is the new gateway's state of a socket handed off to it until
// the handoff finishes: messages of revisions the old gateway does not
// give it are held, to be numbered after the old gateway's.
type handoffIn struct {
	holding bool
	pending []held
}

// held is a message held during a handoff; blastRev is a blast's revision.
type held struct {
	frame    []byte
	blastRev int64
}

// goneMember is a socket whose membership of a room on this gateway ended
// at revision rev while it was being handed off (hub.gone).
type goneMember struct {
	r   *resumable
	rev int64
}

// forward is a message for a socket handed off to another gateway.
type forward struct {
	r     *resumable
	out   *handoffOut
	frame []byte
}

// handoffApplyLocked keeps, under h.mu, the revisions a handoff needs: a
// room of a socket being handed off away that leaves at rev is kept in
// h.gone (a message below rev is still its), one that comes back is
// dropped from it; a room of a socket handed off here joins at rev (a
// message below rev is the old gateway's to give).
func (c *client) handoffApplyLocked(h *hub, room string, joined bool, rev int64) {
	if c.handingOff {
		if joined {
			h.dropGoneLocked(room, c.id)
		} else if _, ok := c.rooms[room]; ok && c.rs != nil {
			if h.gone == nil {
				h.gone = map[string]map[string]goneMember{}
			}
			m := h.gone[room]
			if m == nil {
				m = map[string]goneMember{}
				h.gone[room] = m
			}
			m[c.id] = goneMember{r: c.rs, rev: rev}
		}
	}
	if c.movedIn && joined {
		if c.since == nil {
			c.since = map[string]int64{}
		}
		c.since[room] = rev
	}
}

func (h *hub) dropGoneLocked(room, id string) {
	if m := h.gone[room]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(h.gone, room)
		}
	}
}

// dropGone forgets socket id in every room of h.gone.
func (h *hub) dropGone(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.goneAll, id)
	for room := range h.gone {
		h.dropGoneLocked(room, id)
	}
}

// deliverGoneLocked gives o (room o.room) to the sockets handed off away
// whose membership of the room ended after o's revision.
func (h *hub) deliverGoneLocked(d delivery, o *outbound, seen map[string]struct{}) {
	for id, gm := range h.gone[o.room] {
		if o.rev == 0 || o.rev >= gm.rev {
			continue
		}
		if _, skip := d.except[id]; skip {
			continue
		}
		if seen != nil {
			if _, dup := seen[id]; dup {
				continue
			}
			seen[id] = struct{}{}
		}
		gm.r.g.deliverGone(gm.r, o.nativeFrame(), d.forwards)
	}
}

// deliverGone logs the frame for r while its handoff is under way, or
// collects it to be forwarded once it finished.
func (g *Gateway) deliverGone(r *resumable, frame []byte, forwards *[]forward) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.out == nil:
	case !r.out.finished:
		if _, start := g.deliverResumableLocked(r, frame, 0, nil); start != nil {
			go start.writeLoop()
		}
	case forwards != nil:
		*forwards = append(*forwards, forward{r: r, out: r.out, frame: frame})
	}
}

// forwardMessages sends each message to the gateway its socket was handed
// off to. Such messages are rare (a Broadcast resolved before a move and
// delivered after its handoff finished), so each gets a connection of its
// own rather than one held for the tombstone time.
func (g *Gateway) forwardMessages(ctx context.Context, fs []forward) {
	for _, f := range fs {
		var resp *gatewayv1.ForwardMessageResponse
		cc, err := grpc.NewClient(f.out.toAddr, g.peerDialOptions()...)
		if err == nil {
			ctx, cancel := context.WithTimeout(ctx, g.cfg.EtcdTimeout)
			resp, err = gatewayv1.NewGatewayServiceClient(cc).ForwardMessage(ctx, &gatewayv1.ForwardMessageRequest{
				GatewayId: f.out.toID, Lease: f.out.toLease, SocketId: f.r.sid.String(), Frame: f.frame})
			cancel()
			cc.Close()
		}
		if err != nil || !resp.Delivered {
			g.metrics.forwarded.WithLabelValues("lost").Inc()
			g.log.Warn("cannot forward a message to the gateway a socket was handed off to", "socket", f.r.sid.String(), "to", f.out.toID, "err", err)
			continue
		}
		g.metrics.forwarded.WithLabelValues("forwarded").Inc()
	}
}

// handOffBegin is the old gateway's step 1: the token is checked as a
// local resume checks it (resume), the socket's connection closed if still
// up, its window stopped and its token spent. It returns the socket, or
// the resume_error.
func (g *Gateway) handOffBegin(b *gatewayv1.HandoffBegin) (*resumable, *gatewayv1.HandoffAccepted, string) {
	t, err := parseToken(b.ResumeToken)
	if err != nil || t.issuer != g.cfg.ID {
		return nil, nil, resumeUnknown
	}
	if t.incarnation != g.resumes.incarnation {
		return nil, nil, resumeGatewayLost
	}
	g.resumes.mu.Lock()
	r := g.resumes.live[t.socket]
	tomb, hasTomb := g.resumes.ended[t.socket]
	g.resumes.mu.Unlock()
	if r == nil {
		if hasTomb && time.Now().Before(tomb.until) {
			return nil, nil, tomb.outcome
		}
		return nil, nil, resumeUnknown
	}
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out != nil && !r.out.finished && !tokenMismatch(t.secret, r.out.oldSecret) && r.record.User == b.User {
		// An earlier attempt with this token is handing the socket off
		// (its client gave up waiting, or is waiting still): the new
		// gateway has the client try again, as resume does here.
		return nil, nil, resumeRetry
	}
	if r.out != nil || tokenMismatch(t.secret, r.secret) || r.record.User != b.User {
		return nil, nil, resumeUnknown // as resume: a spent, guessed or another user's token
	}
	if r.ended != "" {
		return nil, nil, r.ended
	}
	if r.sess.ctx.Err() != nil {
		g.endLocked(r, resumeGatewayLost)
		return nil, nil, resumeGatewayLost
	}
	if b.LastSeq > r.seq {
		return nil, nil, resumeUnknown
	}
	if b.LastSeq < r.seq && (r.log.len() == 0 || r.log.at(0).seq > b.LastSeq+1) {
		g.endLocked(r, resumeTooFarBehind)
		if r.conn != nil {
			r.conn.shutdown(closeNormal, "socket resumed on another gateway")
		} else {
			go g.dropDetached(r)
		}
		return nil, nil, resumeTooFarBehind
	}
	m := r.member
	if m == nil || g.hub.sockets[m.id] != member(m) {
		return nil, nil, resumeUnknown
	}
	if r.conn != nil {
		r.conn.shutdown(closeNormal, "socket resumed on another gateway")
		r.conn = nil
		r.detachSeq = r.seq
		r.since = time.Now().UTC()
		g.resumes.detached.Add(1)
	} else if r.timer != nil {
		r.timer.Stop()
	}
	r.detaches++ // a window timer already firing does nothing
	r.out = &handoffOut{oldSecret: r.secret, lastSeq: b.LastSeq, beginSeq: r.seq, blastRevs: map[uint64]int64{},
		toID: b.ToGatewayId, toLease: b.ToLease, toAddr: b.ToGrpcAddr}
	r.secret, r.inToken = nil, "" // spent: nothing matches them
	m.handingOff = true
	return r, &gatewayv1.HandoffAccepted{
		SocketId:            r.sid.String(),
		User:                r.record.User,
		ConnectedAtUnixNano: r.record.ConnectedAt.UnixNano(),
		SocketLease:         int64(r.record.Home(r.sid).Lease),
		Seq:                 r.seq,
	}, ""
}

// tokenMismatch reports whether a presented secret does not match the
// socket's (in constant time; a spent token's nil secret matches nothing).
func tokenMismatch(presented, secret []byte) bool {
	return len(secret) == 0 || cryptosubtle.ConstantTimeCompare(presented, secret) != 1
}

// handOffFinish is the old gateway's step 4, once its watch has applied
// the move: the frames after the client's last_seq and the last seq given;
// the socket is the new gateway's from here, forgotten here without its
// keys being removed, its late messages forwarded for a while.
//
// Blasts go by the revision F the new gateway names (a blast has no room
// to have moved; F is the revision the socket's first room moved at, so
// that every message below it, of a room or a blast, is this gateway's and
// every later one the new gateway's, in revision order): this gateway
// gives the socket those below F, the new one those at or above. Frames logged since the handoff began were never sent, so they go
// without a seq, blasts at or above F left out, and the new gateway numbers
// them on from the seq the handoff began at.
func (g *Gateway) handOffFinish(r *resumable, finish int64) *gatewayv1.HandoffFrames {
	g.hub.mu.Lock()
	r.mu.Lock()
	out := &gatewayv1.HandoffFrames{Seq: r.out.beginSeq}
	for i := range r.log.len() {
		l := r.log.at(i)
		switch {
		case l.seq <= r.out.lastSeq:
		case l.seq <= r.out.beginSeq:
			out.Frames = append(out.Frames, &gatewayv1.LoggedFrame{Seq: l.seq, Frame: l.frame})
		case r.out.blastRevs[l.seq] >= finish:
		default:
			out.Frames = append(out.Frames, &gatewayv1.LoggedFrame{Frame: l.frame})
		}
	}
	r.out.finished = true
	if g.hub.goneAll == nil {
		g.hub.goneAll = map[string]goneMember{}
	}
	g.hub.goneAll[r.sid.String()] = goneMember{r: r, rev: finish}
	m := r.member
	g.endLocked(r, resumeUnknown) // the token is spent: a resume here is UNKNOWN
	r.mu.Unlock()
	g.hub.removeLocked(m)
	g.hub.mu.Unlock()
	id := r.sid.String()
	time.AfterFunc(store.TargetTombstoneTTL, func() { g.hub.dropGone(id) })
	return out
}

// handOffAbort is the old gateway's step 5: the handoff did not finish, so
// the move is undone and the socket is resumable here again with the same
// token; or, when the move committed after all or the socket is gone, it is
// forgotten here and what is left of it removed: the new gateway, which got
// no frames, does not hold it.
func (g *Gateway) handOffAbort(r *resumable) {
	ctx, cancel := context.WithTimeout(r.sess.ctx, g.cfg.LeaseTTL)
	defer cancel()
	backoff := newBackoff(50*time.Millisecond, time.Second)
	var err error
	for {
		if err = g.store.AbortMove(ctx, r.sid); err == nil || errors.Is(err, store.ErrSocketNotFound) || ctx.Err() != nil {
			break
		}
		g.log.Warn("cannot undo a socket's move; retrying", "socket", r.sid.String(), "err", err)
		sleepCtx(ctx, backoff.next())
	}
	here, elsewhere := false, false
	if err == nil {
		info, _, gerr := g.store.GetSocket(ctx, r.sid)
		here = gerr == nil && info.Gateway == g.cfg.ID && info.MovingTo == nil
		elsewhere = gerr == nil && !here
	}
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.member
	if here && r.ended == "" {
		r.secret, r.out = r.out.oldSecret, nil
		if m != nil {
			m.handingOff = false
		}
		for room := range g.hub.gone {
			g.hub.dropGoneLocked(room, r.sid.String())
		}
		r.detaches++
		n := r.detaches
		r.timer = time.AfterFunc(g.cfg.ResumeWindow, func() { g.expire(r, n) })
		return
	}
	// Not here: moved after all (the new gateway, which got no frames,
	// does not hold it, or removes it having failed to finish), or gone.
	r.out.finished = true
	g.endLocked(r, resumeUnknown)
	if m != nil {
		g.hub.removeLocked(m)
	}
	for room := range g.hub.gone {
		g.hub.dropGoneLocked(room, r.sid.String())
	}
	if elsewhere || (err != nil && !errors.Is(err, store.ErrSocketNotFound)) {
		// The move could not be undone in time, or it committed and B, not
		// having finished, does not hold the socket (its move's answer came
		// too late, or never): what is left goes as a closed socket's,
		// wherever it lives, rather than staying in rooms with no one to
		// deliver to it. (Not read at all: what is left on this gateway's
		// lease goes with its reconciliation.)
		go g.removeSocket(r.sess, r.sid)
	}
}

// removeLocked is remove with h.mu held.
func (h *hub) removeLocked(c member) {
	m := c.core()
	if h.sockets[m.id] != c {
		return
	}
	delete(h.sockets, m.id)
	if _, ok := c.(*sioSocket); ok {
		h.sio--
	}
	for room := range m.rooms {
		h.leaveLocked(c, room)
	}
}

// serveHandoff is the old gateway's side of GatewayService.Handoff.
func (g *Gateway) serveHandoff(stream gatewayv1.GatewayService_HandoffServer, b *gatewayv1.HandoffBegin) error {
	g.handoffsOut.Add(1) // a drain waits for it (drain.go)
	defer g.handoffsOut.Add(-1)
	r, acc, outcome := g.handOffBegin(b)
	if r == nil {
		g.metrics.handoffs.WithLabelValues("from", outcomeLabel(outcome)).Inc()
		return stream.Send(&gatewayv1.HandoffResponse{Step: &gatewayv1.HandoffResponse_Refused{Refused: &gatewayv1.HandoffRefused{ResumeError: outcome}}})
	}
	abort := func(err error) error {
		g.handOffAbort(r)
		g.metrics.handoffs.WithLabelValues("from", handoffAborted).Inc()
		return err
	}
	if err := stream.Send(&gatewayv1.HandoffResponse{Step: &gatewayv1.HandoffResponse_Accepted{Accepted: acc}}); err != nil {
		return abort(err)
	}
	type recv struct {
		req *gatewayv1.HandoffRequest
		err error
	}
	ch := make(chan recv, 1)
	go func() {
		req, err := stream.Recv()
		ch <- recv{req, err}
	}()
	timer := time.NewTimer(2*g.handoffTimeout + g.cfg.EtcdTimeout)
	defer timer.Stop()
	var fin *gatewayv1.HandoffFinish
	select {
	case got := <-ch:
		if got.err != nil {
			return abort(got.err)
		}
		if fin = got.req.GetFinish(); fin == nil {
			return abort(status.Error(codes.InvalidArgument, "the second message of a handoff must be finish"))
		}
	case <-timer.C:
		return abort(status.Error(codes.DeadlineExceeded, "no finish within the handoff's time"))
	case <-r.sess.ctx.Done():
		return abort(status.Error(codes.Unavailable, "gateway lost its lease"))
	}
	ctx, cancel := context.WithTimeout(stream.Context(), g.handoffTimeout)
	defer cancel()
	if _, err := g.waitApplied(ctx, r.sess, fin.Revision); err != nil {
		return abort(waitError(err))
	}
	cut := fin.BlastRevision
	if cut == 0 {
		cut = fin.Revision
	}
	frames := g.handOffFinish(r, cut)
	g.lastHandoffOut.Store(time.Now().UnixNano())
	g.metrics.handoffs.WithLabelValues("from", handoffDone).Inc()
	return stream.Send(&gatewayv1.HandoffResponse{Step: &gatewayv1.HandoffResponse_Frames{Frames: frames}})
}

// peerDialOptions are the options dialing another gateway's internal API.
func (g *Gateway) peerDialOptions() []grpc.DialOption {
	if len(g.cfg.PeerDialOptions) == 0 {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return g.cfg.PeerDialOptions
}

// handOffIn is the new gateway's side: it resumes here, on c, the socket
// that token t names, held by gateway t.issuer. It returns the socket, or
// the resume_error (c then untouched but for its id, which the caller
// resets).
func (g *Gateway) handOffIn(sess *session, req *resumeRequest, user string, c *client, t parsedToken) (*resumable, string) {
	r, outcome := g.handOffInSteps(sess, req, user, c, t)
	label := outcome
	switch {
	case r != nil:
		label = handoffDone
	case outcome == "":
		// The socket stays on its gateway, resumable with the same token
		// (an undone move restores it): the client tries again.
		outcome, label = resumeRetry, handoffFailed
	}
	g.metrics.handoffs.WithLabelValues("to", outcomeLabel(label)).Inc()
	return r, outcome
}

func (g *Gateway) handOffInSteps(sess *session, req *resumeRequest, user string, c *client, t parsedToken) (*resumable, string) {
	// At most maxHandoffsIn at once: a gateway that drains sends all its
	// clients here together, and a thousand handoffs each making their
	// etcd round trips at once would all run past handoffTimeout. One that
	// cannot start soon has its client try again (1013) with its token.
	wait := time.NewTimer(handoffQueueWait)
	select {
	case g.handoffSlots <- struct{}{}:
		wait.Stop()
		defer func() { <-g.handoffSlots }()
	case <-wait.C:
		return nil, resumeRetry
	case <-sess.ctx.Done():
		wait.Stop()
		return nil, resumeGatewayLost
	}
	// The stream outlives every step (defaultHandoffTimeout): the steps up
	// to the move, reading it back, finishing, and A applying the move.
	ctx, cancel := context.WithTimeout(sess.ctx, 3*g.handoffTimeout+g.cfg.EtcdTimeout)
	defer cancel()
	moveCtx, moveCancel := context.WithTimeout(ctx, g.handoffTimeout)
	defer moveCancel()
	rec, err := g.store.Gateway(moveCtx, t.issuer)
	if errors.Is(err, store.ErrGatewayNotFound) {
		return nil, resumeGatewayLost
	}
	if err != nil {
		g.log.Warn("resume on another gateway: cannot read its record", "gateway", t.issuer, "err", err)
		return nil, ""
	}
	cc, err := grpc.NewClient(rec.GRPCAddr, g.peerDialOptions()...)
	if err != nil {
		g.log.Warn("resume on another gateway: cannot dial it", "gateway", t.issuer, "err", err)
		return nil, resumeGatewayLost
	}
	// Closing the connection ends the stream: the old gateway then undoes
	// the move unless it answered finish.
	defer cc.Close()
	stream, err := gatewayv1.NewGatewayServiceClient(cc).Handoff(ctx)
	if err != nil {
		return nil, resumeGatewayLost
	}
	if err := stream.Send(&gatewayv1.HandoffRequest{Step: &gatewayv1.HandoffRequest_Begin{Begin: &gatewayv1.HandoffBegin{
		GatewayId: t.issuer, Lease: int64(rec.Lease), ResumeToken: req.token, LastSeq: req.lastSeq, User: user,
		ToGatewayId: g.cfg.ID, ToGrpcAddr: g.cfg.AdvertiseAddr, ToLease: int64(sess.leases[0]),
	}}}); err != nil {
		return nil, resumeGatewayLost
	}
	resp, err := stream.Recv()
	if err != nil {
		// Unreachable, or no longer that registration (FAILED_PRECONDITION):
		// the socket went with the old gateway's lease.
		g.log.Info("resume on another gateway: it does not answer", "gateway", t.issuer, "err", err)
		return nil, resumeGatewayLost
	}
	if ref := resp.GetRefused(); ref != nil {
		return nil, ref.ResumeError
	}
	acc := resp.GetAccepted()
	if acc == nil || acc.SocketId != t.socket {
		return nil, resumeUnknown
	}
	sid, err := store.ParseSocketID(acc.SocketId)
	if err != nil {
		return nil, resumeUnknown
	}
	lease := sess.leaseForSocket()
	r := &resumable{g: g, sid: sid, sess: sess, secret: newSecret(), in: &handoffIn{holding: true},
		record: store.SocketRecord{Gateway: g.cfg.ID, Lease: lease, ConnectedAt: time.Unix(0, acc.ConnectedAtUnixNano).UTC(), User: acc.User}}
	c.sid, c.id, c.alive, c.rs = sid, sid.String(), sess.alive, r
	c.movedIn, c.quiet = true, true // c is no one else's yet
	r.conn, r.member = c, c
	g.resumes.mu.Lock()
	g.resumes.live[sid.String()] = r
	g.resumes.mu.Unlock()
	if !g.hub.add(c) {
		g.endResumable(c)
		return nil, ""
	}
	fail := func(removeKeys bool) {
		g.hub.remove(c)
		g.endResumable(c)
		if removeKeys {
			g.removeSocket(sess, sid)
		}
	}
	from, to := store.Home{Gateway: t.issuer, Lease: clientv3.LeaseID(acc.SocketLease)}, store.Home{Gateway: g.cfg.ID, Lease: lease}
	err = g.store.MoveSocket(moveCtx, sid, from, to)
	if err != nil && !errors.Is(err, store.ErrSocketNotFound) && sess.ctx.Err() == nil {
		// The move's last transaction may have committed with its answer
		// lost, or as moveCtx ran out: read back, with time of its own, a
		// socket at this gateway means its keys are this gateway's, and
		// only finishing keeps it (the old gateway's undo would change
		// nothing). Otherwise the old gateway undoes the move; a
		// transaction still on its way then fails its guard against the
		// undo's fence, or commits first and the old gateway, finding the
		// socket here, removes it (handOffAbort). Moving again is not
		// tried: the old gateway may have undone the move already.
		checkCtx, checkCancel := context.WithTimeout(ctx, g.cfg.EtcdTimeout)
		if info, _, gerr := g.store.GetSocket(checkCtx, sid); gerr == nil && info.Gateway == g.cfg.ID && info.MovingTo == nil {
			err = nil
		}
		checkCancel()
	}
	if err != nil {
		fail(false)
		if errors.Is(err, store.ErrSocketNotFound) {
			// The old gateway died: the socket went with its lease, and
			// MoveSocket removed what the move had put on this one's.
			return nil, resumeGatewayLost
		}
		g.log.Warn("resume on another gateway: cannot move the socket; its gateway keeps it", "socket", sid.String(), "err", err)
		return nil, ""
	}
	finishCtx, finishCancel := context.WithTimeout(ctx, g.handoffTimeout)
	defer finishCancel()
	info, rev, err := g.store.GetSocket(finishCtx, sid)
	if err == nil {
		_, err = g.waitApplied(finishCtx, sess, rev)
	}
	if err == nil && info.Gateway != g.cfg.ID {
		err = errors.New("the socket is not on this gateway after its move")
	}
	// Blasts below the revision the first room moved at are the old
	// gateway's, as that room's messages are (handOffFinish).
	cut := rev
	g.hub.mu.RLock()
	for _, m := range c.since {
		cut = min(cut, m)
	}
	g.hub.mu.RUnlock()
	if err == nil {
		err = stream.Send(&gatewayv1.HandoffRequest{Step: &gatewayv1.HandoffRequest_Finish{Finish: &gatewayv1.HandoffFinish{Revision: rev, BlastRevision: cut}}})
	}
	if err == nil {
		resp, err = stream.Recv()
	}
	var frames *gatewayv1.HandoffFrames
	if err == nil {
		if frames = resp.GetFrames(); frames == nil {
			err = errors.New("no frames in the answer to finish")
		}
	}
	if err != nil {
		// The keys are here, the old gateway's frames are not: the socket
		// cannot go on exactly, and goes.
		g.log.Warn("resume on another gateway: cannot finish the handoff; the socket is removed", "socket", sid.String(), "err", err)
		fail(true)
		return nil, resumeGatewayLost
	}
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended != "" {
		return nil, ""
	}
	rooms := make([]string, 0, len(c.rooms))
	for room := range c.rooms {
		rooms = append(rooms, room)
	}
	slices.Sort(rooms)
	c.quiet = false
	c.blastSince = cut // blasts below it are the old gateway's
	c.enqueue(resumedFrame(c.id, r.record.User, rooms, g.tokenLocked(r)))
	r.seq = frames.Seq
	r.inToken, r.inUntil = req.token, time.Now().Add(inTokenGrace)
	var added int64
	for _, f := range frames.Frames {
		if !isMessageFrame(f.Frame) {
			g.log.Warn("resume on another gateway: a handed-over frame is not a message frame; skipped", "socket", sid.String())
			continue
		}
		seq := f.Seq
		if seq == 0 { // logged after the handoff began: numbered here
			r.seq++
			seq = r.seq
		}
		r.log.push(logged{seq: seq, frame: f.Frame})
		added += loggedSize(f.Frame)
		c.enqueueSeq(f.Frame, seq)
	}
	r.logBytes += added
	g.resumes.bytes.Add(added)
	pending := r.in.pending
	r.in = nil
	for _, p := range pending {
		if p.blastRev == 0 || p.blastRev >= cut {
			if _, start := g.deliverResumableLocked(r, p.frame, 0, nil); start != nil {
				go start.writeLoop()
			}
		}
	}
	g.syncRecordLocked(r)
	return r, resumeOK
}

// acceptForward is the new gateway's side of ForwardMessage: the socket
// numbers the message and sends it, as a delivery.
func (g *Gateway) acceptForward(socket string, frame []byte) bool {
	g.resumes.mu.Lock()
	r := g.resumes.live[socket]
	g.resumes.mu.Unlock()
	if r == nil {
		return false
	}
	g.hub.mu.RLock()
	defer g.hub.mu.RUnlock()
	queued, _ := g.deliverResumable(r, frame, 0, nil, false)
	return queued
}
