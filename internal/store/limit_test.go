package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

func roomsOf(t *testing.T, s *store.Store, sock store.SocketID) []string {
	t.Helper()
	info, _, err := s.GetSocket(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	return info.Rooms
}

func TestRoomLimit(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	s.SetMaxRoomsPerSocket(3)
	ctx := context.Background()
	a, b := connect(t, e.Client, s, "gw1"), connect(t, e.Client, s, "gw1")
	for _, room := range []string{"r1", "r2", "r3"} {
		if _, err := s.Join(ctx, []store.SocketID{a}, room); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Join(ctx, []store.SocketID{b, a}, "r4")
	var rl *store.RoomLimitError
	if !errors.As(err, &rl) || len(rl.IDs) != 1 || rl.IDs[0] != a.String() || rl.Limit != 3 || !errors.Is(err, store.ErrRoomLimit) {
		t.Fatalf("join past the limit: %v", err)
	}
	if got := roomsOf(t, s, b); len(got) != 0 {
		t.Fatalf("a refused join changed the other socket: %v", got)
	}
	// Re-joining a room it is in is no new room.
	if res, err := s.Join(ctx, []store.SocketID{a}, "r2"); err != nil || !res.WasMember[0] {
		t.Fatalf("re-join at the limit: %+v %v", res, err)
	}
	if _, err := s.Leave(ctx, []store.SocketID{a}, "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx, []store.SocketID{a, b}, "r4"); err != nil {
		t.Fatalf("join after a leave: %v", err)
	}
	// A missing socket is still NOT_FOUND, not a conflict.
	ghost := store.NewSocketID("gw1", a.Lease)
	if _, err := s.Join(ctx, []store.SocketID{ghost}, "r1"); !errors.Is(err, store.ErrSocketNotFound) {
		t.Fatalf("join of a missing socket: %v", err)
	}

	// Room-wide: each socket joins all of its missing rooms or none.
	for _, room := range []string{"r2", "r3"} {
		if _, err := s.Join(ctx, []store.SocketID{b}, room); err != nil {
			t.Fatal(err)
		}
	}
	c := connect(t, e.Client, s, "gw1")
	// a: r2 r3 r4, b: r2 r3 r4, c: none. Adding r5 and r6 fits only c.
	added, over, err := s.AddToRooms(ctx, []store.SocketID{a, b, c}, []string{"r4", "r5", "r6"})
	if err != nil || added != 3 || over != 2 {
		t.Fatalf("AddToRooms: added %d, over %d, %v; want 3, 2", added, over, err)
	}
	if got := roomsOf(t, s, c); fmt.Sprint(got) != "[r4 r5 r6]" {
		t.Fatalf("c in %v", got)
	}
	if got := roomsOf(t, s, a); fmt.Sprint(got) != "[r2 r3 r4]" {
		t.Fatalf("a in %v", got)
	}
}

// Concurrent Joins of one socket into different rooms never take it past the
// limit, with and without coalescing (one committer, so that calls queue and
// would share transactions if nothing kept them apart); each Join that
// reported success is in effect.
func TestRoomLimitUnderConcurrentJoins(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprint("batched=", batched), func(t *testing.T) {
			e := testutil.StartEtcd(t)
			s := store.New(e.Client, "/t/")
			if batched {
				defer s.StartBatching(1)()
			}
			const limit, joins, rounds = 5, 40, 10
			s.SetMaxRoomsPerSocket(limit)
			ctx := context.Background()
			for range rounds {
				sock := connect(t, e.Client, s, "gw1")
				var mu sync.Mutex
				var joined []string
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range joins {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						room := fmt.Sprintf("room%02d", i)
						_, err := s.Join(ctx, []store.SocketID{sock}, room)
						switch {
						case err == nil:
							mu.Lock()
							joined = append(joined, room)
							mu.Unlock()
						case errors.Is(err, store.ErrRoomLimit), errors.Is(err, store.ErrConflict):
						default:
							t.Error(err)
						}
					}()
				}
				close(start)
				wg.Wait()
				got := roomsOf(t, s, sock)
				if len(got) > limit || len(got) != len(joined) {
					t.Fatalf("socket in %d rooms %v; %d joins succeeded; limit %d", len(got), got, len(joined), limit)
				}
			}
		})
	}
}
