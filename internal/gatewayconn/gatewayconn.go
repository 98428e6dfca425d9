// Package gatewayconn is the membership-server's one owner of its gRPC
// connections to gateways, and of the two calls made over them: Deliver
// (Broadcast and Blast) and WaitApplied (WAIT_FOR_APPLY).
//
// Ownership. A Pool holds at most one connection per registered gateway,
// keyed by the gateway's id and the address its record in etcd advertises.
// Which gateways are registered comes from the broadcast target index
// (store.TargetIndex), which follows gateways/ records by watch; the Pool
// reads no records of its own.
//
// Closing. A held connection is closed when the index no longer has a record
// for its gateway at its address: the record was deleted (its lease expired
// or was revoked: the gateway stopped, crashed or lost etcd) or replaced by
// one advertising another address (a restart at a new pod IP, which gets a
// connection of its own). The index signals every change of gateway records
// (store.TargetIndex.GatewayChanges) and the Pool then compares what it holds
// with the records, so a connection outlives its gateway's record by about
// the watch's delay. A call that names a gateway the index does not hold at
// that address (a record read from etcd that the index has not applied yet,
// or one already deleted) gets a connection of its own, closed when the call
// returns. Close closes every connection; calls after Close still work, each
// on a connection of its own. The gauge of open connections (Open) counts
// both kinds.
//
// A gateway that goes away mid-call. Its connection may be closed under a
// call in flight: the call ends at once with CANCELED ("the client
// connection is closing") instead of waiting out its timeout. Deliver counts
// that gateway as failed, as it would an unreachable one; WaitApplied
// returns the error, which the service reports as GATEWAY_UNAVAILABLE. Those
// are the answers the gateway itself gives once its lease is gone (it
// refuses to deliver or to confirm without a live lease), and the sockets
// such a call was about are gone with that lease.
package gatewayconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	"github.com/socketrooms/membership/internal/store"
)

// DeliverTimeout caps one gateway's part of a Deliver: one slow gateway
// costs its own sockets the message, not the caller its whole deadline.
const DeliverTimeout = 5 * time.Second

// Config configures a Pool.
type Config struct {
	// Index is the running broadcast target index of the same keyspace: it
	// tells which gateways are registered, at which address.
	Index *store.TargetIndex
	// Store reads a gateway's record from etcd when the index cannot vouch
	// for it (see WaitApplied).
	Store *store.Store
	// DialOptions are added when dialing gateways (credentials); without
	// them connections are plaintext.
	DialOptions []grpc.DialOption
	// Logger receives a warning per failed delivery; nil: slog.Default().
	Logger *slog.Logger
}

// Pool owns the connections to gateways. Create it with New and end it with
// Close.
type Pool struct {
	cfg  Config
	log  *slog.Logger
	open atomic.Int64 // connections open now: held and per call

	mu     sync.Mutex
	conns  map[string]*conn // gateway id → its connection
	closed bool

	wmu     sync.Mutex
	batches map[batchKey]*waitBatch // WaitApplied calls gathered per registration

	stop chan struct{}
	done chan struct{}
}

// conn is one connection, held for a gateway at addr.
type conn struct {
	addr   string
	cc     *grpc.ClientConn
	client gatewayv1.GatewayServiceClient
}

// New returns a Pool following cfg.Index's gateway records until Close.
func New(cfg Config) *Pool {
	p := &Pool{cfg: cfg, log: cfg.Logger, conns: map[string]*conn{}, batches: map[batchKey]*waitBatch{}, stop: make(chan struct{}), done: make(chan struct{})}
	if p.log == nil {
		p.log = slog.Default()
	}
	go p.follow()
	return p
}

// follow drops connections whose gateway records changed, until Close.
func (p *Pool) follow() {
	defer close(p.done)
	for {
		select {
		case <-p.cfg.Index.GatewayChanges():
			p.reconcile()
		case <-p.stop:
			return
		}
	}
}

// reconcile closes every held connection whose gateway the index no longer
// holds at that address. It runs under p.mu, as does the check in acquire,
// so a connection kept just before a record's deletion was applied is
// closed here, and one asked for just after it is not kept.
func (p *Pool) reconcile() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.conns {
		if rec, ok := p.cfg.Index.Gateway(id); !ok || rec.GRPCAddr != c.addr {
			delete(p.conns, id)
			p.closeConn(c)
		}
	}
}

