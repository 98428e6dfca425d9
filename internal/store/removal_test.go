package store_test

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// RemoveSockets removes many sockets with their memberships in transactions
// within etcd's --max-txn-ops: at the least limit accepted (16) only 14
// sockets' records fit one transaction, so 300 take many.
func TestRemoveSocketsManyWithinMaxTxnOps(t *testing.T) {
	e := testutil.StartEtcdWithLimits(t, 0, store.MinMaxTxnOps)
	s := store.New(e.Client, "/t/")
	if err := s.SetTxnLimits(store.TxnLimits{MaxTxnOps: store.MinMaxTxnOps}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	socks := connectMany(t, e.Client, s, "gw1", 300)
	if added, _, err := s.AddToRooms(ctx, socks, []string{"a", "b/c"}); err != nil || added != 600 {
		t.Fatalf("add to rooms: added %d, %v", added, err)
	}
	gone := append([]store.SocketID{store.NewSocketID("gw1", socks[0].Lease)}, socks...) // one never registered
	if n, err := s.RemoveSockets(ctx, gone); err != nil || n != len(gone) {
		t.Fatalf("RemoveSockets: %d removed, %v; want %d", n, err, len(gone))
	}
	resp, err := e.Client.Get(ctx, "/t/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) != "/t/gateways/gw1" {
			t.Errorf("key %q left after removing every socket", kv.Key)
		}
	}
}

// LeaseSockets lists exactly the sockets of one gateway's lease: not those
// of its other leases, nor of a gateway whose id it prefixes.
func TestLeaseSockets(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	mine := connectMany(t, e.Client, s, "gw1", 2500) // more than one page
	connectMany(t, e.Client, s, "gw1", 3)            // another lease
	connectMany(t, e.Client, s, "gw10", 3)           // another gateway
	want := map[store.SocketID]bool{}
	for _, sid := range mine {
		want[sid] = true
	}
	got := 0
	rev, err := s.LeaseSockets(ctx, "gw1", mine[0].Lease, func(sid store.SocketID) bool {
		if !want[sid] {
			t.Errorf("listed %s, not a socket of the lease", sid)
		}
		delete(want, sid)
		got++
		return true
	})
	if err != nil || rev == 0 {
		t.Fatalf("LeaseSockets: revision %d, %v", rev, err)
	}
	if len(want) != 0 {
		t.Fatalf("%d of the lease's %d sockets not listed", len(want), len(mine))
	}
	seen := 0
	if _, err := s.LeaseSockets(ctx, "gw1", mine[0].Lease, func(store.SocketID) bool { seen++; return seen < 10 }); err != nil || seen != 10 {
		t.Fatalf("visit returning false after 10: visited %d, %v", seen, err)
	}
}
