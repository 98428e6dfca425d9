package gateway

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// A removal that fails with an error retrying cannot cure is given up, counted
// and logged, and the janitor goes on to the other pending sockets; the
// given-up socket's keys stay for its lease. The error here is real: a gateway
// sized for etcd's default --max-txn-ops removing, from an etcd started with
// --max-txn-ops 32, a socket in 40 rooms, which etcd refuses as too many
// operations. Retried forever, it held every later removal behind it.
func TestJanitorGivesUpRemovalRetryingCannotCure(t *testing.T) {
	const maxOps = 32
	e := testutil.StartEtcdWithLimits(t, 0, maxOps)
	ctx := context.Background()
	g, err := New(Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1"}, e.Client) // no EtcdLimits: etcd's defaults
	if err != nil {
		t.Fatal(err)
	}
	writer := store.New(e.Client, "")
	if err := writer.SetTxnLimits(store.TxnLimits{MaxTxnOps: maxOps}); err != nil {
		t.Fatal(err)
	}
	lease, err := e.Client.Grant(ctx, 120)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.RegisterGateway(ctx, store.GatewayRecord{ID: "gw", GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	newSocket := func(rooms int) store.SocketID {
		sid := store.NewSocketID("gw", lease.ID)
		if _, err := writer.AddSocket(ctx, sid, store.SocketRecord{Gateway: "gw", ConnectedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		names := make([]string, rooms)
		for i := range names {
			names[i] = fmt.Sprintf("room-%d", i)
		}
		if _, _, err := writer.AddToRooms(ctx, []store.SocketID{sid}, names); err != nil {
			t.Fatal(err)
		}
		return sid
	}
	keysOf := func(sid store.SocketID) int {
		resp, err := e.Client.Get(ctx, store.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, kv := range resp.Kvs {
			if strings.Contains(string(kv.Key), sid.String()) {
				n++
			}
		}
		return n
	}
	big, small := newSocket(40), newSocket(1)

	err = g.store.RemoveSocket(ctx, big)
	if err == nil || removalRetryable(err) {
		t.Fatalf("removing a socket in 40 rooms at --max-txn-ops %d sized for 128: %v, want an error not retryable", maxOps, err)
	}

	s := newSession(ctx, []clientv3.LeaseID{lease.ID})
	s.removals.add(big)
	s.removals.add(small)
	done := make(chan error, 1)
	go func() { done <- g.janitor(s) }()
	defer func() { s.cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for keysOf(small) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the socket queued behind one whose removal cannot succeed was not removed within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The pending set has no order: the small socket may go first, before
	// the big one's removal is given up.
	for abandoned(t, g, "not_retryable") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("gateway_socket_removals_abandoned_total{reason=not_retryable} = %v within 10s, want 1", abandoned(t, g, "not_retryable"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The first removal deleted the socket record before etcd refused the
	// memberships' transaction; those stay until the lease ends.
	if n := keysOf(big); n != 2*40 {
		t.Fatalf("%d keys of the given-up socket, want its 80 memberships left to the lease", n)
	}

	// An etcd that cannot be reached fails a removal in a way retrying cures.
	down, err := clientv3.New(clientv3.Config{Endpoints: []string{testutil.FreeAddr(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	gDown, err := New(Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1"}, down)
	if err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := gDown.store.RemoveSocket(tctx, small); err == nil || !removalRetryable(err) {
		t.Fatalf("removal with etcd unreachable: %v, want an error retrying may cure", err)
	}
}

func abandoned(t *testing.T, g *Gateway, reason string) float64 {
	t.Helper()
	mfs, err := g.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "gateway_socket_removals_abandoned_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no gateway_socket_removals_abandoned_total{reason=%q}", reason)
	return 0
}
