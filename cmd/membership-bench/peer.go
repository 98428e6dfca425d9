package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/store"
)

// peerRounds is how many interleaved rounds the peer scenario runs; each
// figure is the median over them.
const peerRounds = 3

// peerBacklog bounds the messages published but not yet received, per
// socket, in the fan-out phase, the same for both systems: a publisher
// faster than the sockets' readers would otherwise only fill queues (and
// get sockets dropped) instead of measuring delivery.
const peerBacklog = 32

// peerProfileSeconds is the length of the CPU profiles -peer-profile-dir
// records (and of the extra, unmeasured Join/Leave phase they are taken in).
const peerProfileSeconds = 10

// etcdProc is etcd as its own process (--bin-dir/etcd, built from
// internal/testutil/etcdmain at the version go.mod pins), as production runs
// it beside stateless membership-servers, with its pprof endpoint on.
type etcdProc struct {
	cmd    *exec.Cmd
	dir    string
	addr   string // client address, also serving /debug/pprof
	exited chan struct{}
}

// startEtcd starts a single-member etcd with the settings the
// membership-server gives its embedded one: request and transaction limits
// from internal/store, periodic compaction keeping an hour.
func startEtcd(binDir string) (*etcdProc, error) {
	dir, err := os.MkdirTemp("", "membership-bench-etcd")
	if err != nil {
		return nil, err
	}
	e := &etcdProc{dir: dir, addr: freeAddr(), exited: make(chan struct{})}
	peer := "http://" + freeAddr()
	client := "http://" + e.addr
	e.cmd = exec.Command(filepath.Join(binDir, "etcd"),
		"--name", "bench", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer, "--enable-pprof", "--log-level", "error",
		"--max-request-bytes", strconv.Itoa(store.DefaultMaxRequestBytes),
		"--max-txn-ops", strconv.Itoa(store.DefaultMaxTxnOps),
		"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h")
	// Its log goes to a file, read back only if it does not start: at
	// shutdown etcd logs closed listeners as errors.
	logFile, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	e.cmd.Stderr = logFile
	if err := e.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start etcd (make bench builds it into %s): %w", binDir, err)
	}
	go func() { e.cmd.Wait(); close(e.exited) }()
	if err := waitUntil(30*time.Second, func() bool {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		log, _ := os.ReadFile(logFile.Name())
		e.stop()
		return nil, fmt.Errorf("etcd not serving: %w; its log:\n%s", err, log)
	}
	return e, nil
}

func (e *etcdProc) stop() {
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-e.exited
	}
	os.RemoveAll(e.dir)
}

// startPeerStack starts a membership-server against etcd (no embedded etcd),
// with no gateway yet.
func startPeerStack(ctx context.Context, cfg config, e *etcdProc) (*stack, error) {
	dir, err := os.MkdirTemp("", "membership-bench")
	if err != nil {
		return nil, err
	}
	s := &stack{cfg: cfg, dir: dir, etcd: "http://" + e.addr, serverPprof: freeAddr()}
	grpcAddr := freeAddr()
	args := []string{"--grpc-addr", grpcAddr, "--etcd-endpoints", s.etcd, "--log-level", "error",
		"--pprof-addr", s.serverPprof, "--metrics-addr", "127.0.0.1:0"}
	args = append(args, strings.Fields(cfg.serverArgs)...)
	s.server = exec.Command(filepath.Join(cfg.binDir, "membership-server"), args...)
	s.server.Stderr = os.Stderr
	if err := s.server.Start(); err != nil {
		return nil, fmt.Errorf("start membership-server: %w", err)
	}
	if s.cli, err = clientv3.New(app.EtcdConfig([]string{s.etcd}, zap.NewNop())); err != nil {
		s.stop()
		return nil, err
	}
	if err := s.dialAPI(ctx, grpcAddr); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// stopGateway stops one gateway of s (SIGTERM, then SIGKILL after 10 s) and
// forgets it.
func (s *stack) stopGateway(g *gatewayProc) {
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		g.kill()
	}
	for i, x := range s.gateways {
		if x == g {
			s.gateways = append(s.gateways[:i], s.gateways[i+1:]...)
			break
		}
	}
}

