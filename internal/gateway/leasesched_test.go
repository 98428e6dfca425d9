package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/socketrooms/membership/internal/testutil"
)

// After a renewal round, etcd holds the shards' leases with remaining TTLs
// spread over the renewal period, so that after a crash they expire in
// different passes of etcd's lessor rather than all in one; so does a gateway
// left at the default LeaseShards, so that a crash does not stall the cluster
// unless the operator chose one lease.
func TestLeaseShardsExpireApart(t *testing.T) {
	for _, shards := range []int{8, 0} {
		t.Run(fmt.Sprintf("shards=%d", shards), func(t *testing.T) { testLeaseShardsExpireApart(t, shards) })
	}
}

func testLeaseShardsExpireApart(t *testing.T, shards int) {
	const ttl = 12 * time.Second
	e := testutil.StartEtcd(t)
	g, _ := startGateway(t, Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", LeaseTTL: ttl, LeaseShards: shards,
		EtcdTimeout: 2 * time.Second, PingInterval: time.Hour}, e.Client)
	s := g.currentSession()
	n := len(s.leases)
	if n < 8 {
		t.Fatalf("%d lease(s) with LeaseShards %d, want at least 8", n, shards)
	}
	// Every shard has been renewed at least once one period after the grant;
	// from then on the deadlines stay spread, whenever they are read.
	_, period := leaseSchedule(ttl, n)
	time.Sleep(period + 500*time.Millisecond)
	if g.currentSession() != s {
		t.Fatal("session ended")
	}
	var remaining []int64
	for _, l := range s.leases {
		resp, err := e.Client.TimeToLive(context.Background(), l)
		if err != nil {
			t.Fatal(err)
		}
		remaining = append(remaining, resp.TTL)
	}
	// Renewed one at a time, period/n apart, the deadlines span (n-1)/n of
	// the 5 s period (a third of 12 s, and shardTTLExtra): 4.375 s or more. Renewed together they
	// would lie within 1 s.
	if spread := slices.Max(remaining) - slices.Min(remaining); spread < 2 {
		t.Fatalf("remaining TTLs of the %d leases %v s: spread %d s, want at least 2 s", n, remaining, spread)
	}
}

// leaseRenewalBlock fails every renewal of one lease (its ID, once set) and
// lets the others through, as when one lease's renewals keep failing.
type leaseRenewalBlock struct{ id atomic.Int64 }

func (b *leaseRenewalBlock) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != "/etcdserverpb.Lease/LeaseKeepAlive" {
		return cs, err
	}
	return blockedStream{cs, b}, nil
}

type blockedStream struct {
	grpc.ClientStream
	b *leaseRenewalBlock
}

func (s blockedStream) SendMsg(m any) error {
	if r, ok := m.(*pb.LeaseKeepAliveRequest); ok && r.ID != 0 && r.ID == s.b.id.Load() {
		return status.Error(codes.Unavailable, "renewal of this lease blocked by the test")
	}
	return s.ClientStream.SendMsg(m)
}

// Fencing stays exact with staggered renewals: the session ends once the proof
// of any one lease runs out, even while the others are renewed on time, and
// not before.
func TestSessionEndsWhenOneShardsProofRunsOut(t *testing.T) {
	const ttl, shards, blocked = 6 * time.Second, 8, 3
	e := testutil.StartEtcd(t)
	var block leaseRenewalBlock
	cli := interceptedClient(t, e.Endpoint, block.intercept)
	g, _ := startGateway(t, Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", LeaseTTL: ttl, LeaseShards: shards,
		EtcdTimeout: 2 * time.Second, PingInterval: time.Hour}, cli)
	s := g.currentSession()
	block.id.Store(int64(s.leases[blocked]))

	var ended int64
	select {
	case <-s.ctx.Done():
		ended = monoNow()
	case <-time.After(2 * ttl):
		t.Fatalf("session still alive %v after lease %d's renewals began to fail", 2*ttl, blocked)
	}
	until := s.until[blocked].Load()
	if ended < until {
		t.Fatalf("session ended %v before lease %d's proof ran out", time.Duration(until-ended), blocked)
	}
	// The other leases were renewed meanwhile: their proofs reach further.
	for i := range s.leases {
		if i != blocked && s.until[i].Load() <= until {
			t.Errorf("lease %d's proof ends no later than the blocked lease's: not renewed", i)
		}
	}
}

