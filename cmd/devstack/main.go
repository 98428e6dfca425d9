// Command devstack is `make run`: it runs a local stack in the foreground, a
// membership-server with an embedded etcd and one gateway, prints their
// addresses, and stops both when it is interrupted or either one exits.
//
// The children die with devstack whatever ends it. SIGINT, SIGTERM or SIGHUP
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
// Every flag of the binaries can be set in their environment variables
// (MEMBERSHIP_GRPC_ADDR, GATEWAY_WS_ADDR, …); the addresses printed are
// read from the same variables. Arguments are passed to the
// membership-server.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
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
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func run(args []string) error {
	bin := getenv("BIN", ".bin")
	data := getenv("DATA_DIR", ".data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	apiAddr := getenv("MEMBERSHIP_GRPC_ADDR", "127.0.0.1:50051")
	etcdAddr := getenv("MEMBERSHIP_EMBEDDED_ETCD_ADDR", "127.0.0.1:2379")
	wsAddr := getenv("GATEWAY_WS_ADDR", "127.0.0.1:8080")
	metricsAddr := getenv("MEMBERSHIP_METRICS_ADDR", "127.0.0.1:50052")
	// The gateway finds the embedded etcd, and the demo page names the API,
	// wherever they were moved to.
	env := append(os.Environ(),
		"GATEWAY_ETCD_ENDPOINTS="+getenv("GATEWAY_ETCD_ENDPOINTS", etcdAddr),
		"GATEWAY_DEMO_API_ADDR="+getenv("GATEWAY_DEMO_API_ADDR", apiAddr))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	server, err := start(filepath.Join(bin, "membership-server"), env,
		append([]string{"--data-dir", filepath.Join(data, "etcd")}, args...)...)
	if err != nil {
		return err
	}
	// The gateway retries until the embedded etcd answers. The demo page is
	// off by default in the binary; for a local stack it is the point.
	gateway, err := start(filepath.Join(bin, "gateway"), env, "--gateway-id", getenv("GATEWAY_ID", "gw-local"), "--demo-page")
	if err != nil {
		server.stop(serverStopWait)
		return err
	}
	fmt.Printf(`membership API:  %[1]s (grpcurl -plaintext %[1]s list)
WebSocket:       ws://%[2]s/ws
demo page:       http://%[2]s/ (browser library: http://%[2]s/membership.js)
etcd:            %[3]s (data in %[4]s; rm -rf %[5]s after a stop to start empty)
metrics:         http://%[6]s/metrics (membership-server), http://%[2]s/metrics (gateway)
Ctrl-C stops everything.
`, apiAddr, wsAddr, etcdAddr, filepath.Join(data, "etcd"), data, metricsAddr)

	// Stop everything as soon as either process exits. A signal repeated
	// during the stop (make passes its SIGTERM on to its child too) changes
	// nothing: every step is bounded already.
	var failed error
	select {
	case <-sigs:
	case <-server.done:
		failed = fmt.Errorf("membership-server exited: %v", server.cmd.ProcessState)
	case <-gateway.done:
		failed = fmt.Errorf("gateway exited: %v", gateway.cmd.ProcessState)
	}
	gateway.stop(gatewayStopWait)
	server.stop(serverStopWait)
	return failed
}