func rssOf(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
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

// cpuOf is the CPU time the processes have used together.
func cpuOf(pids []int) time.Duration {
	var t time.Duration
	for _, p := range pids {
		t += processCPU(p)
	}
	return t
}

// peerRetries counts the connections and subscribe calls eachParallel tried
// again: on a loaded machine a gateway may refuse a socket while it
// registers again (its lease lost), and a client would reconnect.
var peerRetries atomic.Int64

// eachParallel calls f for 0…n-1, parallel at a time, up to 20 times each
// (500 ms apart, counted in peerRetries: a gateway registering again after
// its lease was lost may take seconds), and returns the results and the
// first error; the source address it hands f (for dialing) rotates over
// 127.0.0.1… every 5,000 calls, as dialMany's does.
func eachParallel[T any](n, parallel int, f func(i int, local net.IP) (T, error)) ([]T, error) {
	out := make([]T, n)
	var first error
	var mu sync.Mutex
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				k := i / 5000
				local := net.IPv4(127, 0, byte(1+k/250), byte(1+k%250))
				s, err := f(i, local)
				for try := 1; err != nil && try < 20; try++ {
					peerRetries.Add(1)
					time.Sleep(500 * time.Millisecond)
					s, err = f(i, local)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("connection %d: %w", i, err)
					}
					mu.Unlock()
					continue
				}
				out[i] = s
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return out, first
}

// countStamps counts the publications in a frame by their "t": field (a
// Centrifugo frame may carry several, newline-separated) and samples the
// delivery latency of one in 20.
func countStamps(data []byte, received *atomic.Int64, lat *latencies) {
	for {
		i := bytes.Index(data, []byte(`"t":`))
		if i < 0 {
			return
		}
		j := i + 4
		k := j
		for k < len(data) && (data[k] >= '0' && data[k] <= '9' || data[k] == '.' || data[k] == 'e' || data[k] == '+') {
			k++
		}
		if received.Add(1)%20 == 0 {
			if v, err := strconv.ParseFloat(string(data[j:k]), 64); err == nil {
				lat.add(time.Duration(time.Now().UnixNano() - int64(v)))
			}
		}
		data = data[k:]
	}
}

// fanoutResult is one system's fan-out phase.
type fanoutResult struct {
	rate      float64       // messages received by the sockets per second
	cpuPerMsg time.Duration // server-side CPU per message received
	p99       time.Duration
	received  int64
}

// runFanout publishes with broadcasters concurrent publishers for d to a room
// of n sockets, at most peerBacklog messages per socket outstanding, then
// waits for the sockets to catch up (giving up after 10 s without progress).
// CPU is the servers' (pids) from the first publication to the last receipt.
func runFanout(ctx context.Context, d time.Duration, n int, received *atomic.Int64, lat *latencies, pids []int,
	publish func(ctx context.Context, t int64) error) fanoutResult {
	received.Store(0)
	lat.mu.Lock()
	lat.d = nil
	lat.mu.Unlock()
	var sent atomic.Int64
	cpu0 := cpuOf(pids)
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for b := 0; b < broadcasters; b++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if sent.Load()*int64(n)-received.Load() > peerBacklog*int64(n) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err := publish(ctx, time.Now().UnixNano()); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	want := sent.Load() * int64(n)
	last, lastChange := received.Load(), time.Now()
	for received.Load() < want && time.Since(lastChange) < 10*time.Second {
		time.Sleep(10 * time.Millisecond)
		if r := received.Load(); r != last {
			last, lastChange = r, time.Now()
		}
	}
	end := time.Now()
	if received.Load() < want {
		end = lastChange
	}
	cpu := cpuOf(pids) - cpu0
	r := fanoutResult{received: received.Load(), p99: lat.pct(99)}
	if r.received > 0 {
		r.rate = float64(r.received) / end.Sub(start).Seconds()
		r.cpuPerMsg = cpu / time.Duration(r.received)
	}
	if r.received < want {
		fmt.Printf("<!-- fan-out: %d of %d messages received -->\n", r.received, want)
	}
	return r
}

