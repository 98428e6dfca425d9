package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/socketrooms/membership/internal/testutil"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds devstack and the two binaries it runs into one directory.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "devstack-test-bin")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator),
			"github.com/socketrooms/membership/cmd/devstack",
			"github.com/socketrooms/membership/cmd/membership-server",
			"github.com/socketrooms/membership/cmd/gateway").CombinedOutput()
		if err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// stack is a devstack started as make would start it: in a process group
// of its own (make's), on free ports.
type stack struct {
	cmd      *exec.Cmd // devstack, or the shell that started it
	done     chan struct{}
	devstack int // devstack's pid
	api, ws  string
	gwAPI    string
	http     string // the membership-server's --http-addr
	peer     string
	data     string
	banner   string
	children []int // pids of its children
}

// stackConfig changes how a stack starts.
type stackConfig struct {
	// etcd, when set, is an external etcd (MEMBERSHIP_ETCD_ENDPOINTS);
	// GATEWAY_ETCD_ENDPOINTS is then left unset.
	etcd string
	// viaShell starts devstack as the child of a shell, as make does.
	viaShell bool
}

func startStack(t *testing.T) *stack { return startStackWith(t, stackConfig{}) }

// env is the environment of a devstack on free ports.
func (s *stack) env(t *testing.T, bin string, c stackConfig) []string {
	env := append(os.Environ(),
		"BIN="+bin,
		"DATA_DIR="+s.data,
		"MEMBERSHIP_GRPC_ADDR="+s.api,
		"MEMBERSHIP_EMBEDDED_ETCD_PEER_ADDR="+s.peer,
		"MEMBERSHIP_METRICS_ADDR="+testutil.FreeAddr(t),
		"MEMBERSHIP_HTTP_ADDR="+s.http,
		"MEMBERSHIP_LOG_LEVEL=warn",
		"GATEWAY_WS_ADDR="+s.ws,
		"GATEWAY_GRPC_ADDR="+s.gwAPI,
		"GATEWAY_METRICS_ADDR="+testutil.FreeAddr(t),
		"GATEWAY_LOG_LEVEL=warn",
	)
	if c.etcd != "" {
		return append(env, "MEMBERSHIP_ETCD_ENDPOINTS="+c.etcd)
	}
	etcd := testutil.FreeAddr(t)
	return append(env, "MEMBERSHIP_EMBEDDED_ETCD_ADDR="+etcd, "GATEWAY_ETCD_ENDPOINTS="+etcd)
}

func newStack(t *testing.T) *stack {
	return &stack{api: testutil.FreeAddr(t), ws: testutil.FreeAddr(t), gwAPI: testutil.FreeAddr(t), http: testutil.FreeAddr(t),
		peer: testutil.FreeAddr(t), data: t.TempDir(), done: make(chan struct{})}
}

