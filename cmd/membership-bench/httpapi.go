package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// httpTransport is one way of calling Join and Leave for the http scenario.
type httpTransport struct {
	name string
	call func(ctx context.Context, w int, join bool) error
}

// benchHTTP: Join then Leave in a loop at --http-concurrency, each worker on
// its own socket, over gRPC and over the membership-server's --http-addr
// (Connect with the JSON codec, and the REST routes), against one server.
// Each round runs every transport for --duration, in an order that rotates
// from round to round; the figures are the medians over --http-rounds rounds.
func benchHTTP(ctx context.Context, cfg config) error {
	httpAddr := freeAddr()
	scfg := cfg
	scfg.serverArgs = cfg.serverArgs + " --http-addr " + httpAddr
	st, err := startStack(ctx, scfg)
	if err != nil {
		return err
	}
	defer st.stop()
	base := "http://" + httpAddr
	g, err := st.addGateway("bench-gw", "--send-queue", "4096")
	if err != nil {
		return err
	}
	socks, err := dialMany(ctx, g.url(), cfg.httpConcurrency, 32, 0)
	if err != nil {
		return err
	}
	defer closeAll(socks)
	for _, s := range socks {
		drain(s)
	}
	room := func(w int) string { return fmt.Sprintf("http-%d", w%10) }

	// One idle connection per worker: http.Transport keeps 2 per host by
	// default, and HTTP/1.1 carries one call at a time, so 64 workers would
	// otherwise open and close connections on every call.
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.httpConcurrency}}
	h2c := &http.Client{Transport: &http.Transport{Protocols: h2cOnly()}}

	transports := []httpTransport{{name: "gRPC (HTTP/2)", call: func(ctx context.Context, w int, join bool) error {
		if join {
			_, err := st.api.Join(ctx, &membershipv1.JoinRequest{SocketId: socks[w].id, Room: room(w)})
			return err
		}
		_, err := st.api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: socks[w].id, Room: room(w)})
		return err
	}}}
	clients := map[string]*http.Client{"HTTP/1.1": h1}
	versions := []string{"HTTP/1.1"}
	if err := probeH2C(ctx, h2c, base); err != nil {
		fmt.Printf("h2c: not offered by the membership-server's --http-addr (%v); Connect and REST measured over HTTP/1.1 only\n\n", err)
	} else {
		clients["h2c"] = h2c
		versions = append(versions, "h2c")
	}
	for _, v := range versions {
		transports = append(transports, connectJSON("Connect JSON ("+v+")", clients[v], base, socks, room))
	}
	for _, v := range versions {
		transports = append(transports, restJSON("REST JSON ("+v+")", clients[v], base, socks, room))
	}

	// Warm up every path (connections, the server's caches) before measuring.
	for _, t := range transports {
		loop(ctx, cfg.httpConcurrency, cfg.duration/5, t.call)
	}
	type figures struct{ rate, p50, p99, ratio, serverCPU, benchCPU []float64 }
	res := make([]figures, len(transports))
	for r := 0; r < cfg.httpRounds; r++ {
		rate := make([]float64, len(transports))
		for k := range transports {
			i := (k + r) % len(transports)
			server0, bench0 := processCPU(st.server.Process.Pid), selfCPU()
			t0 := time.Now()
			var lat *latencies
			rate[i], lat = loop(ctx, cfg.httpConcurrency, cfg.duration, transports[i].call)
			calls := rate[i] * time.Since(t0).Seconds()
			res[i].rate = append(res[i].rate, rate[i])
			res[i].p50 = append(res[i].p50, float64(lat.pct(50)))
			res[i].p99 = append(res[i].p99, float64(lat.pct(99)))
			res[i].serverCPU = append(res[i].serverCPU, float64(processCPU(st.server.Process.Pid)-server0)/calls)
			res[i].benchCPU = append(res[i].benchCPU, float64(selfCPU()-bench0)/calls)
		}
		for i := range transports {
			res[i].ratio = append(res[i].ratio, rate[i]/rate[0])
		}
	}

	fmt.Printf("## Join/Leave over gRPC, Connect JSON and REST (concurrency %d, %v per transport per round, median of %d rounds)\n\n",
		cfg.httpConcurrency, cfg.duration, cfg.httpRounds)
	fmt.Println("| transport | calls/s | p50 | p99 | / gRPC | server CPU per call | bench CPU per call |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for i, t := range transports {
		fmt.Printf("| %s | %.0f%s | %s | %s | %.2f× | %s | %s |\n", t.name, median(res[i].rate), rounds(res[i].rate),
			ms(time.Duration(median(res[i].p50))), ms(time.Duration(median(res[i].p99))), median(res[i].ratio),
			us(time.Duration(median(res[i].serverCPU))), us(time.Duration(median(res[i].benchCPU))))
	}
	fmt.Println()
	fmt.Println("CPU per call: user+system time over the round's calls; the membership-server's includes its embedded etcd,")
	fmt.Println("the bench's the gateway's frames its sockets read (the same for every transport).")
	fmt.Println()

	if cfg.httpProfileDir != "" {
		// Apart from the measured rounds: the profiler costs the server CPU.
		for i, t := range transports {
			file := filepath.Join(cfg.httpProfileDir, fmt.Sprintf("http-%d.pprof", i))
			var rate float64
			if err := profileServer(ctx, st.serverPprof, cfg.duration, file, func() {
				rate, _ = loop(ctx, cfg.httpConcurrency, cfg.duration, t.call)
			}); err != nil {
				return err
			}
			// The profile's total CPU over this count is the server's CPU per call.
			fmt.Printf("membership-server CPU profile, %s, %.0f calls/s: %s\n", t.name, rate, file)
		}
		fmt.Println()
	}
	return nil
}

