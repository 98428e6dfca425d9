package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// gatewayCounts pages through x's gateways one at a time and renders each
// as "id=sockets".
func gatewayCounts(t *testing.T, x *store.TargetIndex) []string {
	t.Helper()
	var out []string
	after := ""
	for range 100 {
		gws, next, rev, err := x.ListGateways(context.Background(), after, 1)
		if err != nil {
			t.Fatal(err)
		}
		if rev == 0 || len(gws) > 1 {
			t.Fatalf("page after %q: %d gateways at revision %d", after, len(gws), rev)
		}
		for _, g := range gws {
			out = append(out, fmt.Sprintf("%s=%d", g.Record.ID, g.Sockets))
		}
		if next == "" {
			return out
		}
		after = next
	}
	t.Fatal("paging does not end")
	return nil
}

func wantGatewayCounts(t *testing.T, x *store.TargetIndex, want ...string) {
	t.Helper()
	if got := gatewayCounts(t, x); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("gateways %v, want %v", got, want)
	}
}

// The index counts each gateway's sockets, from its listing and then from
// its watch, under the socket's home: a socket that moved counts at its new
// gateway, and its removal is taken from there, though its id names the old
// one; the move's marker is no socket. A fresh index listing the same
// keyspace counts the same.
func TestTargetIndexCountsSocketsPerGateway(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	newHome(t, e.Client, s, "gwc") // no sockets
	a1 := connectUser(t, s, "gwa", a.Lease, "ann")
	a2 := connectUser(t, s, "gwa", a.Lease, "")
	connectUser(t, s, "gwb", b.Lease, "bob")
	if _, err := s.Join(ctx, []store.SocketID{a1}, "r"); err != nil {
		t.Fatal(err)
	}
	x := startIndex(t, e.Client, s)
	wantGatewayCounts(t, x, "gwa=2", "gwb=1", "gwc=0") // from the listing

	b2 := connectUser(t, s, "gwb", b.Lease, "")
	wantGatewayCounts(t, x, "gwa=2", "gwb=2", "gwc=0")
	if err := s.RemoveSocket(ctx, a2); err != nil {
		t.Fatal(err)
	}
	wantGatewayCounts(t, x, "gwa=1", "gwb=2", "gwc=0")
	// A detach re-puts the record at the same home: no change.
	now := time.Now()
	if _, err := s.SetSocketRecord(ctx, b2, store.SocketRecord{Gateway: "gwb", Lease: b.Lease, ConnectedAt: now, DetachedSince: &now}); err != nil {
		t.Fatal(err)
	}
	wantGatewayCounts(t, x, "gwa=1", "gwb=2", "gwc=0")

	if err := s.MoveSocket(ctx, a1, a, b); err != nil {
		t.Fatal(err)
	}
	wantGatewayCounts(t, x, "gwa=0", "gwb=3", "gwc=0")
	fresh := startIndex(t, e.Client, s)
	wantGatewayCounts(t, fresh, "gwa=0", "gwb=3", "gwc=0")

	if err := s.RemoveSocket(ctx, a1); err != nil {
		t.Fatal(err)
	}
	wantGatewayCounts(t, x, "gwa=0", "gwb=2", "gwc=0")
	wantGatewayCounts(t, fresh, "gwa=0", "gwb=2", "gwc=0")

	// The lease as etcd has it; a revoked lease takes its gateway along.
	remaining, granted, err := x.LeaseTTL(ctx, a.Lease)
	if err != nil || granted != 60 || remaining <= 0 || remaining > 60 {
		t.Fatalf("LeaseTTL: %d of %d, %v; want up to 60 of 60", remaining, granted, err)
	}
	if _, err := e.Client.Revoke(ctx, a.Lease); err != nil {
		t.Fatal(err)
	}
	if remaining, _, err := x.LeaseTTL(ctx, a.Lease); err != nil || remaining != -1 {
		t.Fatalf("LeaseTTL of a revoked lease: %d, %v; want -1", remaining, err)
	}
	wantGatewayCounts(t, x, "gwb=2", "gwc=0")
}