// Close stops following records and closes every held connection. Calls in
// flight on them end with CANCELED.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for id, c := range p.conns {
		delete(p.conns, id)
		p.closeConn(c)
	}
	p.mu.Unlock()
	close(p.stop)
	<-p.done
}

// Open returns how many connections to gateways are open now: those held
// for registered gateways and those made for one call.
func (p *Pool) Open() int { return int(p.open.Load()) }

// Held returns the addresses of the connections held, by gateway id.
func (p *Pool) Held() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.conns))
	for id, c := range p.conns {
		out[id] = c.addr
	}
	return out
}

// acquire returns a client for the gateway of rec and a release to call when
// the call is over: a no-op for a held connection, a close for one made for
// this call alone.
func (p *Pool) acquire(rec store.GatewayRecord) (gatewayv1.GatewayServiceClient, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[rec.ID]; c != nil && c.addr == rec.GRPCAddr {
		return c.client, func() {}, nil
	}
	c, err := p.dial(rec.GRPCAddr)
	if err != nil {
		return nil, nil, err
	}
	live, ok := p.cfg.Index.Gateway(rec.ID)
	if p.closed || !ok || live.GRPCAddr != rec.GRPCAddr {
		return c.client, func() { p.closeConn(c) }, nil
	}
	if old := p.conns[rec.ID]; old != nil {
		p.closeConn(old) // the gateway registered again elsewhere
	}
	p.conns[rec.ID] = c
	return c.client, func() {}, nil
}

func (p *Pool) dial(addr string) (*conn, error) {
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, p.cfg.DialOptions...)
	// NewClient connects lazily; it fails only for a malformed target.
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("gateway address %q: %w", addr, err)
	}
	p.open.Add(1)
	return &conn{addr: addr, cc: cc, client: gatewayv1.NewGatewayServiceClient(cc)}, nil
}

func (p *Pool) closeConn(c *conn) {
	_ = c.cc.Close()
	p.open.Add(-1)
}

// DeliverResult sums a Deliver.
type DeliverResult struct {
	// Delivered is how many sockets the gateways queued the message for.
	Delivered int64
	// Failed is how many gateways could not be delivered through.
	Failed int32
}

// Deliver hands msg to every gateway of t in parallel, each with
// DeliverTimeout at most, and sums what they delivered. Unreachable gateways
// are counted and logged, not fatal: their sockets miss the message, the
// others do not wait for them. msg gets t's revision; each gateway gets its
// own copy naming it and its lease, sharing msg's data (read only) rather
// than copying it: a 1 MiB Broadcast to ten gateways holds one copy of its
// data, plus grpc-go's encoding of each request while it is sent.
func (p *Pool) Deliver(ctx context.Context, t store.Targets, msg *gatewayv1.DeliverRequest) DeliverResult {
	msg.Revision = t.Revision
	data := msg.DataJson
	msg.DataJson = nil
	head := proto.CloneOf(msg) // everything but the data
	msg.DataJson = data
	var mu sync.Mutex
	var res DeliverResult
	var wg sync.WaitGroup
	for id, gw := range t.Gateways {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, DeliverTimeout)
			defer cancel()
			m := proto.CloneOf(head)
			m.DataJson = data
			m.GatewayId, m.Lease = id, int64(gw.Lease)
			n, err := p.deliverOne(ctx, gw, m)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed++
				p.log.Warn("deliver to gateway failed", "gateway", id, "addr", gw.GRPCAddr, "revision", t.Revision, "err", err)
				return
			}
			res.Delivered += n
		}()
	}
	wg.Wait()
	return res
}

func (p *Pool) deliverOne(ctx context.Context, gw store.GatewayRecord, m *gatewayv1.DeliverRequest) (int64, error) {
	c, release, err := p.acquire(gw)
	if err != nil {
		return 0, err
	}
	defer release()
	resp, err := c.Deliver(ctx, m)
	if err != nil {
		return 0, err
	}
	return resp.Delivered, nil
}

// Registration names a gateway and one lease of its session (a socket id's
// gateway and lease): the gateway confirms a wait only while it holds that
// lease, so a socket of an ended session is not reported applied.
type Registration struct {
	Gateway string
	Lease   clientv3.LeaseID
}