// h2cOnly is HTTP/2 with prior knowledge over plain TCP.
func h2cOnly() *http.Protocols {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return p
}

// probeH2C reports whether the server answers a Connect call over h2c.
func probeH2C(ctx context.Context, hc *http.Client, base string) error {
	c := connect.NewClient[membershipv1.ListRoomsRequest, membershipv1.ListRoomsResponse](hc,
		base+membershipv1.MembershipService_ListRooms_FullMethodName, connect.WithProtoJSON())
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := c.CallUnary(ctx, connect.NewRequest(&membershipv1.ListRoomsRequest{PageSize: 1}))
	return err
}

// connectJSON calls Join and Leave with connectrpc.com/connect's client and
// its protojson codec.
func connectJSON(name string, hc *http.Client, base string, socks []*socket, room func(int) string) httpTransport {
	join := connect.NewClient[membershipv1.JoinRequest, membershipv1.JoinResponse](hc,
		base+membershipv1.MembershipService_Join_FullMethodName, connect.WithProtoJSON())
	leave := connect.NewClient[membershipv1.LeaveRequest, membershipv1.LeaveResponse](hc,
		base+membershipv1.MembershipService_Leave_FullMethodName, connect.WithProtoJSON())
	return httpTransport{name: name, call: func(ctx context.Context, w int, j bool) error {
		if j {
			_, err := join.CallUnary(ctx, connect.NewRequest(&membershipv1.JoinRequest{SocketId: socks[w].id, Room: room(w)}))
			return err
		}
		_, err := leave.CallUnary(ctx, connect.NewRequest(&membershipv1.LeaveRequest{SocketId: socks[w].id, Room: room(w)}))
		return err
	}}
}

// restJSON calls the REST routes the way a plain HTTP client does: Join is
// POST /v1/rooms/{room}/members with {"socketId"}, Leave is
// DELETE /v1/rooms/{room}/members/{socket_id}.
func restJSON(name string, hc *http.Client, base string, socks []*socket, room func(int) string) httpTransport {
	return httpTransport{name: name, call: func(ctx context.Context, w int, join bool) error {
		members := base + "/v1/rooms/" + url.PathEscape(room(w)) + "/members"
		var req *http.Request
		var err error
		if join {
			body, _ := json.Marshal(map[string]string{"socketId": socks[w].id})
			req, err = http.NewRequestWithContext(ctx, http.MethodPost, members, bytes.NewReader(body))
			if err == nil {
				req.Header.Set("Content-Type", "application/json")
			}
		} else {
			req, err = http.NewRequestWithContext(ctx, http.MethodDelete, members+"/"+url.PathEscape(socks[w].id), nil)
		}
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		// Read to the end so that the connection is reused.
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, b)
		}
		return nil
	}}
}

// profileServer records the membership-server's CPU profile for d while run
// loads it, into file.
func profileServer(ctx context.Context, pprofAddr string, d time.Duration, file string, run func()) error {
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(d.Seconds())), nil)
		if err != nil {
			got <- result{err: err}
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{b, err}
	}()
	run()
	r := <-got
	if r.err != nil {
		return fmt.Errorf("cpu profile: %w", r.err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, r.b, 0o644)
}

// processCPU is the user+system CPU time pid has used, from /proc (0 when
// unreadable).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime and stime fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	// Clock ticks: USER_HZ, 100 on Linux.
	return time.Duration(utime+stime) * (time.Second / 100)
}

// selfCPU is the user+system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

// median of xs (the lower middle one for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// rounds spells every round's value, " (a, b, c)", when there are several.
func rounds(xs []float64) string {
	if len(xs) < 2 {
		return ""
	}
	var b bytes.Buffer
	b.WriteString(" (")
	for i, x := range xs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%.0f", x)
	}
	b.WriteString(")")
	return b.String()
}
