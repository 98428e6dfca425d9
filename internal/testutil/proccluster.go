package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// ProcCluster is a multi-member etcd whose members run as separate OS
// processes of etcd's own server (built from the etcd version this module
// pins, see etcdmain/), each with a real data directory, so that a test can
// kill one with SIGKILL, as a crash would. Every member still running is
// killed, by pid, when the test ends.
type ProcCluster struct {
	t       testing.TB
	bin     string
	mu      sync.Mutex
	members []*procMember
}

type procMember struct {
	name, dir            string
	clientAddr, peerAddr string
	args                 []string
	cmd                  *exec.Cmd        // nil while stopped
	exited               chan struct{}    // closed when cmd has exited
	cli                  *clientv3.Client // to this member alone, while it runs
}

// EtcdBinary builds etcd's server from the pinned module into a directory of
// the test and returns its path.
func EtcdBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "etcd")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/socketrooms/membership/internal/testutil/etcdmain")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build etcd: %v\n%s", err, out)
	}
	return bin
}

// StartProcCluster starts n etcd members as processes on free loopback ports,
// with etcd's default heartbeat (100 ms) and election timeout (1 s), and
// waits until the cluster serves a linearizable read.
func StartProcCluster(t testing.TB, n int) *ProcCluster {
	t.Helper()
	c := &ProcCluster{t: t, bin: EtcdBinary(t)}
	t.Cleanup(c.killAll)
	var peers []string
	for i := 0; i < n; i++ {
		m := &procMember{name: fmt.Sprintf("m%d", i), dir: t.TempDir(), clientAddr: FreeAddr(t), peerAddr: FreeAddr(t)}
		c.members = append(c.members, m)
		peers = append(peers, fmt.Sprintf("%s=http://%s", m.name, m.peerAddr))
	}
	for _, m := range c.members {
		m.args = []string{
			"--name", m.name,
			"--data-dir", filepath.Join(m.dir, "data"),
			"--listen-client-urls", "http://" + m.clientAddr,
			"--advertise-client-urls", "http://" + m.clientAddr,
			"--listen-peer-urls", "http://" + m.peerAddr,
			"--initial-advertise-peer-urls", "http://" + m.peerAddr,
			"--initial-cluster", strings.Join(peers, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", "proc-cluster",
			"--log-level", "warn",
		}
		if err := c.start(m); err != nil {
			t.Fatal(err)
		}
	}
	c.WaitReady(30 * time.Second)
	return c
}

// StartEtcdProcess starts a single etcd member as a process (StartProcCluster
// with one member) and returns it as an Etcd without a Server. A test whose
// etcd must keep up with real load uses it: an etcd embedded in a test
// binary built with -race runs under the race detector, several times
// slower than the etcd a deployment runs.
func StartEtcdProcess(t testing.TB) *Etcd {
	t.Helper()
	c := StartProcCluster(t, 1)
	ep := c.Endpoints()[0]
	return &Etcd{Endpoint: ep, Client: NewClient(t, ep)}
}

func (c *ProcCluster) start(m *procMember) error {
	logf, err := os.OpenFile(filepath.Join(m.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start etcd member %s: %w", m.name, err)
	}
	m.cmd, m.exited = cmd, make(chan struct{})
	// No DialTimeout: the client connects in the background, once the member
	// listens.
	// Its first dial precedes the member's listener: a short reconnect
	// backoff keeps gRPC's default (1 s growing to 2 min) from leaving the
	// client unconnected long after the member serves.
	m.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{"http://" + m.clientAddr}, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})}})
	if err != nil {
		return err
	}
	go func(exited chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(exited)
	}(m.exited)
	return nil
}

// Endpoints are the client URLs of every member, running or not.
func (c *ProcCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, "http://"+m.clientAddr)
	}
	return eps
}

