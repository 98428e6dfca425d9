package gatewayconn_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/gatewayconn"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// bound is how long a connection may outlive its gateway's record: the
// index's watch delay, with room for a loaded machine.
const bound = 5 * time.Second

// fixture is a Pool over a running target index of e.
type fixture struct {
	t     testing.TB
	e     *testutil.Etcd
	index *store.TargetIndex
	pool  *gatewayconn.Pool
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	e := testutil.StartEtcd(t)
	st := store.New(e.Client, "")
	x := st.NewTargetIndex(e.Client, stacktest.Logger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	p := gatewayconn.New(gatewayconn.Config{Index: x, Store: st, Logger: stacktest.Logger()})
	t.Cleanup(func() {
		p.Close()
		cancel()
		<-done
		if n := p.Open(); n != 0 {
			t.Errorf("%d connections open after Close", n)
		}
	})
	return &fixture{t: t, e: e, index: x, pool: p}
}

// blast delivers to every registered gateway and fails on any failure.
func (f *fixture) blast() {
	f.t.Helper()
	tg, err := f.index.Targets(context.Background(), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	res := f.pool.Deliver(context.Background(), tg, &gatewayv1.DeliverRequest{Event: "e", DataJson: []byte("null"), AllSockets: true})
	if res.Failed != 0 {
		f.t.Fatalf("deliver to %d gateways: %+v", len(tg.Gateways), res)
	}
}

// wantHeld waits until the pool holds exactly one connection to each of ids,
// at the address its record advertises now, and nothing else is open.
func (f *fixture) wantHeld(ids ...string) {
	f.t.Helper()
	var want map[string]string
	stacktest.WaitFor(f.t, bound, fmt.Sprintf("connections to exactly %v", ids), func() bool {
		want = map[string]string{}
		for _, id := range ids {
			rec, ok := f.index.Gateway(id)
			if !ok {
				return false
			}
			want[id] = rec.GRPCAddr
		}
		return maps.Equal(f.pool.Held(), want) && f.pool.Open() == len(ids)
	})
}

// Gateways come and go at different addresses, as pods do over rollouts:
// each stops (lease revoked), comes back under its id at a new address, or
// is new. The pool ends with connections to the live ones only, each at the
// live address.
func TestPoolHoldsConnectionsToLiveGatewaysOnly(t *testing.T) {
	f := newFixture(t)
	const n = 5
	gws := map[string]*stacktest.Gateway{}
	start := func(id string) {
		gws[id] = stacktest.StartGateway(t, f.e, id, 10*time.Second)
	}
	stop := func(id string) {
		gws[id].Stop()
		delete(gws, id)
	}
	live := func() []string { return keys(gws) }
	for i := 0; i < n; i++ {
		start(fmt.Sprintf("gw-%d", i))
	}
	f.blast()
	f.wantHeld(live()...)

	for round := 0; round < 3; round++ {
		stop(fmt.Sprintf("gw-%d", round)) // gone for good
		// Restarted at a new address.
		stop(fmt.Sprintf("gw-%d", round+1))
		start(fmt.Sprintf("gw-%d", round+1))
		start(fmt.Sprintf("gw-new-%d", round)) // a new one
		f.wantHeld(without(live(), fmt.Sprintf("gw-%d", round+1), fmt.Sprintf("gw-new-%d", round))...)
		f.blast()
		f.wantHeld(live()...)
	}
	for _, id := range live() {
		stop(id)
	}
	f.wantHeld()
}

// A gateway that registers again under its id at a new address while its old
// record still stands (the old process was cut off without revoking its
// lease) takes the id once that lease expires (registration never
// overwrites a live record of another process: store.ClaimGateway), and the
// record changes in place: the old connection is closed and the new address
// gets one.
func TestPoolReplacesConnectionOfGatewayAtNewAddress(t *testing.T) {
	f := newFixture(t)
	proxy := testutil.StartProxy(t, f.e.Endpoint)
	// A short TTL: the new process waits for the old record's lease to expire.
	old := stacktest.StartGatewayVia(t, proxy.Endpoint(), gateway.Config{ID: "gw", LeaseTTL: 3 * time.Second, EtcdTimeout: 500 * time.Millisecond})
	f.blast()
	f.wantHeld("gw")
	oldAddr := f.pool.Held()["gw"]

	proxy.Pause() // the old one can revoke nothing: its record stays
	stacktest.StartGateway(t, f.e, "gw", 10*time.Second)
	f.wantHeld() // the record changed address: the old connection goes
	f.blast()
	f.wantHeld("gw")
	if addr := f.pool.Held()["gw"]; addr == oldAddr {
		t.Fatalf("still connected to the old address %s", addr)
	}
	_ = old
}

// WaitApplied asks each gateway once, in parallel, and the first failure
// ends the call: a registration that has ended fails at once even while
// another gateway has not applied the revision, and a gateway with no
// record is store.ErrGatewayNotFound.
func TestWaitAppliedFirstFailureEndsTheWait(t *testing.T) {
	f := newFixture(t)
	a := stacktest.StartGateway(t, f.e, "gw-a", 10*time.Second)
	stacktest.StartGateway(t, f.e, "gw-b", 10*time.Second)
	recA, _ := f.index.Gateway("gw-a")
	recB, _ := f.index.Gateway("gw-b")
	ctx := context.Background()
	resp, err := f.e.Client.Get(ctx, "nothing")
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	if err := f.pool.WaitApplied(ctx, rev, []gatewayconn.Registration{
		{Gateway: "gw-a", Lease: recA.Lease}, {Gateway: "gw-b", Lease: recB.Lease}, {Gateway: "gw-a", Lease: recA.Lease},
	}); err != nil {
		t.Fatalf("wait for a revision both applied: %v", err)
	}

	// gw-b is asked for a revision far ahead (it would wait out the
	// deadline); gw-a for a lease it does not hold, which it refuses.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	begin := time.Now()
	err = f.pool.WaitApplied(wctx, rev+1_000_000, []gatewayconn.Registration{
		{Gateway: "gw-b", Lease: recB.Lease}, {Gateway: "gw-a", Lease: recA.Lease + 1},
	})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("got %v, want gw-a's FAILED_PRECONDITION", err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Fatalf("the refusal took %v: it waited for the other gateway", took)
	}

	a.Stop()
	// Until the index applies the record's deletion it still holds the old
	// address, and a wait there fails UNAVAILABLE like any unreachable
	// gateway; once it has, the answer is "not registered".
	stacktest.WaitFor(t, bound, "the index to drop gw-a's record", func() bool {
		_, ok := f.index.Gateway("gw-a")
		return !ok
	})
	err = f.pool.WaitApplied(ctx, rev, []gatewayconn.Registration{{Gateway: "gw-a", Lease: recA.Lease}})
	if !errors.Is(err, store.ErrGatewayNotFound) {
		t.Fatalf("wait on a stopped gateway: %v, want %v", err, store.ErrGatewayNotFound)
	}
}

func keys(m map[string]*stacktest.Gateway) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func without(ids []string, drop ...string) []string {
	var out []string
	for _, id := range ids {
		keep := true
		for _, d := range drop {
			keep = keep && id != d
		}
		if keep {
			out = append(out, id)
		}
	}
	return out
}
