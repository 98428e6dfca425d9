package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Coalescing Join/Leave.
//
// Each Join or Leave is one guarded transaction. Under concurrency the
// per-transaction cost in etcd (a raft entry, an apply, a backend write) and
// the round trip dominate, so concurrent calls are coalesced: each call
// becomes a nested transaction carrying its own guard, and committers put as
// many waiting calls as fit into one etcd transaction. A lone call is sent at
// once, alone, so coalescing adds no latency when there is nothing to share a
// transaction with.
//
// Limits: a batch stays within the transaction budget (txnbudget.go) in both
// operations and request bytes: a call on one socket is flat (at most three
// compares and three writes: it needs 3 operations), a call on k sockets
// nests two levels deep (k compares and k membership transactions of two
// operations: k + 2), so a batch of n calls needs n plus the most any of its
// calls needs, and its bytes are the sum of its calls'. A call that cannot fit alone is refused before it is queued. etcd
// also refuses a transaction that writes one key twice, so two calls touching
// the same membership never share a batch: the later one waits for the next.

// batcher coalesces calls. There is no standing committer goroutine: a call
// that finds no transaction in flight starts one, which commits it together
// with whatever else is waiting and goes on while calls wait; so a lone call
// is sent at once. While transactions are in flight, a call starts a further
// committer (up to max) only when at least extraCommitterBatch calls wait,
// enough to be worth a transaction of their own, or when every committer is
// pausing before a retry; otherwise it waits to be picked up by a committer
// in flight, which takes every waiting call that fits when its transaction
// returns. A transaction started for one call
// while another is in flight costs etcd a raft entry, an apply and a
// backend write, and the membership-server a round trip, for that one call:
// under load that kept batches small, and at concurrency 64 cost a quarter
// more CPU per call than taking turns (BENCHMARKS.md, section 1). The caller
// itself only waits, so that it returns by its deadline even while the
// transaction carrying it is retried for others (retry.go).
//
// An attempt lives no longer than someone waits for it: it is cancelled when
// every call it carries has been abandoned by its caller (so that a call that
// gave up is not retried, and cannot land after that client's next change to
// the same membership), and when the batcher stops.
type batcher struct {
	pb     etcdserverpb.KVClient
	tw     *termWatch
	max    int
	budget txnBudget
	// ctx is cancelled by stop: it ends attempts in flight and the pauses
	// between them, however long their calls' deadlines.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	pending []*batchCall
	active  int // transactions being built or in flight
	paused  int // of active, those pausing before a retry (retry.go)
	stopped bool
	idle    sync.Cond // signalled when active drops to 0

	txns, calls atomic.Int64 // for BatchStats
}

type batchCall struct {
	ctx  context.Context
	op   *etcdserverpb.TxnRequest
	keys []string
	need int              // txnNeed(op)
	size int              // encoded size of op as a RequestOp of the batch
	done chan batchResult // buffered: the committer never blocks on it
}

type batchResult struct {
	resp *etcdserverpb.TxnResponse
	rev  int64
	err  error
}

// StartBatching makes Join and Leave coalesce concurrent calls, with up to
// committers etcd transactions in flight at once (more than one only while
// calls back up: see batcher). Call the returned function
// to stop: it cancels the transactions in flight (their outcome is unknown,
// as for any request abandoned in flight), fails the calls they carry and
// those still waiting with ErrShuttingDown, and returns once every committer
// has returned, without waiting for etcd; calls made after it fail with
// ErrShuttingDown too.
func (s *Store) StartBatching(committers int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &batcher{pb: s.pb, tw: s.tw, max: committers, budget: s.budget, ctx: ctx, cancel: cancel}
	b.idle.L = &b.mu
	s.batch = b
	return func() {
		b.mu.Lock()
		b.stopped = true
		for _, c := range b.pending {
			c.done <- batchResult{err: errBatcherStopped}
		}
		b.pending = nil
		b.mu.Unlock()
		b.cancel()
		b.mu.Lock()
		for b.active > 0 {
			b.idle.Wait()
		}
		b.mu.Unlock()
	}
}

// BatchStats reports how many coalesced transactions were sent and how many
// Join/Leave calls they carried (zeros without batching).
func (s *Store) BatchStats() (txns, calls int64) {
	if s.batch == nil {
		return 0, 0
	}
	return s.batch.txns.Load(), s.batch.calls.Load()
}

// extraCommitterBatch is how many calls must wait, while a transaction is in
// flight, before another committer starts for them: half of what one
// transaction carries (single-socket calls, one operation each), 64 at
// etcd's default --max-txn-ops. Below it they wait for the one in flight (a
// round trip of etcd, a few milliseconds), which then takes them all at
// once. Measured at concurrency 64 and 256, 16 cost about 10 % more CPU per
// call than 64 (BENCHMARKS.md, section 1).
func (b *batcher) extraCommitterBatch() int { return max(1, b.budget.maxOps/2) }

var errBatcherStopped = fmt.Errorf("batcher stopped: %w", ErrShuttingDown)