// BenchmarkLeaseRenewal is what one renewal (KeepAliveOnce, as keepAlive
// sends it) costs against a single-member etcd, one at a time: the price of
// more shards at idle, n renewals per period (leaseSchedule) per gateway.
func BenchmarkLeaseRenewal(b *testing.B) {
	e := testutil.StartEtcd(b)
	lease, err := e.Client.Grant(context.Background(), 10)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := e.Client.KeepAliveOnce(clientv3.WithRequireLeader(context.Background()), lease.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// leaseRenewalHang holds every renewal of one lease (its ID, once set) without
// an answer until the renewal's own deadline, as an overloaded etcd or a
// request lost in a dying connection would, and records whether a renewal of
// another lease was sent while one of the hung lease's was outstanding.
type leaseRenewalHang struct {
	id       atomic.Int64
	inFlight atomic.Int32
	hung     chan struct{} // closed when the first hung renewal is sent
	hungOnce sync.Once
	ended    chan struct{} // closed when the first hung renewal gives up
	endOnce  sync.Once
	other    chan struct{} // closed when another lease's renewal is sent meanwhile
	otherOne sync.Once
}

func newLeaseRenewalHang() *leaseRenewalHang {
	return &leaseRenewalHang{hung: make(chan struct{}), ended: make(chan struct{}), other: make(chan struct{})}
}

func (h *leaseRenewalHang) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != "/etcdserverpb.Lease/LeaseKeepAlive" {
		return cs, err
	}
	return &hungStream{ClientStream: cs, h: h}, nil
}

type hungStream struct {
	grpc.ClientStream
	h    *leaseRenewalHang
	hung bool
}

func (s *hungStream) SendMsg(m any) error {
	r, ok := m.(*pb.LeaseKeepAliveRequest)
	switch {
	case !ok || r.ID == 0:
	case r.ID == s.h.id.Load():
		s.hung = true
		s.h.inFlight.Add(1)
		s.h.hungOnce.Do(func() { close(s.h.hung) })
	case s.h.inFlight.Load() > 0:
		s.h.otherOne.Do(func() { close(s.h.other) })
	}
	return s.ClientStream.SendMsg(m)
}

func (s *hungStream) RecvMsg(m any) error {
	if !s.hung {
		return s.ClientStream.RecvMsg(m)
	}
	<-s.Context().Done()
	s.h.inFlight.Add(-1)
	s.h.endOnce.Do(func() { close(s.h.ended) })
	return s.Context().Err()
}

// A renewal of one lease that hangs holds back no other lease's renewal: each
// shard is renewed on its own slot while the hung request waits out its
// deadline. With one renewal loop for all shards every renewal due behind the
// hung one waited with it, and with many shards a few slow answers could add
// up to the end of the session.
func TestHungRenewalHoldsBackNoOtherShard(t *testing.T) {
	const ttl, shards, hung = 6 * time.Second, 8, 0
	e := testutil.StartEtcd(t)
	h := newLeaseRenewalHang()
	cli := interceptedClient(t, e.Endpoint, h.intercept)
	g, _ := startGateway(t, Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", LeaseTTL: ttl, LeaseShards: shards,
		EtcdTimeout: 2 * time.Second, PingInterval: time.Hour}, cli)
	s := g.currentSession()
	h.id.Store(int64(s.leases[hung]))

	select {
	case <-h.hung:
	case <-time.After(2 * ttl):
		t.Fatalf("lease %d not renewed within %v", hung, 2*ttl)
	}
	// The other shards' slots fall period/8 apart, all before the hung
	// request's deadline (one period).
	select {
	case <-h.other:
	case <-h.ended:
		t.Fatalf("no other lease renewed while lease %d's renewal hung", hung)
	}
}

