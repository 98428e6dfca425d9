package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retrying Join/Leave transactions across an etcd leader change.
//
// When the etcd leader dies, a transaction a follower forwarded to it is lost,
// and the follower answers only when etcd's request timeout runs out
// (ReqTimeout: 5 s + 2 × election timeout, ~7 s with the defaults), long after
// a new leader was elected (~1 s). Callers would wait those seconds, and with
// coalescing every new call would queue behind the stalled transactions.
//
// Instead every Join/Leave transaction runs as attempts:
//
//   - An attempt is sent with clientv3.WithRequireLeader, so a member that
//     knows it has no leader refuses it at once ("no leader") instead of
//     holding it.
//   - A term watch notices a lost attempt. Every etcd response header carries
//     the raft term; the watch remembers the highest seen and each attempt
//     records it when it starts. While any attempt has been in flight longer
//     than stallThreshold, the watch probes every probeInterval with a
//     serializable count-only range, which any member answers from its own
//     state, leader or not, with its current term. An attempt that started
//     before the term rose is cancelled and retried: the leader it was sent
//     to has been replaced. No fixed per-attempt timeout is used, so a
//     transaction that is merely slow under load is never abandoned.
//   - Errors that mean the transaction was not applied, or may have been
//     applied while its outcome was lost (gRPC UNAVAILABLE: connection lost,
//     "leader changed", etcd's request timeouts, a stopping member; and the
//     watch's cancellation) are retried after a short pause with jitter. Any
//     other error (a refused request: too many operations, too large,
//     permission denied; the caller's own deadline) is final.
//   - "No leader" is retried for as long as the deadline allows once the call
//     has lost an attempt with the leader (an election is then under way),
//     but otherwise only for noLeaderGrace: a member that answers "no leader"
//     from the start may have lost its quorum, and then the caller is told at
//     once (UNAVAILABLE), not at its deadline.
//   - Retrying stops when the caller's deadline is too near for another
//     attempt (a call without a deadline gets retryWindow); the call then
//     fails with the last attempt's error.
//
// Why a retry is safe: Join and Leave are idempotent (a Join's writes are
// guarded by the membership's absence, and a Leave's deletes of keys already
// gone change nothing), so applying a call twice leaves the
// state the call asked for. Ordering holds too: once the term has risen, an
// entry of the old leader is either lost or committed by the new leader
// before anything proposed in the new term, so it cannot land after the
// retry. (After a lost connection without a new term, a proposal still in
// transit between members could in principle be applied after its retry,
// and so after a later change to the same membership; the window is one
// message delay between members.) What a retried call reports is the state just before the attempt
// that committed it (see was_member/already_member in membership.proto).

const (
	// stallThreshold is how long an attempt may be in flight before the term
	// watch starts probing; healthy transactions finish well within it.
	stallThreshold = 200 * time.Millisecond
	// probeInterval is the pause between probes while an attempt is stalled.
	probeInterval = 100 * time.Millisecond
	// probeTimeout bounds one probe (one sent to a dead member fails by then).
	probeTimeout = 300 * time.Millisecond
	// retryMinTime is the least time left before a caller's deadline that is
	// worth another attempt.
	retryMinTime = 50 * time.Millisecond
	// retryWindow bounds the retries of a call that has no deadline.
	retryWindow = 10 * time.Second
	// noLeaderGrace is how long "no leader" is retried by a call that lost no
	// attempt with the leader: long enough for an election in progress (a
	// member's pre-vote to the new leader takes a few round trips), short
	// enough that a cluster without quorum fails calls fast.
	noLeaderGrace = 300 * time.Millisecond
)

// errTermRose is the term watch's cancellation of an attempt.
// It wraps rpctypes.ErrLeaderChanged, so that a call whose deadline leaves no
// time for another attempt fails as UNAVAILABLE ("retry"), like any other
// transaction lost with a leader.
var errTermRose = fmt.Errorf("etcd leader changed while the transaction was in flight: %w", rpctypes.ErrLeaderChanged)

