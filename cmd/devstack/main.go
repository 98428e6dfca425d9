// Command devstack is `make run`: it runs a local stack in the foreground, a
// membership-server with an embedded etcd and one gateway, prints every
// address once both answer ready, and stops both when it is interrupted or
// either one exits.
//
// The children die with devstack whatever ends it, and devstack with its
// parent (make): on Linux it sets PR_SET_PDEATHSIG to SIGTERM on itself, so
// a kill -9 of make alone stops the stack in order. SIGINT, SIGTERM or SIGHUP
// stop them in order: the gateway first (it closes its sockets and revokes
// its lease in etcd, which lives in the membership-server), then the
// membership-server; each is killed if it has not exited in time. When
// devstack itself dies without that (SIGKILL, a crash), the kernel kills
// them: on Linux each is started with PR_SET_PDEATHSIG set to SIGKILL, which
// the kernel delivers when the thread that started it ends (elsewhere only
// the ordered stop applies). The children run in
// process groups of their own, so a terminal's Ctrl-C reaches devstack
// alone and the stop keeps its order; a kill of devstack's group reaches
// them through the death signal.
//
// A parent-death signal was chosen over a supervisor script: a script
// that traps signals can itself be killed (SIGKILL, or a second SIGTERM once
// its trap is reset), and then nothing is left to stop the children, while
// the death signal is delivered by the kernel and needs no process alive.
//
// Configuration, as environment variables:
//
//	BIN         directory holding membership-server and gateway (.bin)
//	DATA_DIR    data directory; the embedded etcd's is DATA_DIR/etcd (.data)
//	GATEWAY_ID  the gateway's id (gw-local)
//
// MEMBERSHIP_ETCD_ENDPOINTS set runs the stack on that etcd instead of an
// embedded one: the gateway uses it too (unless GATEWAY_ETCD_ENDPOINTS is
// set) and DATA_DIR is not used.
//
// Every flag of the binaries can be set in their environment variables
// (MEMBERSHIP_GRPC_ADDR, GATEWAY_WS_ADDR, …); the addresses printed are
// read from the same variables. Arguments are passed to the
// membership-server.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Bounds on each child's stop after SIGTERM, before SIGKILL: the gateway's
// own stop takes at most about 15s (three steps of 5s), the
// membership-server's its --shutdown-timeout (10s) and then the embedded
// etcd's close.
const (
	gatewayStopWait = 20 * time.Second
	serverStopWait  = 30 * time.Second
)

func main() {
	// The death signal follows the thread that started the child: the main
	// goroutine starts both and keeps its thread until the process exits.
	runtime.LockOSThread()
	if err := dieWithParent(); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// child is a started binary; done closes when it has exited.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(name string, env []string, args ...string) (*child, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{name: filepath.Base(name), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

// stop sends SIGTERM and waits up to wait for the child to exit, then
// kills it.
func (c *child) stop(wait time.Duration) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return
	case <-time.After(wait):
	}
	fmt.Fprintf(os.Stderr, "devstack: %s did not exit %v after SIGTERM; killing it\n", c.name, wait)
	_ = c.cmd.Process.Kill()
	<-c.done
}

func getenv(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && strings.TrimSpace(v) != "" {
		return v
	}
	return def
}

// readyWait bounds the wait for both servers to answer ready: the gateway
// itself gives up on etcd after 30s.
const readyWait = 60 * time.Second