// Kill sends SIGKILL to member i's process and waits until it has exited.
func (c *ProcCluster) Kill(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd == nil {
		return
	}
	select {
	case <-m.exited: // it exited on its own: its pid may belong to another process now
	default:
		if err := syscall.Kill(m.cmd.Process.Pid, syscall.SIGKILL); err != nil {
			c.t.Errorf("kill etcd member %s (pid %d): %v", m.name, m.cmd.Process.Pid, err)
		}
		<-m.exited
	}
	m.cli.Close()
	m.cmd, m.cli = nil, nil
}

// Restart starts the killed member i again from its data directory.
func (c *ProcCluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd != nil {
		return nil
	}
	return c.start(m)
}

func (c *ProcCluster) killAll() {
	for i := range c.members {
		c.Kill(i)
	}
}

// status asks member i for its view: its own member ID, the leader's ID
// (0 while it knows none) and its raft term.
func (c *ProcCluster) status(ctx context.Context, i int) (id, leader, term uint64, err error) {
	c.mu.Lock()
	cli := c.members[i].cli
	c.mu.Unlock()
	if cli == nil {
		return 0, 0, 0, fmt.Errorf("member %s is not running", c.members[i].name)
	}
	st, err := cli.Status(ctx, "http://"+c.members[i].clientAddr)
	if err != nil {
		return 0, 0, 0, err
	}
	return st.Header.MemberId, st.Leader, st.RaftTerm, nil
}

// Leader returns the index of the member that a running member reports as
// leader, with that member's raft term; -1 if none is known.
func (c *ProcCluster) Leader(ctx context.Context) (int, uint64) {
	ids := make(map[uint64]int)
	var leader, term uint64
	for i := range c.members {
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		id, l, tm, err := c.status(sctx, i)
		cancel()
		if err != nil {
			continue
		}
		ids[id] = i
		if l != 0 && tm >= term {
			leader, term = l, tm
		}
	}
	if i, ok := ids[leader]; ok && leader != 0 {
		return i, term
	}
	return -1, term
}

// WaitLeaderAfter polls the running members until one reports a leader other
// than member old at a raft term above term, and returns that leader's index
// and when it was first seen; it fails the test after timeout.
func (c *ProcCluster) WaitLeaderAfter(old int, term uint64, timeout time.Duration) (int, time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for ctx.Err() == nil {
		if l, tm := c.Leader(ctx); l >= 0 && l != old && tm > term {
			return l, time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("no new leader within %v", timeout)
	return -1, time.Time{}
}

// WaitReady waits until every running member reports the same leader and the
// cluster serves a linearizable read; it fails the test after timeout.
func (c *ProcCluster) WaitReady(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	defer cli.Close()
	var last error
	for ctx.Err() == nil {
		last = c.ready(ctx, cli)
		if last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("etcd cluster not ready within %v: %v%s", timeout, last, c.memberLogs())
}

// memberLogs describes every started member, running or exited on its own,
// with the end of its log.
func (c *ProcCluster) memberLogs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out strings.Builder
	for _, m := range c.members {
		if m.cmd == nil {
			continue
		}
		state := "running"
		select {
		case <-m.exited:
			state = fmt.Sprintf("exited (%v)", m.cmd.ProcessState)
		default:
		}
		log, _ := os.ReadFile(filepath.Join(m.dir, "etcd.log"))
		if len(log) > 3000 {
			log = log[len(log)-3000:]
		}
		fmt.Fprintf(&out, "\nmember %s %s; end of its log:\n%s", m.name, state, log)
	}
	return out.String()
}

func (c *ProcCluster) ready(ctx context.Context, cli *clientv3.Client) error {
	var leader uint64
	for i, m := range c.members {
		c.mu.Lock()
		running := m.cmd != nil
		c.mu.Unlock()
		if !running {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		_, l, _, err := c.status(sctx, i)
		cancel()
		switch {
		case err != nil:
			return fmt.Errorf("member %s: %w", m.name, err)
		case l == 0:
			return fmt.Errorf("member %s has no leader", m.name)
		case leader != 0 && l != leader:
			return fmt.Errorf("members disagree on the leader")
		}
		leader = l
	}
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := cli.Get(gctx, "ready")
	return err
}
