package service_test

import (
	"context"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// ListRooms returns rooms in byte-wise order of their names, as the API
// promises, each once at any page size; the keys' escaping (' ' < '/' <
// "%2F") must not leak into the order, and a page token may name a room
// with '/' in it.
func TestListRoomsInNameOrder(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	st := store.New(e.Client, "")
	ctx := context.Background()
	lease, err := e.Client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RegisterGateway(ctx, store.GatewayRecord{ID: "gw", GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	sock := store.NewSocketID("gw", lease.ID)
	if _, err := st.AddSocket(ctx, sock, store.SocketRecord{Gateway: "gw", ConnectedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	names := []string{"zz", "zz b", "zz/x", "zz%", "zz-", "a", "zz%25", "zz0", "é", "日本語", "ü/ü", "Z", "𝄞", "zz!"}
	for _, n := range names {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: sock.String(), Room: n}); err != nil {
			t.Fatalf("join %q: %v", n, err)
		}
	}
	want := slices.Clone(names)
	slices.Sort(want)
	for _, size := range []int32{1, 2, 100} {
		var listed []string
		token := ""
		var lastRev int64
		for pages := 0; ; pages++ {
			resp, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{PageSize: size, PageToken: token})
			if err != nil {
				t.Fatalf("page size %d: %v", size, err)
			}
			if resp.Revision < lastRev || resp.Revision == 0 {
				t.Fatalf("page size %d: revision %d after %d", size, resp.Revision, lastRev)
			}
			lastRev = resp.Revision
			for _, r := range resp.Rooms {
				listed = append(listed, r.Name)
				if r.MemberCount != 1 {
					t.Errorf("room %q has count %d", r.Name, r.MemberCount)
				}
			}
			if token = resp.NextPageToken; token == "" {
				break
			}
			if pages > 100 {
				t.Fatal("paging does not end")
			}
		}
		if !slices.Equal(listed, want) {
			t.Fatalf("page size %d: listed %q\nwant %q", size, listed, want)
		}
	}
	// A token that names no possible room is refused.
	_, err = api.ListRooms(ctx, &membershipv1.ListRoomsRequest{PageToken: "AA"}) // "\x00"
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad page token: %v, want INVALID_ARGUMENT", err)
	}
}

// A room shaped like a socket id that is in etcd (written before such names
// were refused) is listed, and paging goes on past it: its name is a valid
// page token.
func TestListRoomsPagesPastRoomShapedLikeSocketID(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	ctx := context.Background()
	lease, err := e.Client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	sock := store.NewSocketID("gw", lease.ID)
	shaped := "gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA"
	for _, room := range []string{"a", shaped, "z"} {
		// Both keys of a membership: the target index counts gwm/ keys.
		if _, err := e.Client.Txn(ctx).Then(
			clientv3.OpPut(store.DefaultPrefix+"rooms/"+room+"/"+sock.String(), ""),
			clientv3.OpPut(store.DefaultPrefix+"gwm/gw/"+sock.String()+"/"+room, ""),
		).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	var listed []string
	token := ""
	for pages := 0; pages < 10; pages++ {
		resp, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatalf("after %v: %v", listed, err)
		}
		for _, r := range resp.Rooms {
			listed = append(listed, r.Name)
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	if want := []string{"a", shaped, "z"}; !slices.Equal(listed, want) {
		t.Fatalf("listed %q, want %q", listed, want)
	}
}
