package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// benchCrash: a gateway holding cfg.crashSockets sockets, each in one room, is
// SIGKILLed. How long until etcd has dropped them all, and what Join/Leave
// latency sockets on another gateway see meanwhile.
func benchCrash(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	const ttl = 10 * time.Second
	doomed, err := st.addGateway("doomed", "--lease-ttl", ttl.String(), "--lease-shards", strconv.Itoa(cfg.crashShards))
	if err != nil {
		return err
	}
	steady, err := st.addGateway("steady")
	if err != nil {
		return err
	}
	socks, err := dialMany(ctx, doomed.url(), cfg.crashSockets, 128, 20000)
	if err != nil {
		return err
	}
	defer closeAll(socks)
	for r := 0; r < 3; r++ {
		if err := joinAll(ctx, st, socks, func(i int) string { return fmt.Sprintf("crash-%d-%d", r, i%100) }); err != nil {
			return err
		}
	}
	others, err := dialMany(ctx, steady.url(), 16, 16, 0)
	if err != nil {
		return err
	}
	defer closeAll(others)
	for _, s := range others {
		drain(s)
	}

	type sample struct {
		at  time.Time
		lat time.Duration
		err bool
	}
	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, s := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			join := true
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var err error
				if join {
					_, err = st.api.Join(cctx, &membershipv1.JoinRequest{SocketId: s.id, Room: fmt.Sprintf("steady-%d", w)})
				} else {
					_, err = st.api.Leave(cctx, &membershipv1.LeaveRequest{SocketId: s.id, Room: fmt.Sprintf("steady-%d", w)})
				}
				cancel()
				mu.Lock()
				samples = append(samples, sample{at: t0, lat: time.Since(t0), err: err != nil})
				mu.Unlock()
				join = !join
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	doomed.kill()
	killed := time.Now()
	prefix := store.DefaultPrefix + "gwm/doomed/"
	var gone time.Duration
	for {
		resp, err := st.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == 0 {
			gone = time.Since(killed)
			break
		}
		if time.Since(killed) > 3*ttl {
			gone = -1
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	before, during := &latencies{}, &latencies{}
	errs := 0
	var worst time.Duration
	for _, s := range samples {
		switch {
		case s.at.Before(killed):
			before.add(s.lat)
		default:
			during.add(s.lat)
			worst = max(worst, s.lat)
			if s.err {
				errs++
			}
		}
	}
	fmt.Printf("## Gateway crash holding %d sockets and %d memberships (%d keys on %d lease(s); TTL %v)\n\n", len(socks), 3*len(socks), 7*len(socks)+1, cfg.crashShards, ttl)
	fmt.Println("| gone after SIGKILL | other gateway's Join/Leave p50 / p99 before | after the kill: p50 / p99 / max | failed calls after the kill |")
	fmt.Println("|---|---|---|---|")
	goneText := "not within 3× TTL"
	if gone >= 0 {
		goneText = fmt.Sprintf("%.2f s", gone.Seconds())
	}
	fmt.Printf("| %s | %s / %s | %s / %s / %s | %d |\n\n", goneText, ms(before.pct(50)), ms(before.pct(99)),
		ms(during.pct(50)), ms(during.pct(99)), ms(worst), errs)
	return nil
}
