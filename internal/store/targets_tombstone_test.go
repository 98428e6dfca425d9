package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// A Broadcast that read revision R before a socket's room moved from gwa
// to gwb (at M > R), and whose targets are resolved once the index has
// applied the move, still names gwa, which delivers to the socket every
// message below M; one that read a revision at or after M names gwb only.
func TestTargetsNameTheGatewayARoomLeftAfterTheRevision(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := connectUser(t, s, "gwa", a.Lease, "")
	if _, err := s.Join(ctx, []store.SocketID{sock}, "lobby"); err != nil {
		t.Fatal(err)
	}
	x := startIndex(t, e.Client, s)
	before, err := x.Targets(ctx, []string{"lobby"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MoveSocket(ctx, sock, a, b); err != nil {
		t.Fatal(err)
	}
	after, err := x.Targets(ctx, []string{"lobby"}) // the index has applied the move
	if err != nil {
		t.Fatal(err)
	}
	names := func(tg store.Targets) []string {
		var out []string
		for id := range tg.Gateways {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	if got := names(x.TargetsAt([]string{"lobby"}, before.Revision)); !slices.Equal(got, []string{"gwa", "gwb"}) {
		t.Fatalf("targets at revision %d (before the move), resolved after it: %v, want [gwa gwb]", before.Revision, got)
	}
	if got := names(after); !slices.Equal(got, []string{"gwb"}) {
		t.Fatalf("targets at revision %d (after the move): %v, want [gwb]", after.Revision, got)
	}
}
