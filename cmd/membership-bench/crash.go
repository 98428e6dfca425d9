package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// benchCrash: a gateway holding cfg.crashSockets sockets, each in
// cfg.crashRooms rooms, is SIGKILLed. How long until etcd has dropped them
// all, and what Join/Leave latency sockets on another gateway see meanwhile:
// over the expiry window (from just before the first of the dead gateway's
// keys is gone to just after the last), the p99 and the longest write pause,
// the longest gap between two successive completions of the other gateway's
// calls (16 loops, each calling again 5 ms after its last call returned).
func benchCrash(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	ttl := cfg.crashTTL
	doomed, err := st.addGateway("doomed", "--lease-ttl", ttl.String(), "--lease-shards", strconv.Itoa(cfg.crashShards))
	if err != nil {
		return err
	}
	steady, err := st.addGateway("steady", "--log-level", "warn")
	if err != nil {
		return err
	}
	// 4,000 per source address: a run right after another finds that many
	// of the ephemeral ports of each still in TIME_WAIT.
	socks, err := dialMany(ctx, doomed.url(), cfg.crashSockets, 128, 4000)
	if err != nil {
		return err
	}
	defer closeAll(socks)
	for r := 0; r < cfg.crashRooms; r++ {
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
	// "Gone" is polled on the dead gateway's leases, not on its keys: a
	// revocation deletes a lease and all its keys in one transaction, and a
	// range over the keys, even count-only, walks the whole key index under
	// its read lock, which (every 50 ms over 250,000 keys) itself stalls
	// writes. One count at the end checks that no key was left.
	leases, err := leasesOf(socks)
	if err != nil {
		return err
	}
	var gone time.Duration
	var firstDrop time.Time // the first poll that found a lease gone
	live := maps.Clone(leases)
	for {
		// One LeaseLeases per poll, whatever the number of shards: a
		// TimeToLive per lease would be 64 requests per poll at 64 shards,
		// load that itself lengthens the pauses measured.
		if resp, err := st.cli.Leases(ctx); err == nil {
			exist := make(map[clientv3.LeaseID]bool, len(resp.Leases))
			for _, l := range resp.Leases {
				exist[l.ID] = true
			}
			for l := range live {
				if !exist[l] {
					delete(live, l)
					if firstDrop.IsZero() {
						firstDrop = time.Now()
					}
				}
			}
		}
		if len(live) == 0 {
			gone = time.Since(killed)
			break
		}
		if time.Since(killed) > 3*ttl {
			gone = -1
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	prefix := store.DefaultPrefix + "gwm/doomed/"
	if resp, err := st.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		return err
	} else if gone >= 0 && resp.Count != 0 {
		return fmt.Errorf("crash: %d membership keys of the dead gateway left after its %d leases were gone", resp.Count, len(leases))
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	// The expiry window: from the first lease found gone to the last, with a
	// poll interval's slack either side.
	winFrom, winTo := firstDrop.Add(-100*time.Millisecond), killed.Add(gone+100*time.Millisecond)
	if firstDrop.IsZero() || gone < 0 {
		winFrom, winTo = killed, time.Now()
	}
	before, during, expiry := &latencies{}, &latencies{}, &latencies{}
	errs := 0
	var worst time.Duration
	var done, doneBefore []time.Time // completions after the kill, and before
	for _, s := range samples {
		end := s.at.Add(s.lat)
		switch {
		case s.at.Before(killed):
			before.add(s.lat)
			doneBefore = append(doneBefore, end)
		default:
			during.add(s.lat)
			worst = max(worst, s.lat)
			if s.err {
				errs++
			}
			done = append(done, end)
		}
		// Calls under way at any moment of the window count.
		if end.After(winFrom) && s.at.Before(winTo) {
			expiry.add(s.lat)
		}
	}
	// The longest gap between successive completions that overlaps the
	// window: no call finished for that long.
	slices.SortFunc(done, func(a, b time.Time) int { return a.Compare(b) })
	var pause time.Duration
	for i := 1; i < len(done); i++ {
		if done[i].After(winFrom) && done[i-1].Before(winTo) {
			pause = max(pause, done[i].Sub(done[i-1]))
		}
	}
	slices.SortFunc(doneBefore, func(a, b time.Time) int { return a.Compare(b) })
	var pauseBefore time.Duration
	for i := 1; i < len(doneBefore); i++ {
		pauseBefore = max(pauseBefore, doneBefore[i].Sub(doneBefore[i-1]))
	}
	keys := (1+2*cfg.crashRooms)*len(socks) + 1
	fmt.Printf("## Gateway crash holding %d sockets and %d memberships (%d keys on %d lease(s); TTL %v)\n\n", len(socks), cfg.crashRooms*len(socks), keys, cfg.crashShards, ttl)
	fmt.Println("| gone after SIGKILL | expiry window | other gateway's Join/Leave p50 / p99 / max write pause before | after the kill: p50 / p99 / max | in the expiry window: p99 / max write pause | failed calls after the kill |")
	fmt.Println("|---|---|---|---|---|---|")
	goneText := "not within 3× TTL"
	if gone >= 0 {
		goneText = fmt.Sprintf("%.2f s", gone.Seconds())
	}
	fmt.Printf("| %s | %.2f s | %s / %s / %s | %s / %s / %s | %s / %s | %d |\n\n", goneText, winTo.Sub(winFrom).Seconds(), ms(before.pct(50)), ms(before.pct(99)), ms(pauseBefore),
		ms(during.pct(50)), ms(during.pct(99)), ms(worst), ms(expiry.pct(99)), ms(pause), errs)
	return nil
}

// leasesOf returns the leases the sockets live on, read from their ids
// ("gateway.lease-in-hex.random").
func leasesOf(socks []*socket) (map[clientv3.LeaseID]bool, error) {
	out := map[clientv3.LeaseID]bool{}
	for _, s := range socks {
		parts := strings.Split(s.id, ".")
		if len(parts) != 3 {
			return nil, fmt.Errorf("socket id %q: not gateway.lease.random", s.id)
		}
		l, err := strconv.ParseUint(parts[1], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("socket id %q: %w", s.id, err)
		}
		out[clientv3.LeaseID(l)] = true
	}
	return out, nil
}