// termWatch tracks etcd's raft term and cancels the attempts that started
// before it rose. Its probing goroutine runs only while attempts are in
// flight.
type termWatch struct {
	// probe returns the current raft term of some member.
	probe func(ctx context.Context) (uint64, error)
	term  atomic.Uint64 // highest raft term seen; 0 until the first response

	mu       sync.Mutex
	inflight map[*attempt]struct{}
	probing  bool
}

type attempt struct {
	start  time.Time
	term   uint64 // highest term seen when it started; 0: not known yet
	cancel context.CancelCauseFunc
}

func newTermWatch(kv etcdserverpb.KVClient, probeKey string) *termWatch {
	return &termWatch{
		inflight: map[*attempt]struct{}{},
		probe: func(ctx context.Context) (uint64, error) {
			resp, err := kv.Range(ctx, &etcdserverpb.RangeRequest{
				Key: []byte(probeKey), Serializable: true, CountOnly: true})
			if err != nil {
				return 0, err
			}
			return resp.Header.GetRaftTerm(), nil
		},
	}
}

// observe raises the highest term seen to the one in h.
func (w *termWatch) observe(h *etcdserverpb.ResponseHeader) {
	t := h.GetRaftTerm()
	for {
		cur := w.term.Load()
		if t <= cur || w.term.CompareAndSwap(cur, t) {
			return
		}
	}
}

// txn sends req once under the watch: with a leader required, cancelled with
// errTermRose if the term rises while it is in flight. Errors are etcd's typed
// errors (rpctypes), errTermRose, or ctx's error.
func (w *termWatch) txn(ctx context.Context, kv etcdserverpb.KVClient, req *etcdserverpb.TxnRequest) (*etcdserverpb.TxnResponse, error) {
	actx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	a := &attempt{start: time.Now(), term: w.term.Load(), cancel: cancel}
	w.mu.Lock()
	w.inflight[a] = struct{}{}
	if !w.probing {
		w.probing = true
		go w.watch()
	}
	w.mu.Unlock()
	resp, err := kv.Txn(actx, req)
	w.mu.Lock()
	delete(w.inflight, a)
	w.mu.Unlock()
	cancel(nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(context.Cause(actx), errTermRose) {
			return nil, errTermRose
		}
		return nil, rpctypes.Error(err)
	}
	w.observe(resp.Header)
	return resp, nil
}

