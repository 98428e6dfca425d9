package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/testutil"
)

// startProcess runs one of the binaries with args; it is killed when the
// test ends. The returned channel closes when it has exited.
func startProcess(t *testing.T, name string, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(binary(t, name), args...)
	return cmd, startCmd(t, cmd)
}

// startCmd starts cmd (its output on the test's stderr); it is killed when
// the test ends. The returned channel closes when it has exited, its
// ProcessState set.
func startCmd(t *testing.T, cmd *exec.Cmd) <-chan struct{} {
	t.Helper()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	return exited
}

// waitServing waits until hc's server reports SERVING.
func waitServing(t *testing.T, hc healthpb.HealthClient) {
	t.Helper()
	waitFor(t, 30*time.Second, "membership-server serving", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING
	})
}

func dialPlain(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// healthStatus is the gRPC health of the process behind hc, or -1 while it
// does not answer.
func healthStatus(hc healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return -1
	}
	return resp.Status
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// hangingCall opens a call of method on cc and never sends its request: a
// client that stalls mid-request. The server's handler never runs, and a
// GracefulStop waits for the call for ever. It returns once the server has
// the call (a health check on the same connection has been answered after it).
func hangingCall(t *testing.T, cc *grpc.ClientConn, method string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method); err != nil {
		t.Fatal(err)
	}
	if healthStatus(healthpb.NewHealthClient(cc)) < 0 {
		t.Fatal("no health answer after opening the hanging call")
	}
}

// The membership-server reports NOT_SERVING (gRPC health and /healthz)
// until its broadcast target index has loaded its first listing of etcd,
// and NOT_SERVING again as soon as it stops.
func TestProcessServerServesOnlyOnceTargetIndexLoaded(t *testing.T) {
	e := testutil.StartEtcd(t)
	etcd := testutil.StartProxy(t, e.Endpoint)
	etcd.Pause() // the first listing cannot be answered
	addr, metrics := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cmd, exited := startProcess(t, "membership-server", "--grpc-addr", addr, "--etcd-endpoints", etcd.Endpoint(),
		"--etcd-skip-version-check", "--metrics-addr", metrics, "--shutdown-timeout", "2s", "--log-level", "error")
	cc := dialPlain(t, addr)
	hc := healthpb.NewHealthClient(cc)
	waitFor(t, 15*time.Second, "membership-server answering health checks", func() bool { return healthStatus(hc) >= 0 })
	for range 10 {
		if st := healthStatus(hc); st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("health %v before the target index has listed etcd, want NOT_SERVING", st)
		}
		if code := httpStatus("http://" + metrics + "/healthz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/healthz %d before the target index has listed etcd, want 503", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	etcd.Resume()
	waitFor(t, 20*time.Second, "SERVING once etcd answers", func() bool {
		return healthStatus(hc) == healthpb.HealthCheckResponse_SERVING
	})
	if code := httpStatus("http://" + metrics + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d when serving", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := membershipv1.NewMembershipServiceClient(cc).Blast(ctx, &membershipv1.BlastRequest{Event: "e"}); err != nil {
		t.Fatalf("blast once serving: %v", err)
	}

	// At SIGTERM: NOT_SERVING at once, while a call in flight drains.
	w, err := hc.Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := w.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", st, err)
	}
	hangingCall(t, cc, membershipv1.MembershipService_Join_FullMethodName)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st, err := w.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch after SIGTERM: %v %v, want NOT_SERVING", st, err)
	}
	if code := httpStatus("http://" + metrics + "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz %d while stopping, want 503", code)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatal("membership-server did not exit after its --shutdown-timeout")
	}
}

// A gateway's stop is bounded even when a call to its internal API never
// finishes.
func TestProcessGatewayStopsWithACallHanging(t *testing.T) {
	e := testutil.StartEtcd(t)
	grpcAddr := testutil.FreeAddr(t)
	g := startGatewayProcess(t, e, "hung", 10*time.Second, "--grpc-addr", grpcAddr)
	hangingCall(t, dialPlain(t, grpcAddr), gatewayv1.GatewayService_WaitApplied_FullMethodName)
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not exit within 30s of SIGTERM with a call hanging")
	}
	if !g.cmd.ProcessState.Success() {
		t.Fatalf("gateway exit: %v", g.cmd.ProcessState)
	}
}