// do commits one call, alone or with others, and returns its share. need and
// size are the call's cost as one nested transaction (txnBudget.nestedCost).
func (b *batcher) do(ctx context.Context, op *etcdserverpb.TxnRequest, keys []string, need, size int) (*etcdserverpb.TxnResponse, int64, error) {
	c := &batchCall{ctx: ctx, op: op, keys: keys, need: need, size: size, done: make(chan batchResult, 1)}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil, 0, errBatcherStopped
	}
	b.pending = append(b.pending, c)
	// A committer pausing before a retry (an etcd election) is not waited
	// for: the call starts its own, as it would with none in flight.
	lead := b.active < b.max && (b.active == b.paused || len(b.pending) >= b.extraCommitterBatch())
	if lead {
		b.active++
	}
	b.mu.Unlock()
	if lead {
		// In its own goroutine: a commit may outlast this call's deadline
		// (it carries others' calls, and retries across an etcd leader
		// change), and the caller must get its answer by its deadline.
		go b.commitPending()
	}
	select {
	case r := <-c.done:
		return r.resp, r.rev, r.err
	case <-ctx.Done():
		// The call may still be committed: its outcome is unknown, as for any
		// request abandoned in flight.
		return nil, 0, ctx.Err()
	}
}

// commitPending commits batches until nothing waits, then gives its place
// among the max committers up.
func (b *batcher) commitPending() {
	for {
		b.mu.Lock()
		batch := b.takeLocked()
		if len(batch) == 0 {
			b.releaseLocked()
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.commit(batch)
	}
}

func (b *batcher) releaseLocked() {
	b.active--
	if b.active == 0 {
		b.idle.Broadcast()
	}
}

// takeLocked removes from pending the calls that fit one transaction: within
// the budget's operations and bytes, and no two writing the same membership.
// The first call is always taken (each fits alone: commitChange checked), so
// no call can wait forever.
func (b *batcher) takeLocked() []*batchCall {
	var batch []*batchCall
	keys := map[string]bool{}
	var shape txnShape
	rest := b.pending[:0]
	for _, c := range b.pending {
		next := shape.withOp(c.need, c.size)
		fits := len(batch) == 0 || b.budget.fits(next)
		for _, k := range c.keys {
			if keys[k] {
				fits = false
			}
		}
		if !fits {
			rest = append(rest, c)
			continue
		}
		for _, k := range c.keys {
			keys[k] = true
		}
		batch = append(batch, c)
		shape = next
	}
	clear(b.pending[len(rest):])
	b.pending = rest
	return batch
}

// commit sends one transaction holding every live call of batch. An attempt
// lost to an etcd leader change, or refused for want of a leader, is retried
// (retry.go) with the calls that still have time for another attempt; the
// others get the attempt's error. Each attempt, and the pause after it, is
// bounded by the latest deadline among its calls (retryWindow for a call
// without one), and ends early when all of its calls' callers have given up
// or the batcher stops.
func (b *batcher) commit(batch []*batchCall) {
	start := time.Now()
	live := batch[:0:0]
	var r retrier
	for {
		// Calls whose callers gave up (during a pause between attempts, or
		// before the first) are dropped; they have their answer already.
		ops := make([]*etcdserverpb.RequestOp, 0, len(batch))
		var until time.Time
		live = live[:0]
		for _, c := range batch {
			if err := c.ctx.Err(); err != nil {
				c.done <- batchResult{err: err}
				continue
			}
			if b.ctx.Err() != nil {
				c.done <- batchResult{err: errBatcherStopped}
				continue
			}
			live = append(live, c)
			ops = append(ops, &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestTxn{RequestTxn: c.op}})
			dl, ok := c.ctx.Deadline()
			if !ok {
				dl = start.Add(retryWindow)
			}
			if dl.After(until) {
				until = dl
			}
		}
		if len(live) == 0 {
			return
		}
		ctx, cancel := b.attemptContext(live, until)
		b.txns.Add(1)
		b.calls.Add(int64(len(live)))
		resp, err := b.tw.txn(ctx, b.pb, &etcdserverpb.TxnRequest{Success: ops})
		if err == nil {
			cancel()
			for i, c := range live {
				c.done <- batchResult{resp: resp.Responses[i].GetResponseTxn(), rev: resp.Header.Revision}
			}
			return
		}
		pause, again := r.next(err)
		batch = batch[:0] // live has its own array
		for _, c := range live {
			switch {
			case c.ctx.Err() != nil:
				// The attempt was cancelled for want of callers (or this
				// one's deadline passed): it keeps its own error.
				c.done <- batchResult{err: c.ctx.Err()}
			case b.ctx.Err() != nil:
				c.done <- batchResult{err: errBatcherStopped}
			case !again || time.Now().Add(pause).After(retryUntil(c.ctx, start)):
				c.done <- batchResult{err: err}
			default:
				noteRetry(c.ctx)
				batch = append(batch, c)
			}
		}
		if len(batch) == 0 {
			cancel()
			return
		}
		// Cut short when the remaining callers give up or the batcher stops;
		// the next round answers them.
		b.mu.Lock()
		b.paused++
		b.mu.Unlock()
		sleepCtx(ctx, pause)
		b.mu.Lock()
		b.paused--
		b.mu.Unlock()
		cancel()
	}
}

// attemptContext returns the context of one attempt carrying live: it ends
// at until, when the batcher stops, or once the context of every call in
// live is done, whichever comes first.
func (b *batcher) attemptContext(live []*batchCall, until time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(b.ctx, until)
	var left atomic.Int64
	left.Store(int64(len(live)))
	stops := make([]func() bool, len(live))
	for i, c := range live {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}
