package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// A stream resumed between a socket's two removal steps (its record gone,
// its memberships not yet: the revision of a DISCONNECTED batch a consumer
// checkpointed at) still gives the LEFT events that follow their user, and
// so passes them through a user filter, when the memberships were created
// before etcd's compaction: the user is read from the record as of the
// compaction revision, which the record outlived.
func TestWatchResumedMidRemovalKnowsTheUserPastACompaction(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	sock := connectUser(t, s, "gw1", grant(t, e.Client, 60), "a/b%c")
	if _, err := s.Join(ctx, []store.SocketID{sock}, "r"); err != nil {
		t.Fatal(err)
	}
	// Later writes, then a compaction past the membership's creation.
	connectUser(t, s, "gw1", grant(t, e.Client, 60), "bob")
	resp, err := e.Client.Put(ctx, "/t/unrelated", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	// The first removal step alone (a Disconnect's, or a gateway's): the
	// record and its user index key go, the memberships stay.
	step1, err := e.Client.Txn(ctx).Then(
		clientv3.OpDelete("/t/sockets/"+sock.String()),
		clientv3.OpDelete("/t/users/a%2Fb%25c/"+sock.String()),
	).Commit()
	if err != nil {
		t.Fatal(err)
	}
	after := step1.Header.Revision
	// The second step: the memberships go.
	if _, err := s.RemoveSockets(ctx, []store.SocketID{sock}); err != nil {
		t.Fatal(err)
	}
	end, err := s.CurrentRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var got []store.MembershipEvent
	errDone := errors.New("caught up")
	err = s.WatchMembership(wctx, e.Client, store.WatchFilter{User: "a/b%c"},
		store.WatchOptions{After: after, ProgressEvery: 100 * time.Millisecond},
		func(b store.WatchBatch) error {
			got = append(got, b.Events...)
			if b.Revision >= end {
				return errDone
			}
			return nil
		})
	if !errors.Is(err, errDone) {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Type != store.EventLeft || got[0].User != "a/b%c" || got[0].Room != "r" || got[0].Socket != sock.String() {
		t.Fatalf("events after %d: %+v; want the socket's LEFT of r with its user", after, got)
	}
}