// peerFigures collects one figure per round for each row of the table, in
// the row's unit ("" for a count per second). The unit "-" marks a row of
// ours without a Centrifugo counterpart (WAIT_FOR_APPLY): the Centrifugo
// figure added with it is the one its ratio is taken against. The unit "µs-"
// marks a row of ours alone, in µs, with no ratio.
type peerFigures struct {
	rows  []string
	ours  map[string][]float64
	cents map[string][]float64
	unit  map[string]string
}

func (f *peerFigures) add(row, unit string, ours, cent float64) {
	if f.ours == nil {
		f.ours, f.cents, f.unit = map[string][]float64{}, map[string][]float64{}, map[string]string{}
	}
	if _, ok := f.ours[row]; !ok {
		f.rows = append(f.rows, row)
	}
	f.ours[row] = append(f.ours[row], ours)
	f.cents[row] = append(f.cents[row], cent)
	f.unit[row] = unit
}

func fmtFigure(v float64, unit string) string {
	switch unit {
	case "µs", "ms", "KiB":
		return fmt.Sprintf("%.2f %s", v, unit)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// benchPeer measures this product beside Centrifugo (one node, memory
// engine), both driven by this process's load generators, in peerRounds
// interleaved rounds (the order of the two alternates between rounds). Each
// round starts a fresh gateway and a fresh Centrifugo node:
//
//   - idle memory: --peer-sockets idle WebSockets on each, RSS per socket of
//     the holding process (the gateway; Centrifugo);
//   - fan-out: those sockets put in one room (Join, 100 ids a call; Centrifugo's
//     server-side subscribe, one connection a call), then publishers for
//     --duration: messages received/s and the server-side CPU per message
//     (gateway + membership-server + etcd; Centrifugo);
//   - membership changes: 256 more sockets each; Join/Leave pairs through
//     gRPC (WAIT_FOR_COMMIT, then WAIT_FOR_APPLY) against server-side
//     subscribe/unsubscribe pairs through Centrifugo's gRPC API, at each
//     --peer-concurrency level for --duration: calls/s, latency and the
//     server CPU per call (gateway + membership-server + etcd; Centrifugo),
//     this process's own CPU per call (the load generator's), and the rate
//     at which the two would keep every core busy (peerCeiling).
//
// etcd runs as its own process here, as production runs it.
func benchPeer(ctx context.Context, cfg config) error {
	levels, err := concurrencyLevels(cfg.peerLevels, 256)
	if err != nil {
		return err
	}
	e, err := startEtcd(cfg.binDir)
	if err != nil {
		return err
	}
	defer e.stop()
	st, err := startPeerStack(ctx, cfg, e)
	if err != nil {
		return err
	}
	defer st.stop()
	var load [3]float64
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Sscan(string(b), &load[0], &load[1], &load[2])
	}
	fmt.Printf("## Beside Centrifugo: %d sockets in one room, %d idle sockets, membership changes at concurrency %s (%d interleaved rounds, medians; %v per phase)\n\n",
		cfg.peerSockets, cfg.peerSockets, cfg.peerLevels, peerRounds, cfg.duration)
	fmt.Printf("this product: etcd as its own process (%s/etcd, single member), one membership-server on it, one gateway; Centrifugo: %s/centrifugo, one node, memory engine, server gRPC API, JSON protocol over WebSocket.\nload average at start: %.2f %.2f %.2f\n\n",
		cfg.binDir, cfg.binDir, load[0], load[1], load[2])

	var fig peerFigures
	n := cfg.peerSockets
	for round := 0; round < peerRounds; round++ {
		oursFirst := round%2 == 0
		fmt.Fprintf(os.Stderr, "peer: round %d\n", round+1)
		g, err := st.addGateway(fmt.Sprintf("peer-%d", round))
		if err != nil {
			return err
		}
		c, err := startCentrifugo(ctx, cfg.binDir)
		if err != nil {
			return err
		}
		err = peerRound(ctx, cfg, st, g, e, c, n, round, oursFirst, levels, &fig)
		c.stop()
		st.stopGateway(g)
		if err != nil {
			return err
		}
	}

	fmt.Println("| | this product | Centrifugo | ratio (ours / Centrifugo's) |")
	fmt.Println("|---|---|---|---|")
	for _, row := range fig.rows {
		o, c, u := median(fig.ours[row]), median(fig.cents[row]), fig.unit[row]
		if u == "-" {
			fmt.Printf("| %s | %s%s | – | %.2f× of Centrifugo's calls/s |\n", row, fmtFigure(o, ""), roundsOf(fig.ours[row], ""), o/median(fig.cents[row]))
			continue
		}
		if u == "µs-" {
			fmt.Printf("| %s | %s%s | – | – |\n", row, fmtFigure(o, "µs"), roundsOf(fig.ours[row], "µs"))
			continue
		}
		fmt.Printf("| %s | %s%s | %s%s | %.2f× |\n", row, fmtFigure(o, u), roundsOf(fig.ours[row], u), fmtFigure(c, u), roundsOf(fig.cents[row], u), o/c)
	}
	fmt.Println()
	if n := peerRetries.Load(); n > 0 {
		fmt.Printf("connections or subscribe calls tried again: %d\n\n", n)
	}

	if cfg.peerProfileDir != "" {
		return peerProfiles(ctx, cfg, st, e)
	}
	return nil
}

// roundsOf spells every round's value when there are several.
func roundsOf(xs []float64, unit string) string {
	if len(xs) < 2 {
		return ""
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		if unit == "" || unit == "-" {
			parts[i] = fmt.Sprintf("%.0f", x)
		} else {
			parts[i] = fmt.Sprintf("%.2f", x)
		}
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func peerRound(ctx context.Context, cfg config, st *stack, g *gatewayProc, e *etcdProc, c *centrifugo, n, round int,
	oursFirst bool, levels []int, fig *peerFigures) error {
	// One system's sockets at a time: this process may hold at most
	// RLIMIT_NOFILE of them (20,000 here).
	var idleO, idleC float64
	var fo, fc fanoutResult
	runO := func() (err error) { idleO, fo, err = peerOursSockets(ctx, cfg, st, g, e, n); return err }
	runC := func() (err error) { idleC, fc, err = peerCentSockets(ctx, cfg, c, n, round); return err }
	first, second := runO, runC
	if !oursFirst {
		first, second = runC, runO
	}
	if err := first(); err != nil {
		return err
	}
	if err := second(); err != nil {
		return err
	}
	fig.add(fmt.Sprintf("idle memory per socket, %d sockets: RSS of the gateway / of Centrifugo", n), "KiB", idleO, idleC)
	fig.add(fmt.Sprintf("fan-out, %d sockets in one room, messages received/s", n), "", fo.rate, fc.rate)
	fig.add("fan-out delivery latency p99", "ms", msf(fo.p99), msf(fc.p99))
	fig.add("server CPU per delivered message", "µs", float64(fo.cpuPerMsg)/1e3, float64(fc.cpuPerMsg)/1e3)

	// Membership changes: 256 sockets on each.
	mo, err := eachParallel(256, 32, func(i int, _ net.IP) (*socket, error) {
		s, err := dialSocket(ctx, g.url(), nil)
		if err == nil {
			drain(s)
		}
		return s, err
	})
	defer closeAll(mo)
	if err != nil {
		return err
	}
	mc, err := eachParallel(256, 32, func(i int, _ net.IP) (*centSocket, error) {
		s, err := c.dial(ctx, fmt.Sprintf("r%d-m%d", round, i), nil)
		if err == nil {
			go s.read(func([]byte) {})
		}
		return s, err
	})
	defer closeCent(mc)
	if err != nil {
		return err
	}
	// Server CPU per call: utime+stime of the gateway, membership-server and
	// etcd (Centrifugo's process) over the phase, over the calls made.
	// The membership-server first: its own share is reported too.
	ourPids := []int{st.server.Process.Pid, g.cmd.Process.Pid, e.cmd.Process.Pid}
	// The load generator's own CPU per call (this process: its gRPC callers
	// and its sockets' readers) is measured too: on these shared cores, the
	// servers' CPU per call plus the generator's bounds the rate either
	// system can reach (peerCeiling).
	self := os.Getpid()
	perCall := func(pids []int, rate *float64, run func()) (all, first, gen float64) {
		cpu0, first0, self0, t0 := cpuOf(pids), processCPU(pids[0]), processCPU(self), time.Now()
		run()
		calls := *rate * time.Since(t0).Seconds()
		if calls == 0 {
			return 0, 0, 0
		}
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / calls }
		return us(cpuOf(pids) - cpu0), us(processCPU(pids[0]) - first0), us(processCPU(self) - self0)
	}
	for _, conc := range levels {
		var or, ow, cr, hr float64
		var ocpu, osrv, ogen, wcpu, ccpu, cgen, hsrv, hgen float64
		var ol, wl, cl *latencies
		runO := func() {
			ocpu, osrv, ogen = perCall(ourPids, &or, func() { or, ol = loop(ctx, conc, cfg.duration, apiJoinLeave(st.api, mo)) })
		}
		runW := func() {
			wcpu, _, _ = perCall(ourPids, &ow, func() { ow, wl = loop(ctx, conc, cfg.duration, apiJoinLeaveApply(st.api, mo)) })
		}
		runC := func() {
			ccpu, _, cgen = perCall([]int{c.pid()}, &cr, func() { cr, cl = loop(ctx, conc, cfg.duration, centSubUnsub(c, mc)) })
		}
		// The floor of a call into the membership-server: the standard
		// health check, answered in memory through the same listener and
		// interceptors as Join and Leave, with no etcd request and no
		// gateway behind it.
		runH := func() {
			hsrv, _, hgen = perCall([]int{st.server.Process.Pid}, &hr, func() { hr, _ = loop(ctx, conc, cfg.duration, healthCheck(st.cc)) })
		}
		if oursFirst {
			runO()
			runC()
			runW()
		} else {
			runC()
			runO()
			runW()
		}
		runH()
		row := fmt.Sprintf("membership changes, concurrency %d (Join+Leave vs subscribe+unsubscribe)", conc)
		fig.add(row+", calls/s", "", or, cr)
		fig.add(row+", p50", "ms", msf(ol.pct(50)), msf(cl.pct(50)))
		fig.add(row+", p99", "ms", msf(ol.pct(99)), msf(cl.pct(99)))
		fig.add(row+", server CPU per call", "µs", ocpu, ccpu)
		fig.add(fmt.Sprintf("of which the membership-server's, concurrency %d", conc), "µs", osrv, ccpu)
		fig.add(fmt.Sprintf("load generator CPU per call, concurrency %d", conc), "µs", ogen, cgen)
		fig.add(fmt.Sprintf("CPU-bound ceiling on %d cores (cores / (server + load generator CPU per call)), concurrency %d, calls/s", runtime.NumCPU(), conc),
			"", peerCeiling(ocpu, ogen), peerCeiling(ccpu, cgen))
		fig.add(fmt.Sprintf("floor: a gRPC health check into the membership-server, concurrency %d, its CPU per call", conc), "µs-", hsrv, 0)
		fig.add(fmt.Sprintf("floor: the same, load generator CPU per call, concurrency %d", conc), "µs-", hgen, 0)
		fig.add(fmt.Sprintf("same with WAIT_FOR_APPLY, concurrency %d, calls/s", conc), "-", ow, cr)
		fig.add(fmt.Sprintf("same with WAIT_FOR_APPLY, concurrency %d, p99", conc), "ms", msf(wl.pct(99)), msf(cl.pct(99)))
		fig.add(fmt.Sprintf("same with WAIT_FOR_APPLY, concurrency %d, server CPU per call", conc), "µs", wcpu, ccpu)
	}
	return nil
}

// warmRoom sends one message at a time (once a second) until all n sockets
// have received one, within 60 s; received counts receipts of any frame.
func warmRoom(ctx context.Context, n int, received *atomic.Int64, send func(ctx context.Context) error) error {
	received.Store(0)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if err := send(ctx); err != nil {
			return err
		}
		time.Sleep(time.Second)
		if received.Load() >= int64(n) {
			return nil
		}
		received.Store(0)
	}
	return fmt.Errorf("%d of %d sockets received a message within 60 s", received.Load(), n)
}

// peerOursSockets: n idle sockets on the gateway g (a reader each, which
// answers the gateway's WebSocket pings), the gateway's RSS per socket after
// 3 s, then all of them joined to one room and the fan-out phase.
func peerOursSockets(ctx context.Context, cfg config, st *stack, g *gatewayProc, e *etcdProc, n int) (float64, fanoutResult, error) {
	var received atomic.Int64
	lat := &latencies{}
	time.Sleep(time.Second)
	rss0, err := g.rssKiB()
	if err != nil {
		return 0, fanoutResult{}, err
	}
	socks, err := eachParallel(n, 64, func(i int, local net.IP) (*socket, error) {
		s, err := dialSocket(ctx, g.url(), local)
		if err == nil {
			go func() {
				for {
					_, data, err := s.conn.ReadMessage()
					if err != nil {
						return
					}
					countStamps(data, &received, lat)
				}
			}()
		}
		return s, err
	})
	defer closeAll(socks)
	if err != nil {
		return 0, fanoutResult{}, err
	}
	time.Sleep(3 * time.Second)
	rss1, err := g.rssKiB()
	if err != nil {
		return 0, fanoutResult{}, err
	}
	if err := joinAll(ctx, st, socks, func(int) string { return "fan" }); err != nil {
		return 0, fanoutResult{}, err
	}
	// One message first, until every socket has it: the gateway applies the
	// joins from its watch, so a committed Join is not yet a receiving socket.
	warm, _ := structpb.NewValue(map[string]any{"t": 0.0})
	if err := warmRoom(ctx, n, &received, func(ctx context.Context) error {
		_, err := st.api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"fan"}, Data: warm})
		return err
	}); err != nil {
		return 0, fanoutResult{}, fmt.Errorf("this product's room: %w", err)
	}
	pids := []int{g.cmd.Process.Pid, st.server.Process.Pid, e.cmd.Process.Pid}
	r := runFanout(ctx, cfg.duration, n, &received, lat, pids, func(ctx context.Context, t int64) error {
		v, err := structpb.NewValue(map[string]any{"t": float64(t)})
		if err != nil {
			return err
		}
		_, err = st.api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"fan"}, Data: v})
		return err
	})
	return float64(rss1-rss0) / float64(n), r, nil
}