// WaitApplied waits until every registration in regs has applied etcd
// revision rev, waiting on each distinct one once (one gateway unless its
// sockets span several of its leases), all in parallel: the call takes as
// long as the slowest gateway, not the sum. Concurrent calls share the
// gateway's answers (waitBatch): a gateway has at most one WaitApplied call
// in flight per registration from this Pool. The first failure ends
// it and cancels the other waits; it is the record lookup's error (such as
// store.ErrGatewayNotFound or store.ErrCorruptRecord), the gateway's gRPC
// status, or ctx's error once ctx is done. nil means all applied rev.
func (p *Pool) WaitApplied(ctx context.Context, rev int64, regs []Registration) error {
	if len(regs) == 1 || (len(regs) > 1 && allSame(regs)) {
		// The common case (one socket, or sockets of one session): no
		// goroutine, map or sort for a single wait.
		err := p.waitOne(ctx, rev, regs[0])
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	seen := make(map[Registration]bool, len(regs))
	var todo []Registration
	for _, r := range regs {
		if !seen[r] {
			seen[r] = true
			todo = append(todo, r)
		}
	}
	// A stable order keeps which error wins a tie reproducible in logs.
	sort.Slice(todo, func(i, j int) bool {
		if todo[i].Gateway != todo[j].Gateway {
			return todo[i].Gateway < todo[j].Gateway
		}
		return todo[i].Lease < todo[j].Lease
	})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(todo))
	for _, r := range todo {
		go func() { errc <- p.waitOne(wctx, rev, r) }()
	}
	var first error
	for range todo {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel() // the answer is decided: stop the other waits
		}
	}
	if first != nil && ctx.Err() != nil {
		// The caller's deadline or cancellation, not a gateway's fault.
		return ctx.Err()
	}
	return first
}

// latestDeadline is the latest of the waiters' deadlines; false when any
// waiter has none.
func latestDeadline(ws []*applyWaiter) (time.Time, bool) {
	var latest time.Time
	for _, w := range ws {
		if !w.hasDeadline {
			return time.Time{}, false
		}
		if w.deadline.After(latest) {
			latest = w.deadline
		}
	}
	return latest, true
}

func allSame(regs []Registration) bool {
	for _, r := range regs[1:] {
		if r != regs[0] {
			return false
		}
	}
	return true
}

// waitOne waits for one registration: it joins that registration's batch
// (waitBatch), which asks the gateway once for the highest revision its
// waiters want, and returns when an answer covers rev, when the answer is a
// failure, or when ctx is done (then ctx's error).
func (p *Pool) waitOne(ctx context.Context, rev int64, r Registration) error {
	rec, err := p.record(ctx, r.Gateway, rev)
	if err != nil {
		return err
	}
	w := &applyWaiter{rev: rev, done: make(chan error, 1)}
	w.deadline, w.hasDeadline = ctx.Deadline()
	key := batchKey{reg: r, addr: rec.GRPCAddr}
	p.wmu.Lock()
	b := p.batches[key]
	if b == nil {
		b = &waitBatch{rec: rec, reg: r}
		p.batches[key] = b
	}
	b.waiters = append(b.waiters, w)
	if !b.running {
		b.running = true
		go p.runBatch(key, b)
	}
	p.wmu.Unlock()
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		p.leaveBatch(b, w)
		select {
		case err := <-w.done: // answered while leaving: the answer stands
			return err
		default:
			return ctx.Err()
		}
	}
}

// batchKey names a batch: one registration at one address. Waiters that
// found the gateway at another address (a record changing under them) wait
// apart, each on the connection its record names.
type batchKey struct {
	reg  Registration
	addr string
}

// applyWaiter is one waitOne in a batch.
type applyWaiter struct {
	rev         int64
	deadline    time.Time // its caller's deadline, if hasDeadline
	hasDeadline bool
	done        chan error // gets the answer once; buffered
}

// waitBatch gathers the waits on one registration, so that a gateway gets
// one WaitApplied call in flight from this Pool however many Join and Leave
// calls wait on it: the call asks the highest revision its waiters want, and
// its answer (the gateway's applied revision, at least the one asked)
// releases every waiter at or below it together. Waiters that came while it
// was in flight, for a higher revision, get the next call. Its fields are
// guarded by Pool.wmu.
//
// The call is not bounded by any one waiter's deadline: each waiter gives up
// on its own context, and the call is cancelled once no waiter is left. A
// failure of the call (the gateway's status, a connection closing) is the
// answer of every waiter whose revision it asked about, as it would have
// been the answer of their own calls to that gateway at that time.
type waitBatch struct {
	rec     store.GatewayRecord
	reg     Registration
	waiters []*applyWaiter
	running bool               // runBatch is serving this batch
	cancel  context.CancelFunc // cancels the call in flight; nil between calls
}

