package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// broadcasters is how many Broadcast calls are in flight at once.
const broadcasters = 16

// benchFanout: one room of cfg.fanoutSockets sockets over two gateways, all
// clients in this process; broadcasters send as fast as answers come back.
// Each message carries its send time, so every receipt gives a latency.
// cfg.gatewayArgs go to both gateways (for example --resume-window 0, to
// measure the fan-out without resumable sockets).
func benchFanout(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	var gws []*gatewayProc
	for _, id := range []string{"fan-1", "fan-2"} {
		g, err := st.addGateway(id, strings.Fields(cfg.gatewayArgs)...)
		if err != nil {
			return err
		}
		gws = append(gws, g)
	}
	n := cfg.fanoutSockets
	var socks []*socket
	for i, g := range gws {
		part, err := dialMany(ctx, g.url(), n/2+(n%2)*i, 64, 0)
		if err != nil {
			return err
		}
		socks = append(socks, part...)
	}
	defer closeAll(socks)
	if err := joinAll(ctx, st, socks, func(int) string { return "fan" }); err != nil {
		return err
	}
	var received atomic.Int64
	lat := &latencies{}
	var readers sync.WaitGroup
	for _, s := range socks {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, data, err := s.conn.ReadMessage()
				if err != nil {
					return
				}
				if i := bytes.Index(data, []byte(`"t":`)); i >= 0 {
					j := i + 4
					k := j
					for k < len(data) && (data[k] >= '0' && data[k] <= '9' || data[k] == '.' || data[k] == 'e' || data[k] == '+') {
						k++
					}
					if v, err := strconv.ParseFloat(string(data[j:k]), 64); err == nil {
						if received.Add(1)%20 == 0 { // one receipt in 20 is sampled
							lat.add(time.Duration(time.Now().UnixNano() - int64(v)))
						}
					}
				}
			}
		}()
	}

	run := func(label string) error {
		received.Store(0)
		lat.mu.Lock()
		lat.d = nil
		lat.mu.Unlock()
		var sent, delivered atomic.Int64
		start := time.Now()
		stop := start.Add(cfg.duration)
		var wg sync.WaitGroup
		for b := 0; b < broadcasters; b++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					data, _ := structpb.NewValue(map[string]any{"t": float64(time.Now().UnixNano())})
					resp, err := st.api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"fan"}, Data: data})
					if err != nil {
						continue
					}
					sent.Add(1)
					delivered.Add(resp.Delivered)
				}
			}()
		}
		wg.Wait()
		// Wait for the receivers to catch up (or give up after 10s).
		last, lastChange := received.Load(), time.Now()
		for received.Load() < delivered.Load() && time.Since(lastChange) < 10*time.Second {
			time.Sleep(20 * time.Millisecond)
			if r := received.Load(); r != last {
				last, lastChange = r, time.Now()
			}
		}
		elapsed := lastChange.Sub(start)
		if received.Load() >= delivered.Load() {
			elapsed = time.Since(start)
		}
		fmt.Printf("| %s | %d | %d | %d | %.0f | %s | %s |\n", label, sent.Load(), delivered.Load(), received.Load(),
			float64(received.Load())/elapsed.Seconds(), ms(lat.pct(50)), ms(lat.pct(99)))
		return nil
	}

	fmt.Printf("## Broadcast fan-out: one room of %d sockets over 2 gateways (%v of broadcasting, %d concurrent broadcasters)\n\n", n, cfg.duration, broadcasters)
	fmt.Println("| run | broadcasts | deliveries reported | messages received | received/s | latency p50 | latency p99 |")
	fmt.Println("|---|---|---|---|---|---|---|")
	if err := run("all clients reading"); err != nil {
		return err
	}
	// A client that never reads: the gateway drops it once its queue is full,
	// and the others must not slow down.
	stalled, err := dialSocket(ctx, gws[0].url(), nil)
	if err != nil {
		return err
	}
	defer stalled.conn.Close()
	if _, err := st.api.Join(ctx, &membershipv1.JoinRequest{SocketId: stalled.id, Room: "fan"}); err != nil {
		return err
	}
	if err := run("plus one stalled client"); err != nil {
		return err
	}
	_, err = st.api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: stalled.id})
	fmt.Printf("\nthe stalled client was disconnected by its gateway during the run: %v (it is once its kernel buffers and its %d-frame queue are full)\n\n", err != nil, 256)
	closeAll(socks)
	readers.Wait()
	return nil
}

// joinAll joins every socket to room(i), 100 sockets per call, 8 calls at once.
func joinAll(ctx context.Context, st *stack, socks []*socket, room func(i int) string) error {
	type batch struct {
		room string
		ids  []string
	}
	batches := map[string]*batch{}
	var order []*batch
	for i, s := range socks {
		r := room(i)
		b := batches[r]
		if b == nil || len(b.ids) == 100 {
			b = &batch{room: r}
			batches[r] = b
			order = append(order, b)
		}
		b.ids = append(b.ids, s.id)
	}
	work := make(chan *batch)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := st.api.Join(cctx, &membershipv1.JoinRequest{SocketIds: b.ids, Room: b.room})
				cancel()
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for _, b := range order {
		work <- b
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("join: %w", err)
	default:
		return nil
	}
}