// peerCentSockets is peerOursSockets for Centrifugo: n connections (a reader
// each, which answers the protocol's pings), its RSS per connection, then
// each subscribed on the server side to one channel and the fan-out phase.
func peerCentSockets(ctx context.Context, cfg config, c *centrifugo, n, round int) (float64, fanoutResult, error) {
	var received atomic.Int64
	lat := &latencies{}
	time.Sleep(time.Second)
	rss0, err := c.rssKiB()
	if err != nil {
		return 0, fanoutResult{}, err
	}
	socks, err := eachParallel(n, 64, func(i int, local net.IP) (*centSocket, error) {
		s, err := c.dial(ctx, fmt.Sprintf("r%d-u%d", round, i), local)
		if err == nil {
			go s.read(func(data []byte) { countStamps(data, &received, lat) })
		}
		return s, err
	})
	defer closeCent(socks)
	if err != nil {
		return 0, fanoutResult{}, err
	}
	time.Sleep(3 * time.Second)
	rss1, err := c.rssKiB()
	if err != nil {
		return 0, fanoutResult{}, err
	}
	room := centrifugoNamespace + ":fan"
	if _, err := eachParallel(n, 64, func(i int, _ net.IP) (struct{}, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return struct{}{}, c.subscribe(cctx, room, socks[i].user, socks[i].client)
	}); err != nil {
		return 0, fanoutResult{}, fmt.Errorf("centrifugo subscribe: %w", err)
	}
	if err := warmRoom(ctx, n, &received, func(ctx context.Context) error { return c.publish(ctx, room, []byte(`{"t":0}`)) }); err != nil {
		return 0, fanoutResult{}, fmt.Errorf("centrifugo's channel: %w", err)
	}
	r := runFanout(ctx, cfg.duration, n, &received, lat, []int{c.pid()}, func(ctx context.Context, t int64) error {
		return c.publish(ctx, room, append(strconv.AppendInt([]byte(`{"t":`), t, 10), '}'))
	})
	return float64(rss1-rss0) / float64(n), r, nil
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func closeCent(socks []*centSocket) {
	for _, s := range socks {
		if s != nil {
			s.conn.Close()
		}
	}
}

// apiJoinLeaveApply is apiJoinLeave with WAIT_FOR_APPLY.
func apiJoinLeaveApply(api membershipv1.MembershipServiceClient, socks []*socket) func(ctx context.Context, w int, join bool) error {
	return func(ctx context.Context, w int, join bool) error {
		room := fmt.Sprintf("tp-%d", w%10)
		if join {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: socks[w].id, Room: room, WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
			return err
		}
		_, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: socks[w].id, Room: room, WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
		return err
	}
}

// centSubUnsub is apiJoinLeave's counterpart: server-side subscribe and
// unsubscribe of worker w's connection, over the same ten channels.
func centSubUnsub(c *centrifugo, socks []*centSocket) func(ctx context.Context, w int, join bool) error {
	return func(ctx context.Context, w int, join bool) error {
		ch := fmt.Sprintf("%s:tp-%d", centrifugoNamespace, w%10)
		if join {
			return c.subscribe(ctx, ch, socks[w].user, socks[w].client)
		}
		return c.unsubscribe(ctx, ch, socks[w].user, socks[w].client)
	}
}

// peerProfiles runs Join/Leave at concurrency 64 for peerProfileSeconds
// (apart from the measured rounds: the profilers cost CPU) and records the
// CPU profiles of the membership-server, the gateway and etcd meanwhile.
func peerProfiles(ctx context.Context, cfg config, st *stack, e *etcdProc) error {
	g, err := st.addGateway("peer-profile")
	if err != nil {
		return err
	}
	defer st.stopGateway(g)
	socks, err := dialMany(ctx, g.url(), 64, 32, 0)
	if err != nil {
		return err
	}
	defer closeAll(socks)
	for _, s := range socks {
		drain(s)
	}
	if err := os.MkdirAll(cfg.peerProfileDir, 0o755); err != nil {
		return err
	}
	targets := []struct{ name, addr string }{
		{"membership-server", st.serverPprof}, {"gateway", g.pprof}, {"etcd", e.addr},
	}
	errs := make(chan error, len(targets))
	for _, t := range targets {
		go func() {
			errs <- fetchProfile(ctx, t.addr, filepath.Join(cfg.peerProfileDir, "peer-"+t.name+".pprof"))
		}()
	}
	rate, lat := loop(ctx, 64, peerProfileSeconds*time.Second+500*time.Millisecond, apiJoinLeave(st.api, socks))
	for range targets {
		if err := <-errs; err != nil {
			return err
		}
	}
	fmt.Printf("CPU profiles (%d s, Join/Leave at concurrency 64, %.0f calls/s, p99 %s) of the membership-server, gateway and etcd: %s/peer-{membership-server,gateway,etcd}.pprof\n\n",
		peerProfileSeconds, rate, ms(lat.pct(99)), cfg.peerProfileDir)
	return nil
}

func fetchProfile(ctx context.Context, addr, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, peerProfileSeconds), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile of %s: %w", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile of %s: %s: %s", addr, resp.Status, b)
	}
	return os.WriteFile(file, b, 0o644)
}

// peerCeiling is the call rate at which the servers and the load generator,
// at the given CPU per call (µs), would keep every core of this machine
// busy: neither system can go faster here, whatever its latency.
func peerCeiling(server, gen float64) float64 {
	if server+gen <= 0 {
		return 0
	}
	return float64(runtime.NumCPU()) * 1e6 / (server + gen)
}

// healthCheck calls the membership-server's standard gRPC health check.
func healthCheck(cc *grpc.ClientConn) func(ctx context.Context, w int, join bool) error {
	hc := healthpb.NewHealthClient(cc)
	return func(ctx context.Context, _ int, _ bool) error {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
}
