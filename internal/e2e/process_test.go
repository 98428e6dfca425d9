package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/testutil"
)

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binary builds the project's commands once per test run and returns the path
// of one of them.
func binary(t *testing.T, name string) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "membership-e2e-bin")
		if binErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator),
			"github.com/socketrooms/membership/cmd/gateway",
			"github.com/socketrooms/membership/cmd/membership-server").CombinedOutput()
		if err != nil {
			binErr = &buildError{out: string(out), err: err}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, name)
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

func removeBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// proc is a gateway running as its own process.
type proc struct {
	cmd   *exec.Cmd
	WSURL string
	done  chan struct{}
}

func startGatewayProcess(t *testing.T, e *testutil.Etcd, id string, ttl time.Duration, flags ...string) *proc {
	t.Helper()
	return startGatewayProcessAt(t, e, id, ttl, testutil.FreeAddr(t), flags...)
}

// startGatewayProcessAt is startGatewayProcess with the WebSocket address
// given, so that a restarted gateway is where its clients reconnect to.
func startGatewayProcessAt(t *testing.T, e *testutil.Etcd, id string, ttl time.Duration, wsAddr string, flags ...string) *proc {
	t.Helper()
	args := []string{
		"--ws-addr", wsAddr,
		"--grpc-addr", testutil.FreeAddr(t),
		"--etcd-endpoints", e.Endpoint,
		"--lease-ttl", ttl.String(),
		"--gateway-id", id,
		"--log-level", "warn",
	}
	cmd := exec.Command(binary(t, "gateway"), append(args, flags...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, WSURL: "ws://" + wsAddr + "/ws", done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	p.waitHealthy(t)
	return p
}

func (p *proc) waitHealthy(t *testing.T) {
	t.Helper()
	url := "http" + strings.TrimSuffix(strings.TrimPrefix(p.WSURL, "ws"), "/ws") + "/healthz"
	waitFor(t, 15*time.Second, "gateway process healthy", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func TestGatewayKilledLosesItsMembershipsWithinTTL(t *testing.T) {
	for _, shards := range []string{"1", "3"} {
		t.Run("lease shards "+shards, func(t *testing.T) { testGatewayKilled(t, shards) })
	}
}

func testGatewayKilled(t *testing.T, shards string) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	const ttl = 2 * time.Second
	doomed := startGatewayProcess(t, e, "doomed", ttl, "--lease-shards", shards)
	survivor := startGateway(t, e, "survivor", 10*time.Second)
	ctx := context.Background()

	var victims []*sock
	for i := 0; i < 6; i++ {
		s := dial(t, doomed.WSURL)
		for _, room := range []string{"r", "s"} {
			if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: room}); err != nil {
				t.Fatal(err)
			}
		}
		victims = append(victims, s)
	}
	leases := map[string]bool{}
	for _, v := range victims {
		leases[strings.Split(v.ID, ".")[1]] = true
	}
	if want := map[string]int{"1": 1, "3": 3}[shards]; len(leases) != want {
		t.Fatalf("6 sockets over %d leases, want %d", len(leases), want)
	}
	keeper := dial(t, survivor.WSURL)
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: keeper.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	if got := members(t, api, "r"); len(got) != 7 {
		t.Fatalf("members before the crash: %v", got)
	}

	if err := doomed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Several lease shards are each granted 1 s more than --lease-ttl
	// (internal/gateway/leasesched.go); etcd's lessor revokes an expired
	// lease within its next 500 ms pass.
	within := ttl + time.Second
	if shards != "1" {
		within += time.Second
	}
	waitFor(t, within, "the dead gateway's memberships to go", func() bool {
		return len(members(t, api, "r")) == 1 && len(members(t, api, "s")) == 0
	})
	t.Logf("memberships gone %v after SIGKILL (lease TTL %v)", time.Since(killed).Round(time.Millisecond), ttl)

	if got := members(t, api, "r"); got[0] != keeper.ID {
		t.Fatalf("survivor's membership lost: %v", got)
	}
	for _, s := range victims {
		_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"})
		wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
	}
	br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r", "s"}})
	if err != nil || br.Delivered != 1 || br.FailedGateways != 0 {
		t.Fatalf("broadcast after the crash: %v %v", br, err)
	}
	keeper.Expect("joined", "r")
	keeper.Expect("message", "r")
}

// Without a drain (--drain-timeout 0; drain_test.go has the drain).
func TestGatewaySIGTERMClosesSocketsAndRemovesThem(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGatewayProcess(t, e, "leaving", 30*time.Second, "--drain-timeout", "0")
	s := dial(t, g.WSURL)
	if _, err := api.Join(context.Background(), &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not exit on SIGTERM")
	}
	if ce := <-s.Closed; ce == nil || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("close frame %v, want 1001", ce)
	}
	// Revoking the lease removed everything at once, long before the TTL.
	if got := members(t, api, "r"); len(got) != 0 {
		t.Fatalf("members after shutdown: %v", got)
	}
}

