package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.EtcdLeakOptions()...) }

// connect registers a gateway and one socket on a fresh lease.
func connect(t *testing.T, cli *clientv3.Client, s *store.Store, gw string) store.SocketID {
	t.Helper()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterGateway(ctx, store.GatewayRecord{ID: gw, GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	id := store.NewSocketID(gw, lease.ID)
	if _, err := s.AddSocket(ctx, id, store.SocketRecord{Gateway: gw, ConnectedAt: time.Now(), User: "user-" + id.String()}); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestJoinLeaveIdempotentAndGuarded(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	sock := connect(t, e.Client, s, "gw1")

	r1, err := s.Join(ctx, []store.SocketID{sock}, "fun")
	if err != nil || r1.WasMember[0] {
		t.Fatalf("first join: %+v %v", r1, err)
	}
	r2, err := s.Join(ctx, []store.SocketID{sock}, "fun")
	if err != nil || !r2.WasMember[0] || r2.Revision != r1.Revision {
		t.Fatalf("second join must change nothing: %+v %v (first %+v)", r2, err, r1)
	}
	l1, err := s.Leave(ctx, []store.SocketID{sock}, "fun")
	if err != nil || !l1.WasMember[0] || l1.Revision <= r2.Revision {
		t.Fatalf("leave: %+v %v", l1, err)
	}
	l2, err := s.Leave(ctx, []store.SocketID{sock}, "fun")
	if err != nil || l2.WasMember[0] {
		t.Fatalf("second leave: %+v %v", l2, err)
	}

	ghost := store.NewSocketID("gw1", sock.Lease)
	if _, err := s.Join(ctx, []store.SocketID{ghost}, "fun"); !errors.Is(err, store.ErrSocketNotFound) {
		t.Fatalf("join of unknown socket: %v", err)
	}
	if _, err := s.Leave(ctx, []store.SocketID{ghost}, "fun"); !errors.Is(err, store.ErrSocketNotFound) {
		t.Fatalf("leave of unknown socket: %v", err)
	}

	// Several sockets: atomic, and a missing one is named.
	other := connect(t, e.Client, s, "gw2")
	if _, err := s.Join(ctx, []store.SocketID{sock, ghost, other}, "many"); err == nil {
		t.Fatal("join with a missing socket succeeded")
	} else if nf, ok := err.(*store.SocketsNotFoundError); !ok || len(nf.IDs) != 1 || nf.IDs[0] != ghost.String() {
		t.Fatalf("error %v does not name the missing socket", err)
	}
	if members, _, _, _ := s.ListMembers(ctx, "many", "", 10); len(members) != 0 {
		t.Fatalf("a failed multi-socket join wrote %v", members)
	}
	if _, err := s.Join(ctx, []store.SocketID{sock}, "many"); err != nil {
		t.Fatal(err)
	}
	res, err := s.Join(ctx, []store.SocketID{sock, other}, "many")
	if err != nil || !res.WasMember[0] || res.WasMember[1] {
		t.Fatalf("multi-socket join: %+v %v", res, err)
	}
}

func TestRoomWideOperationsPastOneTransaction(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	var socks []store.SocketID
	for i := 0; i < 300; i++ {
		socks = append(socks, connect(t, e.Client, s, "gw1"))
	}
	added, _, err := s.AddToRooms(ctx, socks, []string{"src", "other"})
	if err != nil || added != 600 {
		t.Fatalf("added %d, %v", added, err)
	}
	members, rev, err := s.RoomMembers(ctx, "src", 0)
	if err != nil || len(members) != 300 {
		t.Fatalf("members %d %v", len(members), err)
	}
	// One page of 300 reads the members' users in more than one transaction.
	listed, next, _, err := s.ListMembers(ctx, "src", "", 1000)
	if err != nil || len(listed) != 300 || next != "" {
		t.Fatalf("ListMembers: %d members, next %q, %v", len(listed), next, err)
	}
	for _, m := range listed {
		if m.User != "user-"+m.SocketID || m.Gateway != "gw1" {
			t.Fatalf("member %+v", m)
		}
	}
	if again, _, err := s.AddToRooms(ctx, members, []string{"src", "dst"}); err != nil || again != 300 {
		t.Fatalf("second add changed %d, %v", again, err)
	}
	removed, err := s.RemoveFromRooms(ctx, members[:100], []string{"dst", "nowhere"})
	if err != nil || removed != 100 {
		t.Fatalf("removed %d, %v", removed, err)
	}
	// Rooms as of rev: src and other (dst came later and stays).
	left, err := s.LeaveAllRooms(ctx, members, rev)
	if err != nil || left != 600 {
		t.Fatalf("leave all removed %d, %v", left, err)
	}
	for room, want := range map[string]int{"src": 0, "other": 0, "dst": 200} {
		got, _, err := s.RoomMembers(ctx, room, 0)
		if err != nil || len(got) != want {
			t.Errorf("room %s: %d members, want %d (%v)", room, len(got), want, err)
		}
	}
}

func TestRemoveSocketLeavesNothing(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	sock := connect(t, e.Client, s, "gw1")
	other := connect(t, e.Client, s, "gw2")
	// More rooms than one transaction may hold.
	for i := 0; i < 150; i++ {
		if _, err := s.Join(ctx, []store.SocketID{sock}, "room-"+string(rune('a'+i%26))+string(rune('a'+i/26))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Join(ctx, []store.SocketID{other}, "room-aa"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveSocket(ctx, sock); err != nil {
		t.Fatal(err)
	}
	resp, err := e.Client.Get(ctx, "/t/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if contains(string(kv.Key), sock.String()) {
			t.Errorf("key left behind: %s", kv.Key)
		}
	}
	if resp.Count != 6 { // 2 gateways, 1 socket with its user index key, 2 membership keys
		t.Errorf("got %d keys, want 6", resp.Count)
	}
	if _, err := s.Join(ctx, []store.SocketID{sock}, "x"); !errors.Is(err, store.ErrSocketNotFound) {
		t.Fatalf("join after removal: %v", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestRoomNamesRoundTrip(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "")
	ctx := context.Background()
	sock := connect(t, e.Client, s, "gw1")
	names := []string{"a/b", "100%", "with space", "%2F", "a", "a!", "a0", "ünï/cødé %25", "a/", "/"}
	for _, n := range names {
		if _, err := s.Join(ctx, []store.SocketID{sock}, n); err != nil {
			t.Fatal(err)
		}
	}
	// Page through with a small page size to exercise the cursor.
	x := startIndex(t, e.Client, s)
	seen := map[string]int64{}
	after := ""
	for pages := 0; ; pages++ {
		rooms, next, _, err := x.ListRooms(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rooms {
			if _, dup := seen[r.Room]; dup {
				t.Fatalf("room %q listed twice", r.Room)
			}
			seen[r.Room] = r.Members
		}
		if next == "" {
			break
		}
		after = next
		if pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(seen) != len(names) {
		t.Fatalf("listed %v, want %v", seen, names)
	}
	for _, n := range names {
		if seen[n] != 1 {
			t.Errorf("room %q: count %d", n, seen[n])
		}
	}
	info, _, err := s.GetSocket(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Rooms) != len(names) {
		t.Fatalf("socket rooms %q", info.Rooms)
	}
}

func TestSocketIDAndRoomValidation(t *testing.T) {
	id := store.NewSocketID("gw-1", 0x1234)
	got, err := store.ParseSocketID(id.String())
	if err != nil || got != id {
		t.Fatalf("round trip %q: %+v %v", id, got, err)
	}
	upper := id.Gateway + "." + strings.ToUpper(fmt.Sprintf("%016x", int64(id.Lease)|0xabc)) + "." + id.Nonce
	for _, bad := range []string{upper, "", "x", "gw.0000000000001234.short", "g/w.0000000000001234." + id.Nonce, "gw.zz00000000001234." + id.Nonce, "gw.0000000000000000." + id.Nonce} {
		if _, err := store.ParseSocketID(bad); err == nil {
			t.Errorf("ParseSocketID(%q) accepted", bad)
		}
	}
	long := make([]byte, 257)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", string(long), "a\nb", "\x7f", "\xff"} {
		if store.ValidateRoom(bad) == nil {
			t.Errorf("ValidateRoom(%q) accepted", bad)
		}
	}
	if err := store.ValidateRoom(string(long[:256])); err != nil {
		t.Errorf("256-byte room refused: %v", err)
	}
}
