package service_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// startServerWithMetrics serves the API over e like
// stacktest.StartMembershipServer, keeping its metrics in a registry the
// test reads.
func startServerWithMetrics(t *testing.T, e *testutil.Etcd) (membershipv1.MembershipServiceClient, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	svc := service.NewWithOptions(e.Client, "", stacktest.Logger(), service.Options{Registry: reg})
	srv := grpc.NewServer(app.ServerOptions(stacktest.Logger(), 10*time.Second, "")...)
	membershipv1.RegisterMembershipServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		svc.Close()
	})
	return membershipv1.NewMembershipServiceClient(cc), reg
}

// gauge reads a gauge without labels from reg; -1 when it is not there.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// The membership-server keeps a connection only to gateways that are
// registered now: one that stops (lease revoked) or is cut off from etcd
// (lease expired) has its connection closed within a bound, and one that
// registers again at a new address gets a new connection in place of the
// old. After gateways come and go at different addresses, the connections
// open are exactly one per live gateway.
func TestGatewayConnectionsFollowRegistrations(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, reg := startServerWithMetrics(t, e)
	ctx := context.Background()
	const gaugeName = "membership_gateway_connections"
	// bound is how long a connection may outlive its gateway's record: the
	// watch's delay, with room for a loaded machine.
	const bound = 5 * time.Second
	blast := func(wantGateways int) {
		t.Helper()
		resp, err := api.Blast(ctx, &membershipv1.BlastRequest{})
		if err != nil || resp.FailedGateways != 0 {
			t.Fatalf("blast: %v %v", resp, err)
		}
		stacktest.WaitFor(t, bound, "connections to the live gateways only", func() bool {
			return gauge(t, reg, gaugeName) == float64(wantGateways)
		})
	}
	if got := gauge(t, reg, gaugeName); got != 0 {
		t.Fatalf("%s = %v before any call, want 0", gaugeName, got)
	}

	const n = 4
	gws := make([]*stacktest.Gateway, n)
	for i := range gws {
		gws[i] = stacktest.StartGateway(t, e, "gw-"+string(rune('a'+i)), 10*time.Second)
	}
	// One more, reaching etcd through a proxy the test can cut.
	proxy := testutil.StartProxy(t, e.Endpoint)
	cut := stacktest.StartGatewayVia(t, proxy.Endpoint(), gateway.Config{ID: "gw-cut", LeaseTTL: 3 * time.Second})
	blast(n + 1)

	// Stopping revokes the lease: the record goes at once.
	gws[0].Stop()
	gws[1].Stop()
	stacktest.WaitFor(t, bound, "the stopped gateways' connections to close", func() bool {
		return gauge(t, reg, gaugeName) == n-1
	})

	// A gateway cut off from etcd keeps serving gRPC, but its lease expires
	// and its record with it.
	proxy.Pause()
	stacktest.WaitFor(t, 3*time.Second+bound, "the cut-off gateway's connection to close", func() bool {
		return gauge(t, reg, gaugeName) == n-2
	})

	// Rollouts: gateways come back under the same ids at new addresses, and
	// new ones appear; each round's connections are to the live ones only.
	for round := 0; round < 3; round++ {
		gws[0].Stop()
		gws[0] = stacktest.StartGateway(t, e, "gw-a", 10*time.Second)
		blast(n - 1)
		extra := stacktest.StartGateway(t, e, "gw-extra", 10*time.Second)
		blast(n)
		extra.Stop()
		stacktest.WaitFor(t, bound, "the extra gateway's connection to close", func() bool {
			return gauge(t, reg, gaugeName) == n-1
		})
	}
	_ = cut
}

// WAIT_FOR_APPLY on a Join of sockets on several gateways waits on the
// gateways in parallel: when each gateway takes d to apply the change after
// it is asked, the call takes about d, not one d per gateway. Each gateway's
// link to etcd is held (nothing lost, nothing delivered) from before the
// Join until d after its WaitApplied call arrives, so it really is behind.
func TestWaitForApplyWaitsOnGatewaysInParallel(t *testing.T) {
	const k = 3
	const d = time.Second
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	ctx := context.Background()

	proxies := make([]*testutil.Proxy, k)
	socks := make([]*stacktest.Sock, k)
	ids := make([]string, k)
	var mu sync.Mutex
	var asked []time.Time
	for i := range proxies {
		p := testutil.StartProxy(t, e.Endpoint)
		proxies[i] = p
		// Release this gateway's link to etcd d after it is asked to wait.
		slowApply := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if info.FullMethod == "/gateway.v1.GatewayService/WaitApplied" {
				mu.Lock()
				asked = append(asked, time.Now())
				mu.Unlock()
				time.AfterFunc(d, p.Release)
			}
			return h(ctx, req)
		}
		g := stacktest.StartGatewayServing(t, p.Endpoint(), gateway.Config{ID: "gw-" + string(rune('a'+i)), LeaseTTL: 10 * time.Second},
			grpc.UnaryInterceptor(slowApply))
		socks[i] = stacktest.Dial(t, g.WSURL)
		ids[i] = socks[i].ID
	}
	for _, p := range proxies {
		p.Hold()
	}
	start := time.Now()
	jctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := api.Join(jctx, &membershipv1.JoinRequest{SocketIds: ids, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	for _, s := range socks {
		s.Expect("joined", "r")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != k {
		t.Fatalf("%d WaitApplied calls reached the gateways, want %d (one each)", len(asked), k)
	}
	// Structural: every gateway was asked before the first could answer
	// (waiting on them one after another asks the next only once the
	// previous one, d behind, has answered), and the call waited for them.
	t.Logf("WAIT_FOR_APPLY over %d gateways each %v behind took %v", k, d, took)
	if took < d {
		t.Fatalf("took %v, less than one gateway's delay %v: the gateways were not held", took, d)
	}
	slices.SortFunc(asked, func(a, b time.Time) int { return a.Compare(b) })
	if spread := asked[k-1].Sub(asked[0]); spread >= d {
		t.Fatalf("the last of %d gateways was asked %v after the first, not before the first (%v behind) answered: they were waited on one after another", k, spread, d)
	}
}
