package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// benchIdle: cfg.idleSockets idle sockets on one gateway; its resident memory
// and goroutines per socket.
func benchIdle(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	g, err := st.addGateway("idle-gw")
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	rss0, _ := g.rssKiB()
	heap0, _ := heapInuse(g)
	gr0, _ := g.goroutines()
	start := time.Now()
	socks, err := dialMany(ctx, g.url(), cfg.idleSockets, 128, 20000)
	if err != nil {
		return err
	}
	defer closeAll(socks)
	connectTime := time.Since(start)
	// Each socket reads, as a browser's does: a native socket answers the
	// gateway's pings (a socket silent for two ping intervals is dropped;
	// the bench's Socket.IO sockets do not answer Engine.IO's, so with
	// --protocol socketio a hold past them measures dropped sockets), and
	// its end is counted here.
	var ended atomic.Int64
	for _, s := range socks {
		go func() {
			for {
				if _, _, err := s.conn.NextReader(); err != nil {
					ended.Add(1)
					return
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	rss1, err := g.rssKiB()
	if err != nil {
		return err
	}
	heap1, _ := heapInuse(g)
	gr1, _ := g.goroutines()
	n := float64(len(socks))
	fmt.Printf("## Idle sockets: %d on one gateway\n\n", len(socks))
	fmt.Println("| connect time | gateway RSS before → after | RSS per socket | Go heap in use per socket | goroutines per socket |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| %.1f s (%.0f sockets/s) | %d → %d KiB | %.2f KiB | %.2f KiB | %.2f |\n\n", connectTime.Seconds(), n/connectTime.Seconds(),
		rss0, rss1, float64(rss1-rss0)/n, float64(heap1-heap0)/1024/n, float64(gr1-gr0)/n)
	if cfg.idleHold <= 0 {
		return nil
	}
	// Held past the gateway's ping rounds (every 25 s): each round starts a
	// writer per socket for its ping and a reader for its pong.
	time.Sleep(cfg.idleHold)
	rss2, err := g.rssKiB()
	if err != nil {
		return err
	}
	heap2, _ := heapInuse(g)
	fmt.Printf("After %s more (ping rounds included): gateway RSS %d KiB, %.2f KiB per socket; Go heap in use %.2f KiB per socket; sockets ended: %d\n\n",
		cfg.idleHold, rss2, float64(rss2-rss0)/n, float64(heap2-heap0)/1024/n, ended.Load())
	return nil
}

// heapInuse reads HeapInuse (bytes) from the gateway's heap profile, after a GC.
func heapInuse(g *gatewayProc) (int64, error) {
	resp, err := http.Get("http://" + g.pprof + "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no HeapInuse")
}
