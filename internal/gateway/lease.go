package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/watchfollow"
)

// session is one set of leases and what hangs on them.
type session struct {
	leases []clientv3.LeaseID  // leases[0] holds the gateway record
	rec    store.GatewayRecord // the gateway record, as registered
	next   atomic.Uint64       // round-robin over leases for new sockets
	ctx    context.Context     // canceled when the session ends
	cancel context.CancelFunc

	// until[i] is the instant (see monoNow) before which leases[i] is
	// provably alive: the send time of its last successful renewal plus the
	// TTL granted, less a margin. aliveUntil is the earliest of them.
	until      []atomic.Int64
	aliveUntil atomic.Int64
	renewMu    sync.Mutex // serializes renewed

	mu        sync.Mutex
	follower  *watchfollow.Follower // the session's watch, for progress requests
	watchFrom int64

	// removals holds the session's closed sockets whose keys may still be in
	// etcd; the session's janitor removes them (removals.go).
	removals removalSet
}

func newSession(parent context.Context, leases []clientv3.LeaseID) *session {
	ctx, cancel := context.WithCancel(parent)
	return &session{leases: leases, until: make([]atomic.Int64, len(leases)), ctx: ctx, cancel: cancel}
}

// alive reports whether every lease is provably alive now. Writers ask
// before each batch: it reads the clock without a system call while it can
// (monoNowFast), never later than CLOCK_BOOTTIME.
func (s *session) alive() bool {
	return s.ctx.Err() == nil && monoNowFast() < s.aliveUntil.Load()
}

// renewed records a renewal of leases[i] whose request left at sent (a
// monoNow value): etcd renewed the lease after that, so it lives at least ttl
// past it. Each lease's renewal loop calls it for its own lease; renewMu
// keeps aliveUntil from being overwritten by an earliest computed before
// another lease's newer proof.
func (s *session) renewed(i int, sent int64, ttl time.Duration) {
	s.renewMu.Lock()
	defer s.renewMu.Unlock()
	if until := sent + int64(ttl-leaseMargin); until > s.until[i].Load() {
		s.until[i].Store(until)
	}
	earliest := s.until[0].Load()
	for j := range s.until {
		earliest = min(earliest, s.until[j].Load())
	}
	s.aliveUntil.Store(earliest)
}

// leaseForSocket picks the lease a new socket lives on.
func (s *session) leaseForSocket() clientv3.LeaseID {
	return s.leases[s.next.Add(1)%uint64(len(s.leases))]
}

// holds reports whether lease is one of the session's.
func (s *session) holds(lease clientv3.LeaseID) bool {
	for _, l := range s.leases {
		if l == lease {
			return true
		}
	}
	return false
}

func leasesText(leases []clientv3.LeaseID) string {
	parts := make([]string, len(leases))
	for i, l := range leases {
		parts[i] = fmt.Sprintf("%x", int64(l))
	}
	return strings.Join(parts, ",")
}

func (g *Gateway) currentSession() *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sess
}

func (g *Gateway) setSession(s *session) {
	g.mu.Lock()
	g.sess = s
	g.mu.Unlock()
}

var errLeaseLost = errors.New("lease can no longer be proven alive")

func (g *Gateway) startSession(parent context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(parent, g.cfg.EtcdTimeout)
	defer cancel()
	leases := make([]clientv3.LeaseID, g.cfg.LeaseShards)
	sent := make([]int64, len(leases))
	ttls := make([]time.Duration, len(leases))
	granted, _ := leaseSchedule(g.cfg.LeaseTTL, len(leases))
	for i := range leases {
		sent[i] = monoNow()
		lease, err := g.cli.Grant(ctx, int64(granted/time.Second))
		if err != nil {
			g.revoke(leases[:i]...)
			return nil, fmt.Errorf("grant lease: %w", err)
		}
		leases[i], ttls[i] = lease.ID, time.Duration(lease.TTL)*time.Second
	}
	s := newSession(parent, leases)
	for i := range leases {
		s.renewed(i, sent[i], ttls[i])
	}
	s.rec = store.GatewayRecord{
		ID:        g.cfg.ID,
		GRPCAddr:  g.cfg.AdvertiseAddr,
		Version:   g.cfg.Version,
		StartedAt: time.Now().UTC(),
		Lease:     leases[0],
	}
	// Never over another process's record (drain.go): one still draining
	// keeps its detached sockets resumable on its lease until it ends.
	rev, err := g.store.ClaimGateway(ctx, s.rec, g.prevRecordLease)
	if err != nil {
		s.cancel()
		g.revoke(leases...)
		return nil, err
	}
	g.prevRecordLease = leases[0] // Run's goroutine alone starts sessions
	// Nothing of these leases existed before rev: the index is complete up to it.
	g.applied.Advance(rev)
	g.setSession(s)
	g.hub.setOpen(true)
	g.log.Info("gateway registered", "leases", leasesText(leases), "revision", rev, "advertise", g.cfg.AdvertiseAddr)
	s.watchFrom = rev + 1
	return s, nil
}

