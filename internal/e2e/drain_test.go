package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// A gateway's SIGTERM drain (internal/gateway/drain.go) and the
// registration that never takes a live process's gateway id, with gateway
// binaries, a membership-server and etcd.

// lockedBuffer is a process's stderr, kept for the test while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// launchGatewayProcess starts a gateway binary like startGatewayProcessAt
// without waiting for it to be healthy; its stderr goes to the test's and
// to the returned buffer.
func launchGatewayProcess(t *testing.T, e *testutil.Etcd, id string, ttl time.Duration, wsAddr string, flags ...string) (*proc, *lockedBuffer) {
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
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = os.Stderr, io.MultiWriter(os.Stderr, out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, WSURL: "ws://" + wsAddr + "/ws", done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p, out
}

func (p *proc) httpURL(path string) string {
	return "http" + strings.TrimSuffix(strings.TrimPrefix(p.WSURL, "ws"), "/ws") + path
}

func getStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// gatewayRecordJSON is a gateway record as etcd holds it (store.GatewayRecord).
type gatewayRecordJSON struct {
	GRPCAddr      string     `json:"grpc_addr"`
	Lease         int64      `json:"lease"`
	DrainingSince *time.Time `json:"draining_since"`
}

func gatewayRecord(t *testing.T, e *testutil.Etcd, id string) (gatewayRecordJSON, bool) {
	t.Helper()
	var rec gatewayRecordJSON
	resp, err := e.Client.Get(context.Background(), store.DefaultPrefix+"gateways/"+id)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return rec, false
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	return rec, true
}

func waitExit(t *testing.T, p *proc, within time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("gateway did not exit within %v %s", within, what)
	}
	return time.Since(start)
}

// drainingGateway starts a gateway process (default --resume-window and
// --drain-timeout), gives it a socket in room r, sends SIGTERM and checks
// the drain: the socket gets 1012 "gateway restarting" and stays a member,
// detached; the gateway refuses sockets and is not ready; its record says
// draining_since; a Broadcast still reaches the socket (logged for its
// resume). The process is still running when it returns.
func drainingGateway(t *testing.T, e *testutil.Etcd, api membershipv1.MembershipServiceClient, id string) (*proc, *sock) {
	t.Helper()
	g := startGatewayProcess(t, e, id, 10*time.Second)
	s := dial(t, g.WSURL)
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case ce := <-s.Closed:
		if ce == nil || ce.Code != websocket.CloseServiceRestart || ce.Text != "gateway restarting" {
			t.Fatalf("close %v, want 1012 \"gateway restarting\"", ce)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no close frame within 10s of SIGTERM")
	}
	waitFor(t, 5*time.Second, "the socket detached", func() bool { return isDetached(api, s.ID) })
	if got := members(t, api, "r"); len(got) != 1 || got[0] != s.ID {
		t.Fatalf("members of r while draining: %v, want the detached socket", got)
	}
	if code := getStatus(g.httpURL("/healthz")); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz %d while draining, want 503", code)
	}
	_, resp, err := websocket.DefaultDialer.Dial(g.WSURL, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("new socket while draining: %v (response %v), want 503", err, resp)
	}
	rec, ok := gatewayRecord(t, e, id)
	if !ok || rec.DrainingSince == nil {
		t.Fatalf("gateway record while draining: %+v (found %v), want draining_since", rec, ok)
	}
	br, err := api.Broadcast(context.Background(), &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Event: "e", Data: text("while draining")})
	if err != nil || br.Delivered != 1 || br.FailedGateways != 0 {
		t.Fatalf("broadcast while draining: %v %v, want delivered 1 (logged for the resume)", br, err)
	}
	for name, want := range map[string]float64{"gateway_draining": 1, "gateway_drain_detached_sockets_total": 1, "gateway_detached_sockets": 1} {
		if got := processMetric(t, g, name); got != want {
			t.Errorf("%s = %v while draining, want %v", name, got, want)
		}
	}
	if got := processMetric(t, g, "gateway_drain_duration_seconds"); got <= 0 {
		t.Errorf("gateway_drain_duration_seconds = %v while draining, want > 0", got)
	}
	select {
	case <-g.done:
		t.Fatal("the gateway exited with a detached socket left")
	default:
	}
	return g, s
}

