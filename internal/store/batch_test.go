package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// Concurrent calls share transactions yet each keeps its own guard and
// result; calls on the same membership never share one (etcd would refuse it).
func TestBatchedJoinLeaveKeepPerCallSemantics(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	stop := s.StartBatching(2)
	defer stop()
	ctx := context.Background()
	const workers, ops = 32, 40
	socks := make([]store.SocketID, workers)
	for i := range socks {
		socks[i] = connect(t, e.Client, s, "gw1")
	}
	ghost := store.NewSocketID("gw1", socks[0].Lease)

	// Many calls on one hot membership: exactly one finds it new.
	var fresh atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Join(ctx, []store.SocketID{socks[0]}, "hot")
			if err != nil {
				t.Error(err)
				return
			}
			if !res.WasMember[0] {
				fresh.Add(1)
			}
		}()
	}
	wg.Wait()
	if fresh.Load() != 1 {
		t.Fatalf("%d concurrent joins of one membership reported it new", fresh.Load())
	}

	// Each worker owns a socket; a missing socket fails only its own call.
	intended := make([]map[string]bool, workers)
	for w := 0; w < workers; w++ {
		intended[w] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := 0; i < ops; i++ {
				room := fmt.Sprintf("r%d", rng.IntN(4))
				join := rng.IntN(2) == 0
				var err error
				var res store.ChangeResult
				if join {
					res, err = s.Join(ctx, []store.SocketID{socks[w]}, room)
				} else {
					res, err = s.Leave(ctx, []store.SocketID{socks[w]}, room)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if res.WasMember[0] != intended[w][room] {
					t.Errorf("worker %d op %d: was_member %v, want %v", w, i, res.WasMember[0], intended[w][room])
				}
				intended[w][room] = join
				if i%10 == 0 {
					if _, err := s.Join(ctx, []store.SocketID{socks[w], ghost}, room); err == nil {
						t.Error("a call naming a missing socket succeeded")
					}
				}
			}
		}()
	}
	wg.Wait()
	for r := 0; r < 4; r++ {
		room := fmt.Sprintf("r%d", r)
		members, _, err := s.RoomMembers(ctx, room, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, m := range members {
			got[m.String()] = true
		}
		for w := range socks {
			if got[socks[w].String()] != intended[w][room] {
				t.Errorf("%s: socket %d member %v, intended %v", room, w, got[socks[w].String()], intended[w][room])
			}
		}
	}
	txns, calls := s.BatchStats()
	t.Logf("%d calls in %d transactions", calls, txns)
	if txns >= calls {
		t.Errorf("nothing was coalesced: %d calls in %d transactions", calls, txns)
	}
}