func startStackWith(t *testing.T, c stackConfig) *stack {
	t.Helper()
	bin := binaries(t)
	s := newStack(t)
	cmd := exec.Command(filepath.Join(bin, "devstack"))
	if c.viaShell {
		cmd = exec.Command("sh", "-c", `"$0" & wait`, filepath.Join(bin, "devstack"))
	}
	cmd.Env = s.env(t, bin, c)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	printed := make(chan string, 1)
	go func() {
		// Children that outlive devstack hold its stdout open: reading
		// stops when Wait closes the pipe, not at end of file.
		var text strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			text.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "Ctrl-C") {
				printed <- text.String()
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		for _, pid := range append(s.children, s.devstack) {
			if pid != 0 && alive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	select {
	case s.banner = <-printed:
	case <-time.After(60 * time.Second):
		t.Fatal("devstack printed no addresses")
	}
	// Printed once both answer ready, not before.
	s.checkServing(t)
	for _, want := range []string{"membership API:  " + s.api, "ws://" + s.ws + "/ws", s.gwAPI} {
		if !strings.Contains(s.banner, want) {
			t.Errorf("devstack printed\n%s\nwithout %q", s.banner, want)
		}
	}
	s.devstack = cmd.Process.Pid
	if c.viaShell {
		if kids := childrenOf(t, cmd.Process.Pid, "devstack"); len(kids) == 1 {
			s.devstack = kids[0]
		} else {
			t.Fatalf("the shell has children %v, want devstack", kids)
		}
	}
	s.children = childrenOf(t, s.devstack, "membership-server", "gateway")
	if len(s.children) != 2 {
		t.Fatalf("devstack has children %v, want membership-server and gateway", s.children)
	}
	return s
}

// checkServing fails the test unless the membership-server answers
// SERVING and the gateway's /healthz 200, now.
func (s *stack) checkServing(t *testing.T) {
	t.Helper()
	cc, err := grpc.NewClient(s.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("membership-server health after the banner: %v, %v; want SERVING", resp, err)
	}
	r, err := http.Get("http://" + s.ws + "/healthz")
	if err != nil {
		t.Fatalf("gateway /healthz after the banner: %v", err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("gateway /healthz after the banner: %s", r.Status)
	}
}

// connect opens a socket on the stack's gateway and reads its first frame.
func (s *stack) connect(t *testing.T) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+s.ws+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	return conn
}

// childrenOf lists the processes whose parent is pid and whose program is
// one of names.
func childrenOf(t *testing.T, pid int, names ...string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(p); !ok || ppid != pid {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		argv0, _, _ := strings.Cut(string(cmdline), "\x00")
		if slices.Contains(names, filepath.Base(argv0)) {
			kids = append(kids, p)
		}
	}
	return kids
}

// parentOf reads a process's parent from /proc/PID/stat.
func parentOf(pid int) (ppid int, ok bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// "pid (comm) state ppid …"; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(raw), ')')
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, err == nil
}

// alive: some thread of the process has not exited. A process nobody has
// reaped yet is dead all the same, but its leader turns zombie before its
// other threads have exited and released its listeners, so every thread is
// checked.
func alive(pid int) bool {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return false
	}
	for _, task := range tasks {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(raw), ')')
		if f := strings.Fields(string(raw[i+1:])); len(f) > 0 && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkAllGone fails the test for every child still alive after a grace
// period, and checks that nothing holds the embedded etcd's peer port, which
// the next `make run` needs, any more.
func (s *stack) checkAllGone(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var survivors []int
		for _, pid := range s.children {
			if alive(pid) {
				survivors = append(survivors, pid)
			}
		}
		if len(survivors) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("children %v still running 10s after devstack ended", survivors)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing listens there any more. (Binding it again is no test: the
	// port came from the ephemeral range, and any outgoing connection on
	// the machine may have taken it as its own port since.)
	if conn, err := net.DialTimeout("tcp", s.peer, time.Second); err == nil {
		conn.Close()
		t.Fatalf("after the stack ended, %s still accepts connections", s.peer)
	}
}

// A kill -9 of make's process group (devstack's) leaves no server behind.
func TestKilledDevstackLeavesNoChild(t *testing.T) {
	s := startStack(t)
	s.connect(t)
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.done
	s.checkAllGone(t)
}

// A SIGTERM to the group, passed on a second time as make does, with a
// socket connected: the gateway closes its socket (1001, it stopped in
// order), everything exits and devstack reports success.
func TestTerminatedDevstackStopsInOrder(t *testing.T) {
	s := startStack(t)
	conn := s.connect(t)
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	s.cmd.Process.Signal(syscall.SIGTERM)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _, err := conn.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseGoingAway {
		t.Errorf("socket ended with %v, want close 1001", err)
	}
	select {
	case <-s.done:
	case <-time.After(60 * time.Second):
		t.Fatal("devstack did not exit within 60s of SIGTERM")
	}
	if !s.cmd.ProcessState.Success() {
		t.Errorf("devstack exit: %v", s.cmd.ProcessState)
	}
	s.checkAllGone(t)
}

// The banner comes once both servers answer ready (startStack checks that)
// and names every address the stack listens on.
func TestBannerListsEveryAddress(t *testing.T) {
	s := startStack(t)
	for _, want := range []string{s.api, s.ws, s.gwAPI, "http://" + s.http, s.peer, filepath.Join(s.data, "etcd")} {
		if !strings.Contains(s.banner, want) {
			t.Errorf("devstack printed\n%s\nwithout %q", s.banner, want)
		}
	}
	// make run's HTTP API answers (the binary's default is off).
	resp, err := http.Get("http://" + s.http + "/v1/rooms")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/rooms on the stack's HTTP API: %s", resp.Status)
	}
	// make run turns the operator console on, and the banner names it.
	if want := "http://" + s.http + "/console/"; !strings.Contains(s.banner, want) {
		t.Errorf("devstack printed\n%s\nwithout the console at %s", s.banner, want)
	}
	resp, err = http.Get("http://" + s.http + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /console/ on the stack's HTTP API: %s", resp.Status)
	}
}

// A port in use stops the stack with the error and no "ready" banner.
func TestPortInUsePrintsNoBanner(t *testing.T) {
	bin := binaries(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	s := newStack(t)
	s.api = taken.Addr().String()
	cmd := exec.Command(filepath.Join(bin, "devstack"))
	cmd.Env = s.env(t, bin, stackConfig{})
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatal("devstack still running 60s after its API address was found in use")
	}
	if err == nil {
		t.Error("devstack succeeded with its API address in use")
	}
	if want := s.api + " is in use"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr\n%s\nwithout %q", stderr.String(), want)
	}
	if strings.Contains(stdout.String(), "membership API:") {
		t.Errorf("devstack printed its banner although the stack never came up:\n%s", stdout.String())
	}
}

// With MEMBERSHIP_ETCD_ENDPOINTS (an etcd already running) the gateway uses
// that etcd too, the banner names it and no data directory is made.
func TestExternalEtcd(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := startStackWith(t, stackConfig{etcd: e.Endpoint})
	if !strings.Contains(s.banner, e.Endpoint) || strings.Contains(s.banner, "data in") {
		t.Errorf("devstack printed\n%s\nwant it to name %s and no data directory", s.banner, e.Endpoint)
	}
	if _, err := os.Stat(filepath.Join(s.data, "etcd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s: %v; want no embedded etcd data", filepath.Join(s.data, "etcd"), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.Client.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	registered := false
	for _, kv := range resp.Kvs {
		registered = registered || strings.Contains(string(kv.Key), "gw-local")
	}
	if !registered {
		t.Errorf("the external etcd holds no key of gateway gw-local (%d keys)", len(resp.Kvs))
	}
}

// A kill -9 of make's pid alone (not its group) stops devstack (its parent
// died) and devstack stops both servers.
func TestKilledParentStopsDevstack(t *testing.T) {
	s := startStackWith(t, stackConfig{viaShell: true})
	if err := syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.done
	waitFor(t, 60*time.Second, "devstack to exit after its parent was killed", func() bool { return !alive(s.devstack) })
	s.checkAllGone(t)
}
