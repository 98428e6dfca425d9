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

// concurrentJoins joins sock to joins different rooms at once, spread over
// the given stores (membership-servers), and returns the rooms whose Join
// succeeded and how many calls failed with ErrConflict.
func concurrentJoins(t *testing.T, stores []*store.Store, sock store.SocketID, joins int) (joined []string, conflicts int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range joins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			room := fmt.Sprintf("room%02d", i)
			_, err := stores[i%len(stores)].Join(context.Background(), []store.SocketID{sock}, room)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				joined = append(joined, room)
			case errors.Is(err, store.ErrConflict):
				conflicts++
			case errors.Is(err, store.ErrRoomLimit):
			default:
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	return joined, conflicts
}

// Concurrent Joins of one socket through one membership-server take turns:
// all that fit succeed, none conflicts, and the limit holds; with and
// without coalescing (one committer, so that calls queue and would share
// transactions if nothing kept them apart).
func TestRoomLimitUnderConcurrentJoins(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprint("batched=", batched), func(t *testing.T) {
			e := testutil.StartEtcd(t)
			s := store.New(e.Client, "/t/")
			if batched {
				defer s.StartBatching(1)()
			}
			const limit, joins = 5, 40
			s.SetMaxRoomsPerSocket(limit)
			for range 5 {
				sock := connect(t, e.Client, s, "gw1")
				joined, conflicts := concurrentJoins(t, []*store.Store{s}, sock, joins)
				got := roomsOf(t, s, sock)
				if len(joined) != limit || len(got) != limit || conflicts != 0 {
					t.Fatalf("%d joins succeeded, %d conflicted, socket in %v; want %d, 0", len(joined), conflicts, got, limit)
				}
			}
			// Well under the limit, every concurrent Join succeeds.
			sock := connect(t, e.Client, s, "gw1")
			s.SetMaxRoomsPerSocket(100)
			if joined, conflicts := concurrentJoins(t, []*store.Store{s}, sock, 20); len(joined) != 20 || conflicts != 0 {
				t.Fatalf("under the limit: %d of 20 joins succeeded, %d conflicted", len(joined), conflicts)
			}
		})
	}
}

// Through several membership-servers the Joins of one socket race; the guard
// keeps the limit exact, and each Join that reported success is in effect.
func TestRoomLimitAcrossServers(t *testing.T) {
	e := testutil.StartEtcd(t)
	const limit, joins = 5, 40
	var stores []*store.Store
	for range 4 {
		s := store.New(e.Client, "/t/")
		defer s.StartBatching(1)()
		s.SetMaxRoomsPerSocket(limit)
		stores = append(stores, s)
	}
	conflicts := 0
	for range 10 {
		sock := connect(t, e.Client, stores[0], "gw1")
		joined, c := concurrentJoins(t, stores, sock, joins)
		conflicts += c
		if got := roomsOf(t, stores[0], sock); len(got) > limit || len(got) != len(joined) {
			t.Fatalf("socket in %d rooms %v; %d joins succeeded; limit %d", len(got), got, len(joined), limit)
		}
	}
	t.Logf("%d of %d joins gave up on conflicts", conflicts, 10*joins)
}

// A socket that is gone is NOT_FOUND, not over the limit, even while its
// memberships are still there.
func TestRoomLimitMissingSocketIsNotFound(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	s.SetMaxRoomsPerSocket(1)
	ctx := context.Background()
	sock := connect(t, e.Client, s, "gw1")
	if _, err := s.Join(ctx, []store.SocketID{sock}, "r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Delete(ctx, "/t/sockets/"+sock.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx, []store.SocketID{sock}, "r2"); !errors.Is(err, store.ErrSocketNotFound) {
		t.Fatalf("join of a removed socket at the limit: %v", err)
	}
	if added, over, err := s.AddToRooms(ctx, []store.SocketID{sock}, []string{"r2"}); added != 0 || over != 0 || err != nil {
		t.Fatalf("AddToRooms of a removed socket: added %d, over %d, %v", added, over, err)
	}
}

// A limited Join of as many sockets as it may name, one of them moved to
// another gateway, succeeds: its reads fit --max-txn-ops, and the moved
// socket's rooms are counted and guarded where they are.
func TestRoomLimitWidestJoin(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	s.SetMaxRoomsPerSocket(2)
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	socks := make([]store.SocketID, s.SocketsPerLimitedJoin())
	for i := range socks {
		socks[i] = connectUser(t, s, "gwa", a.Lease, "")
	}
	if _, err := s.Join(ctx, socks[:1], "first"); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveSocket(ctx, socks[0], a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx, socks, "wide"); err != nil {
		t.Fatalf("limited join of %d sockets: %v", len(socks), err)
	}
	_, err := s.Join(ctx, socks, "third")
	var rl *store.RoomLimitError
	if !errors.As(err, &rl) || len(rl.IDs) != 1 || rl.IDs[0] != socks[0].String() {
		t.Fatalf("a third room for the moved socket in 2: %v, want it over the limit", err)
	}
}