func TestFrozenGatewayNeverDeliversOnExpiredMemberships(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	const ttl = 2 * time.Second
	g := startGatewayProcess(t, e, "frozen", ttl)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")

	if err := g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer g.cmd.Process.Signal(syscall.SIGCONT)
	// Begun while the membership still holds, this broadcast targets the frozen
	// gateway and waits for it.
	type result struct {
		resp *membershipv1.BroadcastResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp, err := api.Broadcast(bctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}})
		done <- result{resp, err}
	}()
	// Its lease shards were each granted 1 s more than the TTL.
	waitFor(t, ttl+3*time.Second, "the frozen gateway's leases to expire", func() bool {
		return len(members(t, api, "r")) == 0
	})
	time.Sleep(200 * time.Millisecond)
	if err := g.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	for f := range s.Frames {
		if f.Type == "message" {
			t.Fatalf("delivered %+v on an expired membership", f)
		}
	}
	if ce := <-s.Closed; ce == nil || ce.Code != websocket.CloseServiceRestart {
		t.Fatalf("close %v, want 1012", ce)
	}
	r := <-done
	if r.err != nil || r.resp.Delivered != 0 || r.resp.FailedGateways != 1 {
		t.Fatalf("broadcast to the frozen gateway: %v %v", r.resp, r.err)
	}
	// It registers again with a new lease and serves new sockets.
	g.waitHealthy(t)
	s2 := dial(t, g.WSURL)
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s2.ID, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
	if br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}}); err != nil || br.Delivered != 1 {
		t.Fatalf("broadcast after re-registration: %v %v", br, err)
	}
}

func TestWaitForApplyPastDeadlineKeepsTheChange(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGatewayProcess(t, e, "stalled", 10*time.Second)
	s := dial(t, g.WSURL)
	if err := g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer g.cmd.Process.Signal(syscall.SIGCONT)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	wantStatus(t, err, codes.DeadlineExceeded, "APPLY_TIMEOUT", "")
	if got := members(t, api, "r"); len(got) != 1 || got[0] != s.ID {
		t.Fatalf("the committed join is gone: %v", got)
	}
	if err := g.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")
}

// startServerProcess runs a membership-server binary against e and returns a
// client to it and its process.
func startServerProcess(t *testing.T, endpoints string, flags ...string) (membershipv1.MembershipServiceClient, *exec.Cmd) {
	t.Helper()
	c, cmd, _ := startServerProcessAt(t, endpoints, flags...)
	return c, cmd
}

// startServerProcessAt is startServerProcess that also returns the API's address.
func startServerProcessAt(t *testing.T, endpoints string, flags ...string) (membershipv1.MembershipServiceClient, *exec.Cmd, string) {
	t.Helper()
	api, hc, cmd, addr := launchServerProcess(t, endpoints, flags...)
	waitServing(t, hc)
	return api, cmd, addr
}

// launchServerProcess starts a membership-server process like
// startServerProcessAt, without waiting for it to serve.
func launchServerProcess(t *testing.T, endpoints string, flags ...string) (membershipv1.MembershipServiceClient, healthpb.HealthClient, *exec.Cmd, string) {
	t.Helper()
	addr := testutil.FreeAddr(t)
	args := append([]string{"--grpc-addr", addr, "--etcd-endpoints", endpoints, "--log-level", "error",
		"--metrics-addr", "127.0.0.1:0"}, flags...)
	cmd, _ := startProcess(t, "membership-server", args...)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return membershipv1.NewMembershipServiceClient(cc), healthpb.NewHealthClient(cc), cmd, addr
}