// runBatch serves b until it has no waiters, then removes it.
func (p *Pool) runBatch(key batchKey, b *waitBatch) {
	for {
		p.wmu.Lock()
		if len(b.waiters) == 0 {
			b.running = false
			delete(p.batches, key)
			p.wmu.Unlock()
			return
		}
		var asked int64
		for _, w := range b.waiters {
			asked = max(asked, w.rev)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if d, ok := latestDeadline(b.waiters); ok {
			// The call lasts as long as the waiter that waits longest: without
			// a deadline of its own the gateway would end it at its default
			// call timeout, long before a caller's longer deadline.
			ctx, cancel = context.WithDeadline(context.Background(), d)
		}
		b.cancel = cancel
		p.wmu.Unlock()

		applied, err := p.askApplied(ctx, b.rec, b.reg, asked)

		p.wmu.Lock()
		b.cancel = nil
		cancelled := errors.Is(ctx.Err(), context.Canceled)
		cancel()
		if err != nil && !cancelled && status.Code(err) == codes.DeadlineExceeded {
			// The call's time ran out (its deadline, or the gateway's default
			// call timeout): that is no answer for a waiter whose own deadline
			// has not passed, who is asked about again; the others are past
			// theirs and get what their own call would have given them.
			now := time.Now()
			kept := b.waiters[:0]
			for _, w := range b.waiters {
				if w.hasDeadline && !now.Before(w.deadline) {
					w.done <- context.DeadlineExceeded
				} else {
					kept = append(kept, w)
				}
			}
			clear(b.waiters[len(kept):])
			b.waiters = kept
			p.wmu.Unlock()
			continue
		}
		if !cancelled || err == nil {
			upTo := asked
			if err == nil {
				upTo = max(asked, applied)
			}
			kept := b.waiters[:0]
			for _, w := range b.waiters {
				if w.rev <= upTo {
					w.done <- err
				} else {
					kept = append(kept, w)
				}
			}
			clear(b.waiters[len(kept):])
			b.waiters = kept
		}
		// A call cancelled because its waiters left answers no one; any
		// waiter that came since gets a call of its own next.
		p.wmu.Unlock()
	}
}

// leaveBatch takes w out of b (its caller gave up) and cancels the call in
// flight when no waiter is left for it.
func (p *Pool) leaveBatch(b *waitBatch, w *applyWaiter) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if i := slices.Index(b.waiters, w); i >= 0 {
		b.waiters = slices.Delete(b.waiters, i, i+1)
	}
	if len(b.waiters) == 0 && b.cancel != nil {
		b.cancel()
	}
}

// askApplied makes one WaitApplied call and returns the gateway's applied
// revision.
func (p *Pool) askApplied(ctx context.Context, rec store.GatewayRecord, r Registration, rev int64) (int64, error) {
	c, release, err := p.acquire(rec)
	if err != nil {
		return 0, err
	}
	defer release()
	resp, err := c.WaitApplied(ctx, &gatewayv1.WaitAppliedRequest{Revision: rev, GatewayId: r.Gateway, Lease: int64(r.Lease)})
	if err != nil {
		return 0, err
	}
	return resp.AppliedRevision, nil
}

// record returns the gateway's record to wait on for a change committed at
// rev. The index's record serves when the index has applied rev or later:
// it then reflects every registration up to rev, which is all a read of
// etcd made after the commit could add to. A later registration (a new
// lease, maybe a new address) that such a read might find instead cannot
// confirm a wait for the socket's lease either: the gateway answers
// FAILED_PRECONDITION there as the old address answers UNAVAILABLE, and both
// become GATEWAY_UNAVAILABLE. When the index is behind rev, or holds no
// record (deleted, or skipped as corrupt), etcd is read as the one source of
// truth, so the answers (not found, corrupt) are what they always were.
func (p *Pool) record(ctx context.Context, id string, rev int64) (store.GatewayRecord, error) {
	if rec, ok := p.cfg.Index.GatewayAsOf(id, rev); ok {
		return rec, nil
	}
	return p.cfg.Store.Gateway(clientv3.WithRequireLeader(ctx), id)
}