// renewalOutage fails every lease renewal while on, as an etcd that answers
// none would.
type renewalOutage struct{ on atomic.Bool }

func (o *renewalOutage) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if method == "/etcdserverpb.Lease/LeaseKeepAlive" && o.on.Load() {
		return nil, status.Error(codes.Unavailable, "renewals cut off by the test")
	}
	return streamer(ctx, desc, cc, method, opts...)
}

// A sharded session outlives an etcd outage as long as a single lease does,
// two thirds of the TTL less the margin: every shard is renewed every third
// of the TTL, or granted shardTTLExtra more and renewed as much less often.
// At 12 s that is 7.5 s; an outage of 6.5 s (longer than the
// 5.5-6.25 s left to the oldest shard when several were renewed every half
// TTL) must not end it.
func TestShardedSessionOutlivesTwoThirdsOfTTLOutage(t *testing.T) {
	const ttl, shards, outage = 12 * time.Second, 8, 6500 * time.Millisecond
	e := testutil.StartEtcd(t)
	var o renewalOutage
	cli := interceptedClient(t, e.Endpoint, o.intercept)
	g, _ := startGateway(t, Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", LeaseTTL: ttl, LeaseShards: shards,
		EtcdTimeout: 2 * time.Second, PingInterval: time.Hour}, cli)
	s := g.currentSession()
	// Once every shard has been renewed on its slot, the deadlines are spread.
	_, period := leaseSchedule(ttl, shards)
	time.Sleep(period + 500*time.Millisecond)
	o.on.Store(true)
	time.Sleep(outage)
	o.on.Store(false)
	if s.ctx.Err() != nil || g.currentSession() != s {
		t.Fatalf("session ended during a %v outage of renewals; TTL %v", outage, ttl)
	}
	// Renewals resume and carry the session on.
	time.Sleep(2 * time.Second)
	if s.ctx.Err() != nil || !s.alive() {
		t.Fatalf("session ended after the outage")
	}
}

