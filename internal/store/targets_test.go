package store_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// startIndex runs a target index over cli (keys as s's) until the test ends.
func startIndex(t *testing.T, cli *clientv3.Client, s *store.Store) *store.TargetIndex {
	t.Helper()
	return startIndexLogged(t, cli, s, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func startIndexLogged(t *testing.T, cli *clientv3.Client, s *store.Store, log *slog.Logger) *store.TargetIndex {
	t.Helper()
	x := s.NewTargetIndex(cli, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return x
}

// logCount is a slog handler keeping the messages of warnings and errors, so
// a test can tell that something really went wrong.
type logCount struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logCount) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelWarn }
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler             { return l }
func (l *logCount) WithGroup(string) slog.Handler                  { return l }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}

func (l *logCount) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// wantTargets fails unless x's targets of rooms are exactly gws.
func wantTargets(t *testing.T, ctx context.Context, x *store.TargetIndex, rooms []string, gws ...string) {
	t.Helper()
	got, err := x.Targets(ctx, rooms)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range got.Gateways {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	slices.Sort(gws)
	if !slices.Equal(ids, gws) {
		t.Fatalf("targets of %v: %v, want %v", rooms, ids, gws)
	}
}

// allRooms pages through x's rooms with page size n.
func allRooms(t *testing.T, ctx context.Context, x *store.TargetIndex, n int) []store.RoomCount {
	t.Helper()
	var out []store.RoomCount
	after := ""
	for pages := 0; ; pages++ {
		rooms, next, _, err := x.ListRooms(ctx, after, n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rooms...)
		if next == "" {
			return out
		}
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		after = next
	}
}

func TestTargetIndexFollowsMembershipsGatewaysAndLeases(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a := connect(t, e.Client, s, "gwa")
	b := connect(t, e.Client, s, "gwb")
	if _, err := s.Join(ctx, []store.SocketID{a}, "r"); err != nil {
		t.Fatal(err)
	}
	x := s.NewTargetIndex(e.Client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { x.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()

	want := func(rooms []string, gws ...string) {
		t.Helper()
		got, err := x.Targets(ctx, rooms)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Gateways) != len(gws) {
			t.Fatalf("targets of %v: %v, want %v", rooms, got.Gateways, gws)
		}
		for _, g := range gws {
			if _, ok := got.Gateways[g]; !ok {
				t.Fatalf("targets of %v: %v, want %v", rooms, got.Gateways, gws)
			}
		}
	}
	want([]string{"r"}, "gwa") // from the initial listing
	if _, err := s.Join(ctx, []store.SocketID{b}, "r"); err != nil {
		t.Fatal(err)
	}
	want([]string{"r"}, "gwa", "gwb") // from the watch, without waiting
	want([]string{"elsewhere"})
	want(nil, "gwa", "gwb")
	if _, err := s.Leave(ctx, []store.SocketID{a}, "r"); err != nil {
		t.Fatal(err)
	}
	want([]string{"r"}, "gwb")
	// A gateway whose lease ends takes its memberships and its record along.
	if _, err := e.Client.Revoke(ctx, b.Lease); err != nil {
		t.Fatal(err)
	}
	want([]string{"r"})
	want(nil, "gwa")
	// History compacted under the watch: the index rebuilds and stays right.
	if _, err := s.Join(ctx, []store.SocketID{a}, "r2"); err != nil {
		t.Fatal(err)
	}
	resp, err := e.Client.Get(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx, []store.SocketID{a}, "r3"); err != nil {
		t.Fatal(err)
	}
	want([]string{"r2", "r3"}, "gwa")
}

// An election long enough for etcd to cancel the index's watch (it requires
// a leader) must cost a resumed watch, not a new listing of the keyspace.
func TestTargetIndexResumesAfterLeaderLossWithoutListing(t *testing.T) {
	c := testutil.StartCluster(t, 3)
	eps := c.Endpoints()
	all := testutil.NewClient(t, eps...)
	s := store.New(all, "/t/")
	ctx := context.Background()
	a := connect(t, all, s, "gwa")
	b := connect(t, all, s, "gwb")
	if _, err := s.Join(ctx, []store.SocketID{a}, "r"); err != nil {
		t.Fatal(err)
	}
	// The index talks to member 0 alone, which is left without a leader.
	one := testutil.NewClient(t, eps[0])
	logs := &logCount{}
	x := startIndexLogged(t, one, store.New(one, "/t/"), slog.New(logs))
	wantTargets(t, ctx, x, []string{"r"}, "gwa")
	if n := x.Listings(); n != 1 {
		t.Fatalf("%d listings at start, want 1", n)
	}

	c.Stop(1)
	c.Stop(2)
	// etcd cancels watches that require a leader after three election
	// timeouts without one.
	deadline := time.Now().Add(20 * time.Second)
	for logs.count() == 0 { // the index warns of its interrupted watch
		if time.Now().After(deadline) {
			t.Fatal("the index's watch was never interrupted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		_, err := s.Join(cctx, []store.SocketID{b}, "r")
		if err == nil {
			break
		}
		if cctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantTargets(t, cctx, x, []string{"r"}, "gwa", "gwb")
	if n := x.Listings(); n != 1 {
		t.Fatalf("%d listings after the watch was interrupted, want 1 (resumed, not re-listed)", n)
	}
}

// A compaction while the index is cut off from etcd makes it list again, and
// what it then holds is exactly etcd's state: nothing missed, nothing kept
// that went away meanwhile.
func TestTargetIndexListsAgainAfterCompactionDuringOutage(t *testing.T) {
	e := testutil.StartEtcd(t)
	p := testutil.StartProxy(t, e.Endpoint)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a := connect(t, e.Client, s, "gwa")
	b := connect(t, e.Client, s, "gwb")
	c := connect(t, e.Client, s, "gwc")
	for _, j := range []struct {
		sock store.SocketID
		room string
	}{{a, "stay"}, {b, "stay"}, {a, "gone"}, {c, "with-c"}, {c, "stay"}} {
		if _, err := s.Join(ctx, []store.SocketID{j.sock}, j.room); err != nil {
			t.Fatal(err)
		}
	}
	cut := testutil.NewClient(t, p.Endpoint())
	x := startIndex(t, cut, store.New(cut, "/t/"))
	wantTargets(t, ctx, x, []string{"stay"}, "gwa", "gwb", "gwc")

	p.Pause()
	if _, err := s.Join(ctx, []store.SocketID{b}, "new"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Leave(ctx, []store.SocketID{a}, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Revoke(ctx, c.Lease); err != nil { // gwc, its socket and memberships
		t.Fatal(err)
	}
	resp, err := e.Client.Get(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	p.Resume()

	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	wantTargets(t, cctx, x, []string{"stay"}, "gwa", "gwb")
	wantTargets(t, cctx, x, []string{"gone", "with-c"})
	wantTargets(t, cctx, x, nil, "gwa", "gwb")
	got := allRooms(t, cctx, x, 100)
	// connect gives every socket its own user: as many users as members,
	// counted across the relisting too.
	want := []store.RoomCount{{Room: "new", Members: 1, Users: 1}, {Room: "stay", Members: 2, Users: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("rooms %v, want %v", got, want)
	}
	if rooms, memberships, gateways := x.Sizes(); rooms != 2 || memberships != 3 || gateways != 2 {
		t.Fatalf("sizes %d rooms, %d memberships, %d gateways; want 2, 3, 2", rooms, memberships, gateways)
	}
	if n := x.Listings(); n != 2 {
		t.Fatalf("%d listings, want 2 (start, compaction)", n)
	}
}

// A connection to etcd that stays open but carries nothing (its peer gone
// without a reset) must not hold the index back for good: the client's
// keepalive replaces it, and the watch resumes on the new one.
func TestTargetIndexCatchesUpAfterSilentConnection(t *testing.T) {
	e := testutil.StartEtcd(t)
	p := testutil.StartProxy(t, e.Endpoint)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a := connect(t, e.Client, s, "gwa")
	b := connect(t, e.Client, s, "gwb")
	if _, err := s.Join(ctx, []store.SocketID{a}, "r"); err != nil {
		t.Fatal(err)
	}
	cut := testutil.NewClient(t, p.Endpoint())
	x := startIndex(t, cut, store.New(cut, "/t/"))
	wantTargets(t, ctx, x, []string{"r"}, "gwa")

	p.Stall()
	if _, err := s.Join(ctx, []store.SocketID{b}, "r"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	wantTargets(t, cctx, x, []string{"r"}, "gwa", "gwb")
	if n := x.Listings(); n != 1 {
		t.Fatalf("%d listings, want 1", n)
	}
}

// Rooms are listed in byte-wise order of their names, whatever their
// escaping in keys does to etcd's order, each once, at every page size.
func TestTargetIndexListRoomsInNameOrder(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a := connect(t, e.Client, s, "gwa")
	b := connect(t, e.Client, s, "gwb")
	names := []string{"zz", "zz b", "zz/x", "zz%", "zz-", "a", "zz%2F", "zz0", "é", "日本", "ü/x", "A", "zz.", "zz~", "zzz"}
	for i, n := range names {
		if _, err := s.Join(ctx, []store.SocketID{a}, n); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := s.Join(ctx, []store.SocketID{b}, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	x := startIndex(t, e.Client, s)
	want := slices.Clone(names)
	slices.Sort(want)
	for _, size := range []int{1, 2, 100} {
		got := allRooms(t, ctx, x, size)
		var gotNames []string
		for _, r := range got {
			gotNames = append(gotNames, r.Room)
			wantMembers := int64(1)
			if i := slices.Index(names, r.Room); i%2 == 0 {
				wantMembers = 2
			}
			if r.Members != wantMembers {
				t.Errorf("page size %d: room %q has %d members, want %d", size, r.Room, r.Members, wantMembers)
			}
		}
		if !slices.Equal(gotNames, want) {
			t.Fatalf("page size %d: listed %q\nwant %q", size, gotNames, want)
		}
	}
}

// Joins and leaves between pages do not make paging skip or repeat a room
// that has members throughout.
func TestTargetIndexListRoomsPagingUnderChange(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a := connect(t, e.Client, s, "gwa")
	b := connect(t, e.Client, s, "gwb")
	// Escaping ('%', '/') and ' ' < '/' make key order differ from name order.
	stable := []string{"b", "b c", "b/c", "b%", "d", "d e", "d/e", "f", "ü", "日"}
	for _, n := range stable {
		if _, err := s.Join(ctx, []store.SocketID{a}, n); err != nil {
			t.Fatal(err)
		}
	}
	transient := []string{"a", "b ", "b/", "c", "d%2F", "d/", "e", "é", "z"}
	x := startIndex(t, e.Client, s)
	for _, size := range []int{1, 2, 3} {
		seen := map[string]int{}
		var order []string
		after := ""
		for step := 0; ; step++ {
			rooms, next, rev, err := x.ListRooms(ctx, after, size)
			if err != nil {
				t.Fatal(err)
			}
			if rev == 0 {
				t.Fatal("page without a revision")
			}
			for _, r := range rooms {
				seen[r.Room]++
				order = append(order, r.Room)
			}
			if next == "" {
				break
			}
			after = next
			// Rooms appear and vanish on both sides of the cursor.
			tr := transient[step%len(transient)]
			if step%2 == 0 {
				_, err = s.Join(ctx, []store.SocketID{b}, tr)
			} else {
				_, err = s.Leave(ctx, []store.SocketID{b}, transient[(step-1)%len(transient)])
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !slices.IsSorted(order) {
			t.Fatalf("page size %d: out of order: %q", size, order)
		}
		for _, n := range stable {
			if seen[n] != 1 {
				t.Fatalf("page size %d: room %q listed %d times (%q)", size, n, seen[n], order)
			}
		}
		for n, k := range seen {
			if k != 1 {
				t.Fatalf("page size %d: room %q listed %d times", size, n, k)
			}
		}
	}
}

// An index that stopped after catching up with etcd refuses with
// ErrShuttingDown: it already holds etcd's current revision, but it will
// follow no change from now on.
func TestTargetIndexStoppedAfterCatchingUpRefuses(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "")
	x := s.NewTargetIndex(e.Client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	bg, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if _, err := x.Targets(bg, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if _, err := x.Targets(bg, []string{"r"}); !errors.Is(err, store.ErrShuttingDown) {
		t.Errorf("Targets after stop: %v, want ErrShuttingDown", err)
	}
	if _, _, _, err := x.ListRooms(bg, "", 10); !errors.Is(err, store.ErrShuttingDown) {
		t.Errorf("ListRooms after stop: %v, want ErrShuttingDown", err)
	}
}

// GatewayChanges signals every registration and every end of one (a lease
// revoked), after Gateway shows it; a burst of changes coalesces. GatewayAsOf
// vouches for a record only once the index has applied the revision asked.
func TestTargetIndexSignalsGatewayChanges(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	x := startIndex(t, e.Client, s)
	if _, err := x.Targets(ctx, nil); err != nil { // the first listing is in
		t.Fatal(err)
	}
	drain := func() {
		select {
		case <-x.GatewayChanges():
		default:
		}
	}
	signalled := func(what string) {
		t.Helper()
		select {
		case <-x.GatewayChanges():
		case <-time.After(5 * time.Second):
			t.Fatalf("no signal after %s", what)
		}
	}
	drain()
	sock := connect(t, e.Client, s, "gwa")
	signalled("a registration")
	rec, ok := x.Gateway("gwa")
	if !ok || rec.Lease != sock.Lease {
		t.Fatalf("after the signal Gateway gives %+v %v, want the record on lease %x", rec, ok, sock.Lease)
	}
	resp, err := e.Client.Get(ctx, "nothing")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.Targets(ctx, nil); err != nil { // catch up to resp's revision
		t.Fatal(err)
	}
	if _, ok := x.GatewayAsOf("gwa", resp.Header.Revision); !ok {
		t.Fatal("GatewayAsOf refuses a revision the index has applied")
	}
	if _, ok := x.GatewayAsOf("gwa", resp.Header.Revision+1000); ok {
		t.Fatal("GatewayAsOf vouches for a revision the index has not applied")
	}

	drain()
	if _, err := e.Client.Revoke(ctx, sock.Lease); err != nil {
		t.Fatal(err)
	}
	signalled("a lease revoked")
	if rec, ok := x.Gateway("gwa"); ok {
		t.Fatalf("after the signal Gateway still gives %+v", rec)
	}
}
