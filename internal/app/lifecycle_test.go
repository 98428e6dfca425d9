package app

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func healthOf(t *testing.T, c healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return resp.Status
}

// Health stays NOT_SERVING until Ready closes, turns NOT_SERVING first at
// the stop (a watcher sees it while calls are still draining), and a call
// that never finishes holds the stop no longer than StopTimeout.
func TestLifecycleHealthFollowsReadyAndStop(t *testing.T) {
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	lis := listenLoopback(t)
	ready := make(chan struct{})
	lc := &Lifecycle{Health: hs, Ready: ready, StopTimeout: 300 * time.Millisecond}
	lc.GRPC("gRPC", srv, lis)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- lc.Run(ctx) }()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	for range 3 {
		if got := healthOf(t, hc); got != healthpb.HealthCheckResponse_NOT_SERVING || lc.Serving() {
			t.Fatalf("before ready: health %v, Serving %v", got, lc.Serving())
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(ready)
	deadline := time.Now().Add(5 * time.Second)
	for healthOf(t, hc) != healthpb.HealthCheckResponse_SERVING || !lc.Serving() {
		if time.Now().After(deadline) {
			t.Fatal("not SERVING after ready")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A health watch is itself a call in flight that never finishes.
	w, err := hc.Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := w.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", st, err)
	}
	cancel()
	if st, err := w.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch at stop: %v %v, want NOT_SERVING", st, err)
	}
	if lc.Serving() {
		t.Fatal("Serving during the stop")
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a call that never finishes held the stop past StopTimeout")
	}
}

// Parts start in the order added and stop in the reverse order, each after
// the later ones have fully stopped; a part that fails stops them all and
// its error is Run's.
func TestLifecycleStopOrderAndFailure(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	boom := errors.New("boom")
	fail := make(chan struct{})

	lc := &Lifecycle{StopTimeout: time.Second}
	hlis := listenLoopback(t)
	hsrv := &http.Server{Handler: http.NotFoundHandler()}
	lc.HTTP("http", hsrv, hlis)
	for _, name := range []string{"first", "second"} {
		lc.Go(name, func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond) // a slow stop still ends before the next one begins
			record("stopped " + name)
			return nil
		})
	}
	lc.Go("failing", func(ctx context.Context) error {
		select {
		case <-fail:
			return boom
		case <-ctx.Done():
			return nil
		}
	})
	ran := make(chan error, 1)
	go func() { ran <- lc.Run(context.Background()) }()
	if resp, err := http.Get("http://" + hlis.Addr().String()); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	close(fail)
	select {
	case err := <-ran:
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "failing") {
			t.Fatalf("Run = %v, want the failing part's error named", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed part did not stop the others")
	}
	if want := []string{"stopped second", "stopped first"}; strings.Join(events, ",") != strings.Join(want, ",") {
		t.Fatalf("stop order %v, want %v", events, want)
	}
	if _, err := http.Get("http://" + hlis.Addr().String()); err == nil {
		t.Fatal("HTTP server still serving after Run returned")
	}
}

// An address in use names itself, the flag that sets it and the flag's
// environment variable.
func TestListenInUseNamesAddressAndFlag(t *testing.T) {
	taken := listenLoopback(t)
	defer taken.Close()
	addr := taken.Addr().String()
	_, err := Listen(addr, "GATEWAY_", "grpc-addr")
	if err == nil {
		t.Fatal("listened on an address in use")
	}
	if want := addr + " is in use: set --grpc-addr (GATEWAY_GRPC_ADDR) to a free address"; !strings.Contains(err.Error(), want) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("error %q, want it to contain %q and wrap EADDRINUSE", err, want)
	}
	_, err = Listen("127.0.0.1:99999", "GATEWAY_", "ws-addr")
	if err == nil || !strings.HasPrefix(err.Error(), "--ws-addr 127.0.0.1:99999: ") {
		t.Fatalf("bad address: %v", err)
	}
	// A component that listens itself: matched by the failed address.
	_, err = net.Listen("tcp", addr)
	err = ListenErrorOf(err, "MEMBERSHIP_", map[string]string{"embedded-etcd-addr": "127.0.0.1:1", "embedded-etcd-peer-addr": addr})
	if want := addr + " is in use: set --embedded-etcd-peer-addr (MEMBERSHIP_EMBEDDED_ETCD_PEER_ADDR) to a free address"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want it to contain %q", err, want)
	}
}

// A Go part that ignores its context's cancellation holds the stop no longer
// than StopTimeout: Run returns without it (the process's exit ends it),
// and the parts stopped before it (added after it) are stopped all the same.
func TestLifecycleRunReturnsPastAPartThatIgnoresStop(t *testing.T) {
	stuck := make(chan struct{})
	defer close(stuck)
	hlis := listenLoopback(t)
	lc := &Lifecycle{StopTimeout: 200 * time.Millisecond}
	lc.Go("stuck", func(context.Context) error { <-stuck; return nil })
	lc.HTTP("http", &http.Server{Handler: http.NotFoundHandler()}, hlis)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- lc.Run(ctx) }()
	waitServing := time.Now().Add(5 * time.Second)
	for !lc.Serving() && time.Now().Before(waitServing) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run = %v after its context ended; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run had not returned 5s after the stop, with StopTimeout 200ms")
	}
	if _, err := http.Get("http://" + hlis.Addr().String()); err == nil {
		t.Fatal("HTTP server still serving after Run returned")
	}
}
