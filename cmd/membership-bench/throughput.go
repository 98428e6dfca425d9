package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/socketrooms/membership/internal/store"
)

// benchThroughput: Join then Leave in a loop, each worker on its own socket,
// through the API (gRPC → membership-server, which coalesces) and straight to
// etcd with the same guarded transaction, one per call, from this process.
func benchThroughput(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	g, err := st.addGateway("bench-gw", "--send-queue", "4096")
	if err != nil {
		return err
	}
	socks, err := dialMany(ctx, g.url(), 256, 32, 0)
	if err != nil {
		return err
	}
	defer closeAll(socks)
	ids := make([]store.SocketID, len(socks))
	for i, s := range socks {
		drain(s)
		if ids[i], err = store.ParseSocketID(s.id); err != nil {
			return err
		}
	}
	raw := store.New(st.cli, "") // no coalescing: one etcd transaction per call
	// The same API without coalescing, in the same run, for the comparison.
	plain, err := st.addServer(ctx, "--batch-committers", "0")
	if err != nil {
		return err
	}

	fmt.Printf("## Join/Leave throughput (%v per point)\n\n", cfg.duration)
	// CPU per API call: utime+stime from /proc of the membership-server (with
	// its embedded etcd) and of the gateway (applying the changes it watches
	// and writing the notices) over the API phase, over the calls completed.
	fmt.Println("| concurrency | raw etcd txn calls/s | raw p50 | raw p99 | API uncoalesced calls/s | p50 | p99 | API calls/s | API p50 | API p99 | API / raw | API µs CPU per call: server+etcd | gateway |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	levels, err := concurrencyLevels(cfg.tpLevels, len(socks))
	if err != nil {
		return err
	}
	for _, c := range levels {
		rawRate, rawLat := 0.0, &latencies{}
		if strings.Contains(cfg.tpPaths, "raw") {
			rawRate, rawLat = loop(ctx, c, cfg.duration, func(ctx context.Context, w int, join bool) error {
				room := fmt.Sprintf("tp-%d", w%10)
				if join {
					_, err := raw.Join(ctx, ids[w:w+1], room)
					return err
				}
				_, err := raw.Leave(ctx, ids[w:w+1], room)
				return err
			})
		}
		plainRate, plainLat := 0.0, &latencies{}
		if strings.Contains(cfg.tpPaths, "plain") {
			plainRate, plainLat = loop(ctx, c, cfg.duration, apiJoinLeave(plain, socks))
		}
		apiRate, apiLat := 0.0, &latencies{}
		var serverCPU, gatewayCPU float64
		if strings.Contains(cfg.tpPaths, "api") {
			s0, g0, t0 := processCPU(st.server.Process.Pid), processCPU(g.cmd.Process.Pid), time.Now()
			apiRate, apiLat = loop(ctx, c, cfg.duration, apiJoinLeave(st.api, socks))
			// Read at once, before the gateway finishes applying the tail.
			s1, g1 := processCPU(st.server.Process.Pid), processCPU(g.cmd.Process.Pid)
			if calls := apiRate * time.Since(t0).Seconds(); calls > 0 {
				serverCPU = float64((s1 - s0).Microseconds()) / calls
				gatewayCPU = float64((g1 - g0).Microseconds()) / calls
			}
		}
		fmt.Printf("| %d | %.0f | %s | %s | %.0f | %s | %s | %.0f | %s | %s | %.2f× | %.0f | %.0f |\n", c,
			rawRate, ms(rawLat.pct(50)), ms(rawLat.pct(99)), plainRate, ms(plainLat.pct(50)), ms(plainLat.pct(99)),
			apiRate, ms(apiLat.pct(50)), ms(apiLat.pct(99)), apiRate/rawRate, serverCPU, gatewayCPU)
	}
	fmt.Println()
	return nil
}

// loop runs c workers alternating join and leave calls for d and returns the
// completed calls per second and their latencies.
func loop(ctx context.Context, c int, d time.Duration, call func(ctx context.Context, worker int, join bool) error) (float64, *latencies) {
	var done atomic.Int64
	var failed atomic.Int64
	lat := &latencies{}
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			join := true
			for time.Now().Before(stop) {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				err := call(cctx, w, join)
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
				join = !join
			}
			done.Add(int64(len(mine)))
			lat.merge(mine)
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		fmt.Printf("<!-- %d calls failed -->\n", n)
	}
	return float64(done.Load()) / time.Since(start).Seconds(), lat
}
