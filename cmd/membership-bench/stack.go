package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
)

// stack is a membership-server (with its embedded etcd) and gateways, each its
// own process.
type stack struct {
	cfg      config
	dir      string
	etcd     string // etcd client URL
	cli      *clientv3.Client
	api      membershipv1.MembershipServiceClient
	cc       *grpc.ClientConn
	server   *exec.Cmd
	gateways []*gatewayProc

	serverPprof string
	extra       []*exec.Cmd // further membership-servers
	conns       []*grpc.ClientConn
}

type gatewayProc struct {
	id     string
	cmd    *exec.Cmd
	wsAddr string
	pprof  string
	exited chan struct{}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startStack(ctx context.Context, cfg config) (*stack, error) {
	dir, err := os.MkdirTemp("", "membership-bench")
	if err != nil {
		return nil, err
	}
	s := &stack{cfg: cfg, dir: dir, serverPprof: freeAddr()}
	fmt.Fprintf(os.Stderr, "membership-server pprof: http://%s/debug/pprof/\n", s.serverPprof)
	etcdAddr, grpcAddr := freeAddr(), freeAddr()
	s.etcd = "http://" + etcdAddr
	args := []string{"--grpc-addr", grpcAddr, "--embedded-etcd-addr", etcdAddr, "--embedded-etcd-peer-addr", freeAddr(),
		"--data-dir", filepath.Join(dir, "etcd"), "--log-level", "error", "--pprof-addr", s.serverPprof,
		"--metrics-addr", "127.0.0.1:0"}
	args = append(args, strings.Fields(cfg.serverArgs)...)
	s.server = exec.Command(filepath.Join(cfg.binDir, "membership-server"), args...)
	s.server.Stderr = os.Stderr
	if err := s.server.Start(); err != nil {
		return nil, fmt.Errorf("start membership-server (run make build first): %w", err)
	}
	s.cli, err = clientv3.New(app.EtcdConfig([]string{s.etcd}, zap.NewNop()))
	if err != nil {
		s.stop()
		return nil, err
	}
	if err := s.dialAPI(ctx, grpcAddr); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// dialAPI connects s to the membership-server at grpcAddr and waits up to
// 30 s for it to serve.
func (s *stack) dialAPI(ctx context.Context, grpcAddr string) error {
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	s.cc, s.api = cc, membershipv1.NewMembershipServiceClient(cc)
	if err := waitUntil(30*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := s.api.ListRooms(c, &membershipv1.ListRoomsRequest{PageSize: 1})
		return err == nil
	}); err != nil {
		return fmt.Errorf("membership-server not serving: %w", err)
	}
	return nil
}

// addServer starts another membership-server on the same etcd, with extra
// flags, and returns a client to it.
func (s *stack) addServer(ctx context.Context, extra ...string) (membershipv1.MembershipServiceClient, error) {
	addr := freeAddr()
	cmd := exec.Command(filepath.Join(s.cfg.binDir, "membership-server"),
		append([]string{"--grpc-addr", addr, "--etcd-endpoints", s.etcd, "--log-level", "error", "--metrics-addr", "127.0.0.1:0"}, extra...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s.extra = append(s.extra, cmd)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	s.conns = append(s.conns, cc)
	api := membershipv1.NewMembershipServiceClient(cc)
	return api, waitUntil(30*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := api.ListRooms(c, &membershipv1.ListRoomsRequest{PageSize: 1})
		return err == nil
	})
}

// addGateway starts a gateway process and waits until it is registered.
func (s *stack) addGateway(id string, extra ...string) (*gatewayProc, error) {
	g := &gatewayProc{id: id, wsAddr: freeAddr(), pprof: freeAddr(), exited: make(chan struct{})}
	args := append([]string{
		"--ws-addr", g.wsAddr, "--grpc-addr", freeAddr(), "--etcd-endpoints", s.etcd,
		"--gateway-id", id, "--pprof-addr", g.pprof, "--log-level", "error",
		// The stack's teardown stops gateways with SIGTERM: no drain to wait for.
		"--drain-timeout", "0",
	}, extra...)
	g.cmd = exec.Command(filepath.Join(s.cfg.binDir, "gateway"), args...)
	g.cmd.Stderr = os.Stderr
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { g.cmd.Wait(); close(g.exited) }()
	// As root the gateway may hold more sockets than the default limit allows.
	_ = exec.Command("prlimit", "--pid", strconv.Itoa(g.cmd.Process.Pid), "--nofile=400000:400000").Run()
	s.gateways = append(s.gateways, g)
	fmt.Fprintf(os.Stderr, "gateway %s pprof: http://%s/debug/pprof/\n", id, g.pprof)
	if err := waitUntil(30*time.Second, func() bool {
		resp, err := http.Get("http://" + g.wsAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return nil, fmt.Errorf("gateway %s not ready: %w", id, err)
	}
	return g, nil
}

func (g *gatewayProc) url() string { return "ws://" + g.wsAddr + "/ws" }

// rssKiB reads the process's resident set size.
func (g *gatewayProc) rssKiB() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", g.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// goroutines reads the gateway's goroutine count from its pprof endpoint.
func (g *gatewayProc) goroutines() (int, error) {
	resp, err := http.Get("http://" + g.pprof + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, err
	}
	_, n, _ := strings.Cut(strings.TrimSpace(line), "total ")
	return strconv.Atoi(n)
}

func (g *gatewayProc) kill() { g.cmd.Process.Signal(syscall.SIGKILL); <-g.exited }

func (s *stack) stop() {
	for _, g := range s.gateways {
		g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
		case <-time.After(10 * time.Second):
			g.kill()
		}
	}
	for _, cc := range s.conns {
		cc.Close()
	}
	for _, cmd := range s.extra {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	if s.cc != nil {
		s.cc.Close()
	}
	if s.cli != nil {
		s.cli.Close()
	}
	if s.server != nil && s.server.Process != nil {
		s.server.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.server.Process.Kill()
		}
	}
	os.RemoveAll(s.dir)
}

func waitUntil(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
