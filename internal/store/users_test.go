package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// connectUser adds a socket of user ("" for none) on lease.
func connectUser(t *testing.T, s *store.Store, gw string, lease clientv3.LeaseID, user string) store.SocketID {
	t.Helper()
	id := store.NewSocketID(gw, lease)
	if _, err := s.AddSocket(context.Background(), id, store.SocketRecord{Gateway: gw, ConnectedAt: time.Now(), User: user}); err != nil {
		t.Fatal(err)
	}
	return id
}

func grant(t *testing.T, cli *clientv3.Client, ttl int64) clientv3.LeaseID {
	t.Helper()
	l, err := cli.Grant(context.Background(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return l.ID
}

func userSockets(t *testing.T, s *store.Store, user string) []string {
	t.Helper()
	socks, _, err := s.UserSockets(context.Background(), user, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, sid := range socks {
		out = append(out, sid.String())
	}
	return out
}

func TestUserIndexKeyWrittenAndDeletedWithTheRecord(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	lease := grant(t, e.Client, 30)
	user := "ann/50%"
	a := connectUser(t, s, "gw1", lease, user)
	b := connectUser(t, s, "gw1", lease, user)
	anon := connectUser(t, s, "gw1", lease, "")
	// One key segment for the user, escaped like a room; the record and the
	// key have one revision: one transaction.
	rec, err := e.Client.Get(ctx, "/t/sockets/"+a.String())
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatal(rec, err)
	}
	key, err := e.Client.Get(ctx, "/t/users/ann%2F50%25/"+a.String())
	if err != nil || len(key.Kvs) != 1 || key.Kvs[0].ModRevision != rec.Kvs[0].ModRevision || clientv3.LeaseID(key.Kvs[0].Lease) != lease {
		t.Fatalf("user index key %+v %v; record %+v", key.Kvs, err, rec.Kvs)
	}
	all, err := e.Client.Get(ctx, "/t/users/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || all.Count != 2 {
		t.Fatalf("user keys: %d %v, want 2 (the socket without a user has none)", all.Count, err)
	}
	want := []string{a.String(), b.String()}
	slices.Sort(want)
	if got := userSockets(t, s, user); !slices.Equal(got, want) {
		t.Fatalf("user sockets %v, want %v", got, want)
	}
	if _, err := s.RemoveSockets(ctx, []store.SocketID{a, anon}); err != nil {
		t.Fatal(err)
	}
	if got := userSockets(t, s, user); !slices.Equal(got, []string{b.String()}) {
		t.Fatalf("after removing %s: %v", a, got)
	}
	if got := userSockets(t, s, "ann"); len(got) != 0 {
		t.Fatalf("another user: %v", got)
	}
}

func TestUserIndexGoesWithTheLease(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	lease := grant(t, e.Client, 2) // never kept alive: the gateway "crashed"
	keep := grant(t, e.Client, 60)
	connectUser(t, s, "dead", lease, "bob")
	connectUser(t, s, "dead", lease, "bob")
	alive := connectUser(t, s, "live", keep, "bob")
	if got := userSockets(t, s, "bob"); len(got) != 3 {
		t.Fatalf("before expiry: %v", got)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := userSockets(t, s, "bob")
		if slices.Equal(got, []string{alive.String()}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the lease's TTL: %v", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestChangeUserSplitsPastOneTransaction(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	if err := s.SetTxnLimits(store.TxnLimits{MaxTxnOps: 16}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	per := s.SocketsPerChange()
	lease := grant(t, e.Client, 60)
	var want []string
	for range 2*per + 3 {
		want = append(want, connectUser(t, s, "gw1", lease, "carol").String())
	}
	slices.Sort(want)
	// A user index key whose record is gone (as when the socket went
	// between the read and the commit): skipped, not an error.
	ghost := store.NewSocketID("gw1", lease)
	if _, err := e.Client.Put(ctx, "/t/users/carol/"+ghost.String(), ""); err != nil {
		t.Fatal(err)
	}
	res, err := s.ChangeUser(ctx, "carol", "r", true, per)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, sid := range res.Sockets {
		got = append(got, sid.String())
		if res.WasMember[i] {
			t.Fatalf("%s reported as a member before", sid)
		}
	}
	if !slices.Equal(got, want) || res.Transactions != 3 {
		t.Fatalf("%d sockets in %d transactions (per %d): %v, want %v", len(got), res.Transactions, per, got, want)
	}
	members, _, err := s.RoomMembers(ctx, "r", 0)
	if err != nil || len(members) != len(want) {
		t.Fatalf("room has %d members (%v), want %d", len(members), err, len(want))
	}
	if res.Revision != mustRev(t, e.Client) {
		t.Fatalf("revision %d is not the last transaction's", res.Revision)
	}
	// Nobody: an empty result at the read revision.
	none, err := s.ChangeUser(ctx, "dave", "r", false, per)
	if err != nil || len(none.Sockets) != 0 || none.Transactions != 0 || none.Revision == 0 {
		t.Fatalf("a user with no sockets: %+v %v", none, err)
	}
}

func mustRev(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	r, err := cli.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// scanPresence counts each room's members and distinct users from a scan
// of etcd at one revision.
func scanPresence(t *testing.T, cli *clientv3.Client, rev int64) map[string][2]int64 {
	t.Helper()
	ctx := context.Background()
	rooms, err := cli.Get(ctx, "/t/rooms/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]map[string]bool{}
	out := map[string][2]int64{}
	for _, kv := range rooms.Kvs {
		seg, socket, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), "/t/rooms/"), "/")
		room := strings.NewReplacer("%2F", "/", "%25", "%").Replace(seg)
		rec, err := cli.Get(ctx, "/t/sockets/"+socket, clientv3.WithRev(rev))
		if err != nil || len(rec.Kvs) != 1 {
			t.Fatalf("record of %s at %d: %v %v", socket, rev, rec, err)
		}
		var r store.SocketRecord
		if err := json.Unmarshal(rec.Kvs[0].Value, &r); err != nil {
			t.Fatal(err)
		}
		c := out[room]
		c[0]++
		if r.User != "" {
			if users[room] == nil {
				users[room] = map[string]bool{}
			}
			if !users[room][r.User] {
				users[room][r.User] = true
				c[1]++
			}
		}
		out[room] = c
	}
	return out
}

func indexPresence(t *testing.T, x *store.TargetIndex) (map[string][2]int64, int64) {
	t.Helper()
	ctx := context.Background()
	rooms, _, rev, err := x.ListRooms(ctx, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][2]int64{}
	for _, r := range rooms {
		out[r.Room] = [2]int64{r.Members, r.Users}
		p, _, err := x.Room(ctx, r.Room)
		if err != nil || p.Members != r.Members || p.Users != r.Users {
			t.Fatalf("Room(%q) %+v %v; ListRooms %+v", r.Room, p, err, r)
		}
	}
	return out, rev
}

func TestPresenceCountsMatchAScanUnderConcurrentChanges(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	x := startIndex(t, e.Client, s)
	leases := []clientv3.LeaseID{grant(t, e.Client, 60), grant(t, e.Client, 60)}
	var socks []store.SocketID
	for i := range 40 {
		user := fmt.Sprintf("u%d", i%7)
		if i%5 == 0 {
			user = "" // no token
		}
		socks = append(socks, connectUser(t, s, fmt.Sprintf("gw%d", i%2), leases[i%2], user))
	}
	rooms := []string{"a", "b", "c/d"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for range 150 {
				sock := socks[rnd.IntN(len(socks))]
				room := rooms[rnd.IntN(len(rooms))]
				var err error
				if rnd.IntN(3) == 0 {
					_, err = s.Leave(ctx, []store.SocketID{sock}, room)
				} else {
					_, err = s.Join(ctx, []store.SocketID{sock}, room)
				}
				if err != nil && !strings.Contains(err.Error(), "not connected") {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Meanwhile: sockets disconnect, and one gateway's lease goes.
	if _, err := s.RemoveSockets(ctx, socks[:6]); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	got, rev := indexPresence(t, x)
	if want := scanPresence(t, e.Client, rev); !mapsEqual(got, want) {
		t.Fatalf("index at %d: %v; scan: %v", rev, got, want)
	}
	if _, err := e.Client.Revoke(ctx, leases[1]); err != nil {
		t.Fatal(err)
	}
	got, rev = indexPresence(t, x)
	if want := scanPresence(t, e.Client, rev); !mapsEqual(got, want) || len(want) == 0 {
		t.Fatalf("after the lease went, index at %d: %v; scan: %v", rev, got, want)
	}
	// A fresh index lists what this one followed.
	y := startIndex(t, e.Client, s)
	if fresh, _ := indexPresence(t, y); !mapsEqual(fresh, got) {
		t.Fatalf("listed index %v; followed %v", fresh, got)
	}
}

func mapsEqual(a, b map[string][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestValidateUserAcceptsWhatTheGatewayAccepts(t *testing.T) {
	for _, u := range []string{"a", "ann/50%", strings.Repeat("é", 128), "user@example.com"} {
		if err := store.ValidateUser(u); err != nil {
			t.Errorf("%q: %v", u, err)
		}
	}
	for _, u := range []string{"", strings.Repeat("x", 257), "a\nb", "\xff", "a\u0085b"} {
		if err := store.ValidateUser(u); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// Removing a socket reads its user from its record first; a record that does
// not decode must not keep the socket from going.
func TestRemoveSocketWithCorruptRecord(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	lease := grant(t, e.Client, 30)
	sock := connectUser(t, s, "gw1", lease, "eve")
	if _, err := e.Client.Put(ctx, "/t/sockets/"+sock.String(), "{not json", clientv3.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveSockets(ctx, []store.SocketID{sock}); err != nil {
		t.Fatalf("removal of a socket with a corrupt record: %v", err)
	}
	if r, err := e.Client.Get(ctx, "/t/sockets/"+sock.String()); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("record left: %v %v", r.Kvs, err)
	}
}

// A key under users/{user}/ that does not name a socket (written by hand, or
// by another program under the prefix) is a corrupt record to ListSockets,
// like a socket record that does not decode: an error naming it, never a
// crash or a page cursor lost.
func TestListUserSocketsWithAStrayKey(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	connectUser(t, s, "gw1", grant(t, e.Client, 60), "alice")
	if _, err := e.Client.Put(ctx, "/t/users/alice/!stray", ""); err != nil {
		t.Fatal(err)
	}
	_, _, _, err := func() (_ []store.SocketInfo, _ string, _ int64, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return s.ListUserSockets(ctx, "alice", "", 1)
	}()
	if !errors.Is(err, store.ErrCorruptRecord) {
		t.Fatalf("ListUserSockets with a stray key: %v, want ErrCorruptRecord", err)
	}
}

// Join by user racing Disconnect by user and new sockets of the user: when
// all is done, no membership outlives its socket, no user index key outlives
// its record, and the room index's counts are a scan's.
func TestJoinByUserRacesDisconnectByUser(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	x := startIndex(t, e.Client, s)
	lease := grant(t, e.Client, 60)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				switch (w + i) % 3 {
				case 0:
					connectUser(t, s, "gw1", lease, "a/b%c")
				case 1:
					if _, err := s.ChangeUser(ctx, "a/b%c", "r", true, 5); err != nil {
						t.Error(err)
						return
					}
				default:
					socks, _, err := s.UserSockets(ctx, "a/b%c", 0)
					if err == nil {
						_, err = s.Disconnect(ctx, socks, store.DisconnectNotice{Code: 4000})
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	// What the gateway's removal of the disconnected sockets leaves: their
	// notices go.
	notices, err := s.GatewayDisconnects(ctx, "gw1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var gone []store.SocketID
	for _, d := range notices {
		gone = append(gone, d.Socket)
	}
	if _, err := s.RemoveSockets(ctx, gone); err != nil {
		t.Fatal(err)
	}
	all, err := e.Client.Get(ctx, "/t/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]bool{}
	for _, kv := range all.Kvs {
		if id, ok := strings.CutPrefix(string(kv.Key), "/t/sockets/"); ok {
			records[id] = true
		}
	}
	for _, kv := range all.Kvs {
		k := string(kv.Key)
		var id string
		switch {
		case strings.HasPrefix(k, "/t/rooms/") || strings.HasPrefix(k, "/t/users/"):
			id = k[strings.LastIndex(k, "/")+1:]
		case strings.HasPrefix(k, "/t/gwm/"):
			id = strings.Split(strings.TrimPrefix(k, "/t/gwm/gw1/"), "/")[0]
		default:
			continue
		}
		if !records[id] {
			t.Errorf("%s outlives its socket's record", k)
		}
	}
	got, rev := indexPresence(t, x)
	if want := scanPresence(t, e.Client, rev); !mapsEqual(got, want) {
		t.Fatalf("index at %d: %v; scan: %v", rev, got, want)
	}
}
