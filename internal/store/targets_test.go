package store_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

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