// watch probes the term while some attempt has been in flight for
// stallThreshold (or while no term is known yet), and cancels the stalled
// attempts that started under an older term. It returns when none is in
// flight.
func (w *termWatch) watch() {
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for range tick.C {
		w.mu.Lock()
		if len(w.inflight) == 0 {
			w.probing = false
			w.mu.Unlock()
			return
		}
		stalled := w.term.Load() == 0
		for a := range w.inflight {
			if time.Since(a.start) >= stallThreshold {
				stalled = true
				break
			}
		}
		w.mu.Unlock()
		if !stalled {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		t, err := w.probe(ctx)
		cancel()
		if err != nil {
			continue // a dead or unreachable member: the next probe goes to another
		}
		w.observe(&etcdserverpb.ResponseHeader{RaftTerm: t})
		cur := w.term.Load()
		w.mu.Lock()
		for a := range w.inflight {
			switch {
			case a.term == 0:
				a.term = cur // started before any term was known
			case a.term < cur && time.Since(a.start) >= stallThreshold:
				// A younger attempt may have been sent to the new leader
				// already, with a term read before the rise was seen: it is
				// left to finish or to stall in turn.
				a.cancel(errTermRose)
				delete(w.inflight, a)
			}
		}
		w.mu.Unlock()
	}
}

// retryable reports whether a failed attempt may be tried again: the
// transaction was not applied, or its outcome was lost (see the file comment).
func retryable(err error) bool {
	if errors.Is(err, errTermRose) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}

// retrier decides, failed attempt after failed attempt of one call (or one
// coalesced transaction), whether to try again and after what pause.
type retrier struct {
	n            int       // retries so far
	lostLeader   bool      // an attempt was lost with the leader
	noLeaderFrom time.Time // the first "no leader" answer
}

// next returns the pause before trying again after err, or false when err is
// final. The caller also checks that its deadline leaves time for it.
func (r *retrier) next(err error) (time.Duration, bool) {
	if !retryable(err) {
		return 0, false
	}
	if errors.Is(err, rpctypes.ErrNoLeader) {
		if r.noLeaderFrom.IsZero() {
			r.noLeaderFrom = time.Now()
		}
		if !r.lostLeader && time.Since(r.noLeaderFrom) >= noLeaderGrace {
			return 0, false
		}
	} else {
		r.lostLeader = true
	}
	r.n++
	return retryPause(r.n), true
}

// retryPause is the pause before retry n (1, 2, ...): 20 ms doubling up to
// 160 ms, with ±50 % jitter so that committers and servers do not retry in
// lockstep. A member that has no leader answers at once, so the pause is what
// paces retries during an election.
func retryPause(n int) time.Duration {
	d := 20 * time.Millisecond << min(n-1, 3)
	return d/2 + rand.N(d)
}

// retryUntil is when a call started at start stops being retried: its deadline
// less retryMinTime, or start + retryWindow without one.
func retryUntil(ctx context.Context, start time.Time) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl.Add(-retryMinTime)
	}
	return start.Add(retryWindow)
}

// sleepCtx pauses for d, or less if ctx ends first (then it returns false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// txnRetrying sends one idempotent transaction (an unbatched Join/Leave, a
// chunk of a room-wide change, the rooms-per-socket limit's guarded joins, a
// socket's removal), retrying as described in the file comment until it
// succeeds, fails for good, or ctx's deadline is near. It returns etcd's
// response or the last error. After a retry, counts taken from the response
// describe the state just before the attempt that committed.
func (w *termWatch) txnRetrying(ctx context.Context, kv etcdserverpb.KVClient, req *etcdserverpb.TxnRequest) (*etcdserverpb.TxnResponse, error) {
	return withRetries(ctx, func(ctx context.Context) (*etcdserverpb.TxnResponse, error) {
		return w.txn(ctx, kv, req)
	})
}

// readRetrying runs read with the same retries. A read changes nothing, so
// it may be repeated after any error retryable allows: a member lost with its
// connection, "leader changed" while a linearizable read waited for the
// leader's read index.
func readRetrying[T any](ctx context.Context, read func(context.Context) (T, error)) (T, error) {
	return withRetries(ctx, read)
}

func withRetries[T any](ctx context.Context, try func(context.Context) (T, error)) (T, error) {
	until := retryUntil(ctx, time.Now())
	var r retrier
	for {
		v, err := try(ctx)
		if err == nil {
			return v, nil
		}
		pause, ok := r.next(err)
		if !ok || time.Now().Add(pause).After(until) || !sleepCtx(ctx, pause) {
			return v, err
		}
		noteRetry(ctx)
	}
}

type retryNoteKey struct{}

// WithRetryNote returns ctx carrying a note the store sets when a change
// made under it is sent to etcd again after an attempt whose outcome was
// lost: the answers it then reports (was_member) describe the state before
// the attempt that committed, which may include the earlier attempt's own
// change.
func WithRetryNote(ctx context.Context) (context.Context, *atomic.Bool) {
	n := new(atomic.Bool)
	return context.WithValue(ctx, retryNoteKey{}, n), n
}

// noteRetry sets ctx's retry note, if it has one.
func noteRetry(ctx context.Context) {
	if n, ok := ctx.Value(retryNoteKey{}).(*atomic.Bool); ok {
		n.Store(true)
	}
}