// interceptedClient is an etcd client whose streams (lease keep-alives
// among them) go through intercept, closed when the test ends.
func interceptedClient(t *testing.T, endpoint string, intercept grpc.StreamClientInterceptor) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainStreamInterceptor(intercept)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// The schedule, on a simulated timeline (grants at 0, renewals at
// firstRenewals' slots then one period apart, every renewal answered at
// once): with several shards each is granted TTL + shardTTLExtra and renewed
// every TTL/3 + shardTTLExtra, so that after a crash at any instant the
// shards' deadlines lie spread evenly over that whole period (at 16 shards
// and 10 s, at most 2 in any 500 ms pass of etcd's lessor, not 3), while no
// shard's remaining TTL ever drops below TTL - TTL/3: the etcd outage a
// session outlives is a single lease's. One lease keeps TTL and TTL/3.
func TestLeaseScheduleSpreadsDeadlinesOverPeriodPlusExtra(t *testing.T) {
	const lessorPass = 500 * time.Millisecond // etcd's lessor looks for expired leases this often
	for _, c := range []struct {
		shards  int
		ttl     time.Duration
		fullest int // most deadlines in one lessor pass after a crash
	}{
		{16, 10 * time.Second, 2},
		{64, 10 * time.Second, 8},
		{8, 12 * time.Second, 1},
		{2, 2 * time.Second, 1},
		{1, 10 * time.Second, 1},
	} {
		t.Run(fmt.Sprintf("shards=%d,ttl=%v", c.shards, c.ttl), func(t *testing.T) {
			third := c.ttl / 3
			wantGranted, wantPeriod := c.ttl+shardTTLExtra, third+shardTTLExtra
			if c.shards == 1 {
				wantGranted, wantPeriod = c.ttl, third
			}
			granted, period := leaseSchedule(c.ttl, c.shards)
			if granted != wantGranted || period != wantPeriod {
				t.Fatalf("granted %v, renewed every %v; want %v every %v", granted, period, wantGranted, wantPeriod)
			}
			first := firstRenewals(0, c.shards, period)
			deadlines := make([]int64, c.shards)
			floor := int64(c.ttl - third)
			for now := int64(0); now < int64(5*period); now += int64(time.Millisecond) {
				for i, f := range first {
					last := int64(0) // the grant
					if now >= f {
						last = f + (now-f)/int64(period)*int64(period)
					}
					deadlines[i] = last + int64(granted)
					if left := deadlines[i] - now; left < floor {
						t.Fatalf("at %v shard %d has %v left, below TTL - TTL/3 = %v", time.Duration(now), i, time.Duration(left), time.Duration(floor))
					}
				}
				if now < first[c.shards-1] || c.shards == 1 {
					continue // some shards not renewed yet: their deadlines are the grants'
				}
				// A crash now: the deadlines are period/n apart, spanning
				// the whole period but one slot.
				d := slices.Sorted(slices.Values(deadlines))
				for j := 1; j < len(d); j++ {
					gap := time.Duration(d[j] - d[j-1])
					if want := wantPeriod / time.Duration(c.shards); gap < want-time.Nanosecond || gap > want+time.Nanosecond {
						t.Fatalf("crash at %v: deadlines %v and %v apart, want %v (period %v over %d shards)", time.Duration(now), j, gap, want, wantPeriod, c.shards)
					}
				}
				if span, want := time.Duration(d[len(d)-1]-d[0]), wantPeriod*time.Duration(c.shards-1)/time.Duration(c.shards); span < want-time.Nanosecond {
					t.Fatalf("crash at %v: deadlines span %v, want %v", time.Duration(now), span, want)
				}
				for j := range d {
					in := 0
					for _, x := range d[j:] {
						if x-d[j] < int64(lessorPass) {
							in++
						}
					}
					if in > c.fullest {
						t.Fatalf("crash at %v: %d of %d deadlines within one %v lessor pass, want at most %d", time.Duration(now), in, c.shards, lessorPass, c.fullest)
					}
				}
			}
		})
	}
}

// etcd holds what the schedule grants: a sharded session's leases were
// granted TTL + shardTTLExtra, a single lease the TTL itself.
func TestShardLeasesGrantedTTLPlusExtra(t *testing.T) {
	const ttl = 5 * time.Second
	e := testutil.StartEtcd(t)
	for _, c := range []struct {
		shards  int
		granted int64
	}{{4, 6}, {1, 5}} {
		t.Run(fmt.Sprintf("shards=%d", c.shards), func(t *testing.T) {
			g, _ := startGateway(t, Config{ID: fmt.Sprintf("gw%d", c.shards), AdvertiseAddr: "127.0.0.1:1", LeaseTTL: ttl, LeaseShards: c.shards,
				EtcdTimeout: 2 * time.Second, PingInterval: time.Hour}, e.Client)
			s := g.currentSession()
			if len(s.leases) != c.shards {
				t.Fatalf("%d leases, want %d", len(s.leases), c.shards)
			}
			for i, l := range s.leases {
				resp, err := e.Client.TimeToLive(context.Background(), l)
				if err != nil {
					t.Fatal(err)
				}
				if resp.GrantedTTL != c.granted || resp.TTL <= 0 || resp.TTL > c.granted {
					t.Errorf("lease %d: %d s left of %d s granted, want up to %d of %d (--lease-ttl %v, %d shards)", i, resp.TTL, resp.GrantedTTL, c.granted, c.granted, ttl, c.shards)
				}
			}
		})
	}
}