// leaseMargin is subtracted from every lease deadline the gateway computes, for
// the request's own transit and clock rate differences.
const leaseMargin = 500 * time.Millisecond

// pinger pings every socket once per PingInterval, so that dead peers are
// noticed (their read deadline passes) without a timer per socket.
func (g *Gateway) pinger(s *session) error {
	t := time.NewTicker(g.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-t.C:
			for _, m := range g.hub.all() {
				// Socket.IO sessions keep Engine.IO's own heartbeat.
				if c, ok := m.(*client); ok {
					c.control(ctrlPing)
				}
			}
		}
	}
}

// keepAlive renews the leases and fences the session: each renewal proves its
// lease alive for one TTL from the moment its request was sent, and once the
// proof of any lease runs out the session ends, whatever etcd says or fails to
// say. Each lease is renewed once per period (leaseSchedule: a third of the
// TTL, and shardTTLExtra more with several leases, each granted as much
// more), the leases at evenly spaced slots (leasesched.go), so that after a
// crash they expire in different passes of etcd's lessor. Renewals are single requests (not the
// client's keep-alive stream) so that the send time of each is known: a reply
// that sat in a buffer while the process was frozen proves nothing beyond its
// send time plus TTL.
//
// Each lease has its own renewal loop. With one loop for all, a renewal that
// hung (a slow or overloaded etcd, a request lost in a dying connection) held
// back every renewal due behind it, up to the whole session's proof; with
// many shards the slots are period/n apart, so one slow answer delayed all
// the shards after it. Now only the lease whose renewal hangs waits, and only
// up to its own proof.
func (g *Gateway) keepAlive(s *session) error {
	_, period := leaseSchedule(g.cfg.LeaseTTL, len(s.leases))
	slots := firstRenewals(monoNow(), len(s.leases), period)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	errc := make(chan error, len(s.leases))
	for i := range s.leases {
		go func() { errc <- g.renewLoop(ctx, s, i, slots[i], period) }()
	}
	err := <-errc
	cancel() // the first to end ends the others
	for range len(s.leases) - 1 {
		<-errc
	}
	if s.ctx.Err() != nil {
		return s.ctx.Err()
	}
	return err
}

// renewLoop renews s.leases[i] at slot, slot+period, ..., retrying a failed
// renewal 100 ms later, until ctx ends or the session can no longer be proven
// alive (errLeaseLost).
func (g *Gateway) renewLoop(ctx context.Context, s *session, i int, slot int64, period time.Duration) error {
	lease := s.leases[i]
	due := slot // slot, or sooner to retry a failure
	for {
		if wait := time.Duration(due - monoNow()); wait > 0 {
			sleepCtx(ctx, wait)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		sent := monoNow()
		// A renewal is worth waiting for only while this lease's proof
		// lasts; past it the session is over anyway.
		timeout := min(period, time.Duration(s.until[i].Load()-sent))
		if timeout <= 0 {
			return errLeaseLost
		}
		rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), timeout)
		resp, err := g.cli.KeepAliveOnce(rctx, lease)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			return errLeaseLost
		case err != nil:
			g.metrics.renewFailures.Inc()
			g.log.Warn("lease renewal failed", "err", err, "lease", fmt.Sprintf("%x", int64(lease)))
			due = monoNow() + int64(100*time.Millisecond) // retry soon; the proof is running out
		case resp.TTL <= 0:
			return errLeaseLost
		default:
			s.renewed(i, sent, time.Duration(resp.TTL)*time.Second)
			slot = nextSlot(slot, monoNow(), period)
			due = slot
		}
		if !s.alive() {
			return errLeaseLost
		}
	}
}

// endSession closes every socket of s and revokes its leases.
func (g *Gateway) endSession(s *session, shutdown bool) {
	s.cancel()
	g.setSession(nil)
	g.endResumables(s)
	if shutdown {
		g.hub.closeAll(closeGoingAway, "gateway shutting down")
	} else {
		g.hub.closeAll(closeServiceRestart, "gateway lost its registration; reconnect")
	}
	g.revoke(s.leases...)
}

func (g *Gateway) revoke(leases ...clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, lease := range leases {
		if _, err := g.cli.Revoke(ctx, lease); err != nil {
			g.log.Debug("revoke lease", "err", err)
		}
	}
}
