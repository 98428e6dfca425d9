package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// serve runs a Server over cli on a loopback listener; the returned stop
// closes the Server (as a membership-server does at shutdown) while the
// listener keeps serving.
func serve(t *testing.T, cli *clientv3.Client) (membershipv1.MembershipServiceClient, func()) {
	t.Helper()
	srv := stacktest.StartMembershipServerWith(t, cli)
	return srv.Client, srv.CloseService
}

// A record that does not decode is INTERNAL/CORRUPT_RECORD, not a reason to
// retry, and the answer carries none of the stored bytes.
func TestCorruptRecordIsInternal(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _ := serve(t, e.Client)
	ctx := context.Background()
	const garbage = "{not json SECRET-BYTES"

	sock := store.NewSocketID("gw1", 0x1234)
	if _, err := e.Client.Put(ctx, store.DefaultPrefix+"sockets/"+sock.String(), garbage); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Put(ctx, store.DefaultPrefix+"rooms/r/"+sock.String(), ""); err != nil {
		t.Fatal(err)
	}
	_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: sock.String()})
	stacktest.WantStatus(t, err, codes.Internal, service.ReasonCorruptRecord, "")
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("the answer leaks the record: %v", err)
	}
	_, err = api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "r"})
	stacktest.WantStatus(t, err, codes.Internal, service.ReasonCorruptRecord, "")
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("the answer leaks the record: %v", err)
	}

	// A membership key whose room segment has a bad escape.
	sock2 := store.NewSocketID("gw1", 0x1234)
	if _, err := e.Client.Put(ctx, store.DefaultPrefix+"sockets/"+sock2.String(), `{"gateway":"gw1"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Put(ctx, store.DefaultPrefix+"gwm/gw1/"+sock2.String()+"/bad%ZZescape", ""); err != nil {
		t.Fatal(err)
	}
	_, err = api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: sock2.String()})
	stacktest.WantStatus(t, err, codes.Internal, service.ReasonCorruptRecord, "")
	if _, err := e.Client.Put(ctx, store.DefaultPrefix+"rooms/bad%ZZescape/"+sock2.String(), ""); err != nil {
		t.Fatal(err)
	}
	// Listing every room reads the broadcast target index, which skips (and
	// logs) a key it cannot decode rather than failing every call.
	list, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{})
	if err != nil {
		t.Fatalf("ListRooms with a corrupt room key: %v", err)
	}
	for _, r := range list.GetRooms() {
		if strings.Contains(r.GetName(), "escape") {
			t.Errorf("ListRooms lists the corrupt key as room %q", r.GetName())
		}
	}
}

// A call that reads at one revision over several etcd requests, and finds
// that revision compacted in between, is ABORTED/REVISION_COMPACTED.
// ListMembers reads a room's memberships, then its members' records at the
// same revision; a compactor racing it (writing a key and compacting up to
// it, over and over) makes some calls meet the compaction between the two.
func TestCompactedPinnedReadIsAborted(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _ := serve(t, e.Client)
	ctx := context.Background()

	// 500 members: their records take 4 transactions at the listing's
	// revision, a window for the compaction.
	st := store.New(e.Client, "")
	grant, err := e.Client.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	socks := make([]store.SocketID, 500)
	for i := range socks {
		socks[i] = store.NewSocketID("gw1", grant.ID)
		if _, err := st.AddSocket(ctx, socks[i], store.SocketRecord{Gateway: "gw1", ConnectedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(socks); i += store.MaxSocketsPerChange {
		if _, err := st.Join(ctx, socks[i:i+store.MaxSocketsPerChange], "big"); err != nil {
			t.Fatal(err)
		}
	}

	cctx, stopCompactor := context.WithCancel(ctx)
	compactorDone := make(chan struct{})
	go func() {
		defer close(compactorDone)
		for cctx.Err() == nil {
			resp, err := e.Client.Put(cctx, "/other/tick", "x")
			if err != nil {
				continue
			}
			_, _ = e.Client.Compact(cctx, resp.Header.Revision)
		}
	}()
	defer func() { stopCompactor(); <-compactorDone }()

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		_, err := api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "big", PageSize: 1000})
		if err == nil {
			continue
		}
		stacktest.WantStatus(t, err, codes.Aborted, service.ReasonRevisionCompacted, "")
		return
	}
	t.Fatal("no ListMembers met a compaction in 20s")
}

// The store reports a read at a compacted revision as etcd's ErrCompacted,
// which the service maps generically.
func TestStorePinnedReadAtCompactedRevision(t *testing.T) {
	e := testutil.StartEtcd(t)
	ctx := context.Background()
	first, err := e.Client.Put(ctx, "/other/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.Client.Put(ctx, "/other/a", "2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Compact(ctx, second.Header.Revision); err != nil {
		t.Fatal(err)
	}
	_, _, err = store.New(e.Client, "").RoomMembers(ctx, "r", first.Header.Revision)
	if !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("RoomMembers at a compacted revision: %v, want ErrCompacted", err)
	}
}

// A call that reaches a Server after it stopped (shutdown) is
// UNAVAILABLE/SHUTTING_DOWN: another replica can serve it.
func TestCallAfterCloseIsShuttingDown(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, closeSvc := serve(t, e.Client)
	closeSvc()
	sock := store.NewSocketID("gw1", 0x1234)
	_, err := api.Join(context.Background(), &membershipv1.JoinRequest{SocketId: sock.String(), Room: "r"})
	stacktest.WantStatus(t, err, codes.Unavailable, service.ReasonShuttingDown, "")

	// Calls served from the broadcast target index answer at once too,
	// rather than waiting out their deadlines for an index that is stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}})
	stacktest.WantStatus(t, err, codes.Unavailable, service.ReasonShuttingDown, "")
	_, err = api.ListRooms(ctx, &membershipv1.ListRoomsRequest{})
	stacktest.WantStatus(t, err, codes.Unavailable, service.ReasonShuttingDown, "")
}