func TestClientsRetryingOnAnotherReplicaEndWithIntendedState(t *testing.T) {
	e := testutil.StartEtcd(t)
	replicas := make([]membershipv1.MembershipServiceClient, 2)
	var victim *exec.Cmd
	replicas[0], victim = startServerProcess(t, e.Endpoint)
	replicas[1], _ = startServerProcess(t, e.Endpoint)
	g := startGateway(t, e, "gw1", 10*time.Second)

	const workers, opsEach, rooms = 8, 60, 4
	socks := make([]*sock, workers)
	for i := range socks {
		socks[i] = dial(t, g.WSURL)
	}
	var killOnce sync.Once
	var opsDone atomic.Int64
	var retried atomic.Int64
	intended := make([]map[string]bool, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		intended[w] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			cur := w % 2
			for op := 0; op < opsEach; op++ {
				room := fmt.Sprintf("room-%d", rng.IntN(rooms))
				join := rng.IntN(2) == 0
				// An idempotent call, retried on the other replica until it lands.
				for attempt := 0; ; attempt++ {
					if attempt == 50 {
						t.Errorf("worker %d: op %d never succeeded", w, op)
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					var err error
					if join {
						_, err = replicas[cur].Join(ctx, &membershipv1.JoinRequest{SocketId: socks[w].ID, Room: room})
					} else {
						_, err = replicas[cur].Leave(ctx, &membershipv1.LeaveRequest{SocketId: socks[w].ID, Room: room})
					}
					cancel()
					if err == nil {
						break
					}
					if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
						t.Errorf("worker %d: %v", w, err)
						return
					}
					retried.Add(1)
					cur = 1 - cur
					time.Sleep(10 * time.Millisecond)
				}
				intended[w][room] = join
				if opsDone.Add(1) == workers*opsEach/3 {
					killOnce.Do(func() { victim.Process.Signal(syscall.SIGKILL) })
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for r := 0; r < rooms; r++ {
		room := fmt.Sprintf("room-%d", r)
		got := members(t, replicas[1], room)
		for w, s := range socks {
			if intended[w][room] != hasMember(got, s.ID) {
				t.Errorf("%s: socket %d member=%v, intended %v", room, w, hasMember(got, s.ID), intended[w][room])
			}
		}
	}
	t.Logf("%d ops by %d clients, replica killed after a third; %d calls retried on the other replica", workers*opsEach, workers, retried.Load())
}

// A gateway restarted on the address of one that just crashed must not take
// the dead one's deliveries: its sockets would get messages twice, and a
// WAIT_FOR_APPLY for the dead one's sockets a false "applied".
func TestReusedGatewayAddressGetsOnlyItsOwnDeliveries(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	addr := testutil.FreeAddr(t)
	old := startGatewayProcess(t, e, "old", 10*time.Second, "--grpc-addr", addr)
	gone := dial(t, old.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: gone.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	old.cmd.Process.Signal(syscall.SIGKILL)
	<-old.done
	// Within the dead one's TTL, so its records are still in etcd.
	next := startGatewayProcess(t, e, "new", 10*time.Second, "--grpc-addr", addr)
	s := dial(t, next.WSURL)
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")
	bl, err := api.Blast(ctx, &membershipv1.BlastRequest{Event: "once"})
	if err != nil || bl.Delivered != 1 || bl.FailedGateways != 1 {
		t.Fatalf("blast: %v %v", bl, err)
	}
	br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Event: "twice?"})
	if err != nil || br.Delivered != 1 || br.FailedGateways != 1 {
		t.Fatalf("broadcast: %v %v", br, err)
	}
	if f := s.Expect("message", ""); f.Event != "once" {
		t.Fatalf("%+v", f)
	}
	if f := s.Expect("message", "r"); f.Event != "twice?" {
		t.Fatalf("%+v", f)
	}
	s.ExpectNothing(300 * time.Millisecond)
	_, err = api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: gone.ID, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	wantStatus(t, err, codes.Unavailable, "GATEWAY_UNAVAILABLE", "")
}