func run(args []string) error {
	bin := getenv("BIN", ".bin")
	data := getenv("DATA_DIR", ".data")
	apiAddr := getenv("MEMBERSHIP_GRPC_ADDR", "127.0.0.1:50051")
	metricsAddr := getenv("MEMBERSHIP_METRICS_ADDR", "127.0.0.1:50052")
	if v, ok := os.LookupEnv("MEMBERSHIP_METRICS_ADDR"); ok && strings.TrimSpace(v) == "" {
		metricsAddr = "" // set empty: off
	}
	// HTTP is off in the binary; a local stack turns it on for curl.
	httpAddr := getenv("MEMBERSHIP_HTTP_ADDR", "127.0.0.1:8090")
	if v, ok := os.LookupEnv("MEMBERSHIP_HTTP_ADDR"); ok && strings.TrimSpace(v) == "" {
		httpAddr = "" // set empty: off
	}
	wsAddr := getenv("GATEWAY_WS_ADDR", "127.0.0.1:8080")
	gwAPIAddr := getenv("GATEWAY_GRPC_ADDR", "127.0.0.1:50061")
	gwMetricsAddr := getenv("GATEWAY_METRICS_ADDR", wsAddr)

	// With MEMBERSHIP_ETCD_ENDPOINTS the membership-server starts no
	// embedded etcd: the gateway uses the same etcd, and no data directory
	// is involved.
	var serverArgs []string
	etcdEndpoints := getenv("MEMBERSHIP_ETCD_ENDPOINTS", "")
	var etcdLine string
	if etcdEndpoints != "" {
		etcdLine = fmt.Sprintf("etcd:            %s (external, MEMBERSHIP_ETCD_ENDPOINTS)", etcdEndpoints)
	} else {
		etcdEndpoints = getenv("MEMBERSHIP_EMBEDDED_ETCD_ADDR", "127.0.0.1:2379")
		peerAddr := getenv("MEMBERSHIP_EMBEDDED_ETCD_PEER_ADDR", "127.0.0.1:2380")
		dir := filepath.Join(data, "etcd")
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		serverArgs = []string{"--data-dir", dir}
		etcdLine = fmt.Sprintf("etcd:            %s, peers %s (embedded; data in %s; rm -rf %s after a stop to start empty)",
			etcdEndpoints, peerAddr, dir, data)
	}
	// The gateway finds etcd, and the demo page names the API, wherever
	// they were moved to.
	env := append(os.Environ(),
		"GATEWAY_ETCD_ENDPOINTS="+getenv("GATEWAY_ETCD_ENDPOINTS", etcdEndpoints),
		"GATEWAY_DEMO_API_ADDR="+getenv("GATEWAY_DEMO_API_ADDR", apiAddr))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	if httpAddr != "" {
		// The operator console rides on the HTTP API; off in the binary.
		serverArgs = append(serverArgs, "--http-addr", httpAddr, "--console")
	}
	server, err := start(filepath.Join(bin, "membership-server"), env, append(serverArgs, args...)...)
	if err != nil {
		return err
	}
	// The gateway retries until etcd answers. The demo page is off by
	// default in the binary; for a local stack it is the point.
	// One gateway: its sockets have nowhere to resume, so Ctrl-C stops it
	// at once rather than draining (--drain-timeout).
	gateway, err := start(filepath.Join(bin, "gateway"), env, "--gateway-id", getenv("GATEWAY_ID", "gw-local"), "--demo-page", "--drain-timeout", "0")
	if err != nil {
		server.stop(serverStopWait)
		return err
	}

	// The addresses are printed once both answer ready, so that a port in
	// use or an unreachable etcd shows as an error with no banner before it.
	waitCtx, cancelWait := context.WithTimeout(context.Background(), readyWait)
	defer cancelWait()
	ready := make(chan error, 1)
	// A gRPC API with TLS (perhaps mutual) cannot be probed in plaintext:
	// its /healthz on the metrics address answers the same readiness.
	probe := probe{api: apiAddr, gateway: wsAddr}
	if getenv("MEMBERSHIP_TLS_CERT_FILE", "") != "" || slices.ContainsFunc(args, func(a string) bool {
		return strings.HasPrefix(strings.TrimLeft(a, "-"), "tls-cert-file")
	}) {
		probe.api, probe.metrics = "", metricsAddr
	}
	go func() { ready <- probe.wait(waitCtx) }()

	// Stop everything as soon as either process exits. A signal repeated
	// during the stop (make passes its SIGTERM on to its child too) changes
	// nothing: every step is bounded already.
	var failed error
	for stopping := false; !stopping; {
		select {
		case err := <-ready:
			if err != nil {
				failed, stopping = err, true
				break
			}
			httpLine := ""
			if httpAddr != "" {
				httpLine = "\nHTTP API:        http://" + httpAddr + " (Connect, gRPC-Web, REST: curl http://" + httpAddr + "/v1/rooms)" +
					"\nconsole:         http://" + httpAddr + "/console/"
			}
			metrics := "off (membership-server)"
			if metricsAddr != "" {
				metrics = "http://" + metricsAddr + "/metrics (membership-server)"
			}
			fmt.Printf(`membership API:  %[1]s (grpcurl -plaintext %[1]s list)%[7]s
WebSocket:       ws://%[2]s/ws
demo page:       http://%[2]s/ (browser library: http://%[2]s/membership.js)
gateway API:     %[3]s (internal: membership-servers deliver here)
%[4]s
metrics:         %[5]s, http://%[6]s/metrics (gateway)
Ctrl-C stops everything.
`, apiAddr, wsAddr, gwAPIAddr, etcdLine, metrics, gwMetricsAddr, httpLine)
		case <-sigs:
			stopping = true
		case <-server.done:
			failed, stopping = fmt.Errorf("membership-server exited: %v", server.cmd.ProcessState), true
		case <-gateway.done:
			failed, stopping = fmt.Errorf("gateway exited: %v", gateway.cmd.ProcessState), true
		}
	}
	cancelWait()
	gateway.stop(gatewayStopWait)
	server.stop(serverStopWait)
	return failed
}

// probe finds whether the stack is ready: the membership-server's gRPC
// health SERVING at api (or, with api empty, its /healthz answering 200 at
// metrics; neither: not probed) and the gateway's /healthz 200 at gateway.
type probe struct{ api, metrics, gateway string }

// wait returns nil once both are ready, or the last failure when ctx ends
// first.
func (p probe) wait(ctx context.Context) error {
	httpc := &http.Client{Timeout: time.Second}
	healthz := func(addr string) func() error {
		return func() error {
			resp, err := httpc.Get("http://" + addr + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("/healthz: %s", resp.Status)
			}
			return nil
		}
	}
	serverReady := func() error { return nil }
	if p.metrics != "" {
		serverReady = healthz(p.metrics)
	}
	if p.api != "" {
		cc, err := grpc.NewClient(p.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		health := healthpb.NewHealthClient(cc)
		serverReady = func() error {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			resp, err := health.Check(cctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			if resp.Status != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("health %v", resp.Status)
			}
			return nil
		}
	}
	for _, c := range []struct {
		name  string
		ready func() error
	}{{"membership-server", serverReady}, {"gateway", healthz(p.gateway)}} {
		for {
			err := c.ready()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not ready within %v: %v", c.name, readyWait, err)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}
