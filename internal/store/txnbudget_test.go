package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// connectMany registers gateway gw and n sockets on one lease, as a gateway
// holding n connections does.
func connectMany(t *testing.T, cli *clientv3.Client, s *store.Store, gw string, n int) []store.SocketID {
	t.Helper()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterGateway(ctx, store.GatewayRecord{ID: gw, GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	socks := make([]store.SocketID, n)
	for i := range socks {
		socks[i] = store.NewSocketID(gw, lease.ID)
		if _, err := s.AddSocket(ctx, socks[i], store.SocketRecord{Gateway: gw, ConnectedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return socks
}

// longRoom is a room name of n bytes, distinct per i.
func longRoom(i, n int) string {
	p := fmt.Sprintf("room-%03d-", i)
	return p + strings.Repeat("x", n-len(p))
}

// Calls that each fit etcd's limits must also fit when coalesced: 40
// concurrent Joins of 100 sockets to 200-byte rooms are each ~130 KB of
// transaction, and as many as the operation limit allows (26) would be
// ~3.4 MB in one transaction, past the client's 2 MiB send limit and etcd's
// 1.5 MiB --max-request-bytes.
func TestCoalescedJoinsStayWithinRequestBytes(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	stop := s.StartBatching(4)
	defer stop()
	socks := connectMany(t, e.Client, s, "gw1", 100)
	ctx := context.Background()
	const calls = 40
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Join(ctx, socks, longRoom(i, 200))
			if err != nil {
				t.Errorf("join %d: %v", i, err)
				return
			}
			for j, was := range res.WasMember {
				if was {
					t.Errorf("join %d: socket %d already a member", i, j)
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < calls; i++ {
		members, _, err := s.RoomMembers(ctx, longRoom(i, 200), 0)
		if err != nil || len(members) != len(socks) {
			t.Errorf("room %d: %d members, want %d (%v)", i, len(members), len(socks), err)
		}
	}
}

// smallBytes is an etcd --max-request-bytes far below the default, at which
// a dozen memberships with long room names fill a transaction.
const smallBytes = 16 << 10

// startSmallEtcd starts an etcd with --max-request-bytes smallBytes and a
// store sized for it.
func startSmallEtcd(t *testing.T) (*testutil.Etcd, *store.Store) {
	t.Helper()
	e := testutil.StartEtcdWithLimits(t, smallBytes, 0)
	s := store.New(e.Client, "/t/")
	if err := s.SetTxnLimits(store.TxnLimits{MaxRequestBytes: smallBytes}); err != nil {
		t.Fatal(err)
	}
	return e, s
}

// Under a small --max-request-bytes, concurrent calls that each fit are
// coalesced only as far as the bytes allow, and a call that cannot fit alone
// is refused before it reaches etcd, naming the sizes.
func TestSmallRequestBytesCoalescing(t *testing.T) {
	e, s := startSmallEtcd(t)
	stop := s.StartBatching(2)
	defer stop()
	socks := connectMany(t, e.Client, s, "gw1", 100)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			group := socks[i%20*5 : i%20*5+5]
			if _, err := s.Join(ctx, group, longRoom(i, 200)); err != nil {
				t.Errorf("join %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 40; i++ {
		if members, _, err := s.RoomMembers(ctx, longRoom(i, 200), 0); err != nil || len(members) != 5 {
			t.Errorf("room %d: %d members (%v)", i, len(members), err)
		}
	}
	if txns, calls := s.BatchStats(); txns >= calls {
		t.Errorf("nothing was coalesced: %d calls in %d transactions", calls, txns)
	}

	_, err := s.Join(ctx, socks, longRoom(99, 200))
	var tl *store.TxnTooLargeError
	if !errors.As(err, &tl) || tl.Bytes <= tl.MaxBytes || tl.MaxBytes > smallBytes {
		t.Fatalf("join of 100 sockets: %v", err)
	}
	if members, _, _ := s.RoomMembers(ctx, longRoom(99, 200), 0); len(members) != 0 {
		t.Fatalf("a refused join wrote %d members", len(members))
	}
}

// Room-wide changes and socket removal split their work by bytes, not only by
// operations: a socket in 150 rooms of 250-byte names, and 300 members times
// three such rooms, are each far past one 16 KiB transaction.
func TestSmallRequestBytesRoomWideAndRemoveSocket(t *testing.T) {
	e, s := startSmallEtcd(t)
	ctx := context.Background()
	socks := connectMany(t, e.Client, s, "gw1", 301)
	big, socks := socks[300], socks[:300]
	rooms := make([]string, 150)
	for i := range rooms {
		rooms[i] = longRoom(i, 250)
	}
	if added, _, err := s.AddToRooms(ctx, []store.SocketID{big}, rooms); err != nil || added != 150 {
		t.Fatalf("add one socket to 150 rooms: added %d, %v", added, err)
	}
	if added, _, err := s.AddToRooms(ctx, socks, []string{"src"}); err != nil || added != 300 {
		t.Fatalf("add to src: added %d, %v", added, err)
	}
	dests := rooms[:3]
	members, rev, err := s.RoomMembers(ctx, "src", 0)
	if err != nil || len(members) != 300 {
		t.Fatalf("src: %d members, %v", len(members), err)
	}
	if added, _, err := s.AddToRooms(ctx, members, dests); err != nil || added != 3*300 {
		t.Fatalf("add members to rooms: added %d, %v", added, err)
	}
	if removed, err := s.RemoveFromRooms(ctx, members[:100], dests); err != nil || removed != 3*100 {
		t.Fatalf("remove members from rooms: removed %d, %v", removed, err)
	}
	// Rooms as of rev: src alone (the dests came later and stay).
	if removed, err := s.LeaveAllRooms(ctx, members[100:], rev); err != nil || removed != 200 {
		t.Fatalf("leave all: removed %d, %v", removed, err)
	}
	if err := s.RemoveSocket(ctx, big); err != nil {
		t.Fatalf("remove a socket in 150 rooms: %v", err)
	}
	for i, room := range rooms {
		want := 0
		if i < len(dests) {
			want = 200
		}
		if got, _, err := s.RoomMembers(ctx, room, 0); err != nil || len(got) != want {
			t.Fatalf("room %d: %d members, want %d (%v)", i, len(got), want, err)
		}
	}
	if got, _, err := s.RoomMembers(ctx, "src", 0); err != nil || len(got) != 100 {
		t.Fatalf("src: %d members, want 100 (%v)", len(got), err)
	}
	resp, err := e.Client.Get(ctx, "/t/gwm/gw1/"+big.String()+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("removed socket keeps membership keys: %v %v", resp, err)
	}
}