// processMetric reads one unlabeled metric from a gateway process's
// /metrics (on its --ws-addr); -1 when it is not there.
func processMetric(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	resp, err := http.Get(p.httpURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// SIGTERM drains: the socket stays resumable, and the gateway exits once
// none is left (here: the API disconnects it), long before --drain-timeout
// (25s), its lease then revoked.
func TestGatewaySIGTERMDrainsUntilNoSocketIsLeft(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g, s := drainingGateway(t, e, api, "drainer")
	if _, err := api.Disconnect(context.Background(), &membershipv1.DisconnectRequest{SocketIds: []string{s.ID}}); err != nil {
		t.Fatal(err)
	}
	took := waitExit(t, g, 10*time.Second, "of its last detached socket's end")
	t.Logf("exited %v after the last detached socket ended", took.Round(time.Millisecond))
	if !g.cmd.ProcessState.Success() {
		t.Fatalf("gateway exit: %v", g.cmd.ProcessState)
	}
	if _, ok := gatewayRecord(t, e, "drainer"); ok {
		t.Fatal("the gateway record outlived the process")
	}
}

// A second SIGTERM ends the drain at once: what is left ends as on a stop
// without a drain (its lease revoked, its memberships gone).
func TestGatewaySecondSIGTERMEndsTheDrain(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g, _ := drainingGateway(t, e, api, "drainer")
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took := waitExit(t, g, 5*time.Second, "of a second SIGTERM")
	t.Logf("exited %v after the second SIGTERM", took.Round(time.Millisecond))
	if got := members(t, api, "r"); len(got) != 0 {
		t.Fatalf("members after the drain was cut short: %v", got)
	}
}

// A process started with the id of a live one (here: still serving; a
// draining one is the same to it) does not overwrite its record: it waits,
// and registers once the other's record is gone.
func TestGatewayWaitsForThePreviousProcessWithItsID(t *testing.T) {
	e := testutil.StartEtcd(t)
	startMembershipServer(t, e)
	first := startGatewayProcess(t, e, "same", 10*time.Second)
	held, ok := gatewayRecord(t, e, "same")
	if !ok {
		t.Fatal("no record of the first process")
	}
	second, _ := launchGatewayProcess(t, e, "same", 10*time.Second, testutil.FreeAddr(t))
	time.Sleep(1500 * time.Millisecond)
	if rec, ok := gatewayRecord(t, e, "same"); !ok || rec.Lease != held.Lease || rec.GRPCAddr != held.GRPCAddr {
		t.Fatalf("record %+v while the first process lives, want the first's %+v", rec, held)
	}
	if code := getStatus(second.httpURL("/healthz")); code == http.StatusOK {
		t.Fatal("the second process is healthy while the first holds the id")
	}
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, first, 10*time.Second, "of SIGTERM")
	second.waitHealthy(t)
	rec, ok := gatewayRecord(t, e, "same")
	if !ok || rec.Lease == held.Lease || rec.GRPCAddr == held.GRPCAddr {
		t.Fatalf("record %+v after the first process ended, want the second's", rec)
	}
}

// The wait is bounded (--drain-timeout + --lease-ttl + 5s without a drain): a process whose
// id stays taken fails with an error saying so.
func TestGatewayFailsWhenItsIDStaysTaken(t *testing.T) {
	e := testutil.StartEtcd(t)
	startGatewayProcess(t, e, "same", 10*time.Second)
	second, stderr := launchGatewayProcess(t, e, "same", 2*time.Second, testutil.FreeAddr(t), "--drain-timeout", "0")
	took := waitExit(t, second, 15*time.Second, "while its id stays taken")
	if second.cmd.ProcessState.Success() {
		t.Fatal("the second process exited 0")
	}
	if out := stderr.String(); !strings.Contains(out, `gateway "same" is registered by another process`) || !strings.Contains(out, "waiting 7s") {
		t.Fatalf("stderr does not say the id is taken and for how long it waited:\n%s", out)
	}
	t.Logf("exited %v after its start", took.Round(time.Millisecond))
}
