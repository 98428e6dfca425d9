package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// benchApply: from the start of a Join to the "joined" frame at the socket
// (and Leave to "left"), with the stack idle and under background Join/Leave
// load on other sockets.
func benchApply(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	g, err := st.addGateway("apply-gw", "--send-queue", "4096")
	if err != nil {
		return err
	}
	probe, err := dialSocket(ctx, g.url(), nil)
	if err != nil {
		return err
	}
	defer probe.conn.Close()
	background, err := dialMany(ctx, g.url(), 256, 32, 0)
	if err != nil {
		return err
	}
	defer closeAll(background)
	for _, s := range background {
		drain(s)
	}

	measure := func(samples int) (*latencies, error) {
		lat := &latencies{}
		for i := 0; i < samples; i++ {
			for _, join := range []bool{true, false} {
				t0 := time.Now()
				var err error
				if join {
					_, err = st.api.Join(ctx, &membershipv1.JoinRequest{SocketId: probe.id, Room: "probe"})
				} else {
					_, err = st.api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: probe.id, Room: "probe"})
				}
				if err != nil {
					return nil, err
				}
				want := map[bool]string{true: "joined", false: "left"}[join]
				for {
					_, data, err := probe.conn.ReadMessage()
					if err != nil {
						return nil, err
					}
					var f struct{ Type, Room string }
					if json.Unmarshal(data, &f) == nil && f.Type == want && f.Room == "probe" {
						break
					}
				}
				lat.add(time.Since(t0))
			}
		}
		return lat, nil
	}

	fmt.Println("## Commit → apply latency (Join start to the joined frame at the socket; Leave to left)")
	fmt.Println()
	fmt.Println("| background load | samples | p50 | p99 | background calls/s achieved |")
	fmt.Println("|---|---|---|---|---|")
	idle, err := measure(300)
	if err != nil {
		return err
	}
	fmt.Printf("| none | %d | %s | %s | 0 |\n", idle.n(), ms(idle.pct(50)), ms(idle.pct(99)))

	// Background: 5,000 calls/s paced by a ticker, spread over 256 sockets.
	const rate = 5000
	tokens := make(chan struct{}, rate)
	stop := make(chan struct{})
	var done atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				close(tokens)
				return
			case <-tick.C:
				for i := 0; i < rate/1000; i++ {
					select {
					case tokens <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	for w, s := range background {
		wg.Add(1)
		go func() {
			defer wg.Done()
			join := true
			room := fmt.Sprintf("load-%d", w%8)
			for range tokens {
				var err error
				if join {
					_, err = st.api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.id, Room: room})
				} else {
					_, err = st.api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.id, Room: room})
				}
				if err == nil {
					done.Add(1)
					join = !join
				}
			}
		}()
	}
	time.Sleep(time.Second) // let the load settle
	start, before := time.Now(), done.Load()
	loaded, err := measure(300)
	achieved := float64(done.Load()-before) / time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	fmt.Printf("| %d calls/s target | %d | %s | %s | %.0f |\n\n", rate, loaded.n(), ms(loaded.pct(50)), ms(loaded.pct(99)), achieved)
	return nil
}
