package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
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
// Limits: etcd allows 128 operations per transaction level, and a nested
// transaction only what its parent leaves unused; a call on k sockets nests
// two levels deep (k compares and k membership transactions of two
// operations), so a batch of n calls needs n + max(k) + 2 <= 128. etcd also
// refuses a transaction that writes one key twice, so two calls touching the
// same membership never share a batch: the later one waits for the next.

// batcher owns the committer goroutines; StopBatching stops them.
type batcher struct {
	pb    etcdserverpb.KVClient
	queue chan *batchCall
	stop  chan struct{}
	wg    sync.WaitGroup

	txns, calls atomic.Int64 // for BatchStats
}

type batchCall struct {
	ctx   context.Context
	op    *etcdserverpb.TxnRequest
	keys  []string
	width int
	done  chan batchResult // buffered: the committer never blocks on it
}

type batchResult struct {
	resp *etcdserverpb.TxnResponse
	rev  int64
	err  error
}

// batchTimeout bounds one coalesced transaction; callers stop waiting at
// their own deadlines.
const batchTimeout = 10 * time.Second

// StartBatching makes Join and Leave coalesce concurrent calls, with up to
// committers etcd transactions in flight at once. Call the returned function
// to stop; calls made after it fail.
func (s *Store) StartBatching(committers int) (stop func()) {
	b := &batcher{pb: s.pb, queue: make(chan *batchCall, 1024), stop: make(chan struct{})}
	for i := 0; i < committers; i++ {
		b.wg.Add(1)
		go b.run()
	}
	s.batch = b
	var once sync.Once
	return func() {
		once.Do(func() {
			close(b.stop)
			b.wg.Wait()
		})
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

var errBatcherStopped = fmt.Errorf("membership store is shutting down")

// do queues one call and waits for its share of a coalesced transaction.
func (b *batcher) do(ctx context.Context, op *etcdserverpb.TxnRequest, keys []string, width int) (*etcdserverpb.TxnResponse, int64, error) {
	c := &batchCall{ctx: ctx, op: op, keys: keys, width: width, done: make(chan batchResult, 1)}
	select {
	case b.queue <- c:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-b.stop:
		return nil, 0, errBatcherStopped
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

func (b *batcher) run() {
	defer b.wg.Done()
	var carry []*batchCall // calls that conflicted with the previous batch
	for {
		var batch []*batchCall
		keys := map[string]bool{}
		width := 0
		add := func(c *batchCall) bool {
			if len(batch)+1+max(width, c.width)+2 > maxTxnOps {
				return false
			}
			for _, k := range c.keys {
				if keys[k] {
					return false
				}
			}
			for _, k := range c.keys {
				keys[k] = true
			}
			batch = append(batch, c)
			width = max(width, c.width)
			return true
		}
		rest := carry[:0:0]
		for _, c := range carry {
			if !add(c) {
				rest = append(rest, c)
			}
		}
		carry = rest
		if len(batch) == 0 {
			select {
			case c := <-b.queue:
				add(c)
			case <-b.stop:
				return
			}
		}
	drain:
		for len(carry) == 0 {
			select {
			case c := <-b.queue:
				if !add(c) {
					carry = append(carry, c)
				}
			default:
				break drain
			}
		}
		b.commit(batch)
	}
}

// commit sends one transaction holding every live call of batch.
func (b *batcher) commit(batch []*batchCall) {
	live := batch[:0:0]
	ops := make([]*etcdserverpb.RequestOp, 0, len(batch))
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.done <- batchResult{err: err}
			continue
		}
		live = append(live, c)
		ops = append(ops, &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestTxn{RequestTxn: c.op}})
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), batchTimeout)
	defer cancel()
	b.txns.Add(1)
	b.calls.Add(int64(len(live)))
	resp, err := b.pb.Txn(ctx, &etcdserverpb.TxnRequest{Success: ops})
	if err != nil {
		err = rpctypes.Error(err)
	}
	for i, c := range live {
		if err != nil {
			c.done <- batchResult{err: err}
			continue
		}
		c.done <- batchResult{resp: resp.Responses[i].GetResponseTxn(), rev: resp.Header.Revision}
	}
}
