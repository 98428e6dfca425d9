package e2e

import (
	"context"
	"net/url"
	"slices"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// dialAs connects a socket to a gateway with a token naming user.
func dialAs(t *testing.T, wsURL, token string) *sock {
	t.Helper()
	s := dial(t, wsURL+"?token="+url.QueryEscape(token))
	return s
}

func ids(socks ...*sock) []string {
	out := make([]string, len(socks))
	for i, s := range socks {
		out[i] = s.ID
	}
	slices.Sort(out)
	return out
}

func resultIDs(rs []*membershipv1.SocketResult) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.SocketId
	}
	return out
}

func wantRoom(t *testing.T, api membershipv1.MembershipServiceClient, room string, members, users int64) {
	t.Helper()
	resp, err := api.GetRoom(context.Background(), &membershipv1.GetRoomRequest{Room: room})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Room; r.Name != room || r.MemberCount != members || r.UserCount != users || resp.Revision == 0 {
		t.Fatalf("GetRoom(%q): %v, want %d members, %d users", room, resp, members, users)
	}
}

// The user selector against the real binaries: a user's sockets on two
// gateways (JWT subjects) join and leave in one call each; WAIT_FOR_APPLY
// waits for both gateways; ListSockets, GetRoom and ListRooms agree; a
// killed gateway's sockets leave the user's list with its lease.
func TestUserSelectorAcrossTwoGateways(t *testing.T) {
	key, keyFile := jwtKey(t)
	e := testutil.StartEtcd(t)
	api, _ := startServerProcess(t, e.Endpoint)
	ttl := 3 * time.Second
	g1 := startGatewayProcess(t, e, "gw1", ttl, "--jwt-public-key-file", keyFile, "--jwt-audience", "chat")
	g2 := startGatewayProcess(t, e, "gw2", ttl, "--jwt-public-key-file", keyFile, "--jwt-audience", "chat")
	hour := time.Now().Add(time.Hour)
	alice, bob := signToken(t, key, "alice", hour), signToken(t, key, "bob/admin", hour)
	a1, a2, a3 := dialAs(t, g1.WSURL, alice), dialAs(t, g1.WSURL, alice), dialAs(t, g2.WSURL, alice)
	b1 := dialAs(t, g2.WSURL, bob)
	ctx := context.Background()

	ls, err := api.ListSockets(ctx, &membershipv1.ListSocketsRequest{User: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, s := range ls.Sockets {
		listed = append(listed, s.SocketId)
		if s.User != "alice" || s.ConnectedAt == nil || (s.Gateway != "gw1" && s.Gateway != "gw2") || len(s.Rooms) != 0 {
			t.Fatalf("socket %v", s)
		}
	}
	if !slices.Equal(listed, ids(a1, a2, a3)) {
		t.Fatalf("ListSockets(alice) %v, want %v", listed, ids(a1, a2, a3))
	}

	join, err := api.Join(ctx, &membershipv1.JoinRequest{User: "alice", Room: "lobby", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	if err != nil {
		t.Fatal(err)
	}
	if got := resultIDs(join.Results); !slices.Equal(got, ids(a1, a2, a3)) || join.AlreadyMember {
		t.Fatalf("Join by user: %v", join)
	}
	// Applied on both gateways by the time the call returned: a broadcast
	// sent now reaches all three, and bob has nothing.
	if _, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"lobby"}, Event: "hello"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sock{a1, a2, a3} {
		s.Expect("joined", "lobby")
		if f := s.Next(5 * time.Second); f.Event != "hello" {
			t.Fatalf("socket %s got %+v, want the broadcast", s.ID, f)
		}
	}
	b1.ExpectNothing(200 * time.Millisecond)
	wantRoom(t, api, "lobby", 3, 1)

	if _, err := api.Join(ctx, &membershipv1.JoinRequest{User: "bob/admin", Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	wantRoom(t, api, "lobby", 4, 2)
	rooms, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{})
	if err != nil || len(rooms.Rooms) != 1 || rooms.Rooms[0].MemberCount != 4 || rooms.Rooms[0].UserCount != 2 {
		t.Fatalf("ListRooms: %v %v", rooms, err)
	}
	ls, err = api.ListSockets(ctx, &membershipv1.ListSocketsRequest{User: "alice", PageSize: 2})
	if err != nil || len(ls.Sockets) != 2 || ls.NextPageToken == "" || !slices.Equal(ls.Sockets[0].Rooms, []string{"lobby"}) {
		t.Fatalf("first page: %v %v", ls, err)
	}
	last, err := api.ListSockets(ctx, &membershipv1.ListSocketsRequest{User: "alice", PageSize: 2, PageToken: ls.NextPageToken})
	if err != nil || len(last.Sockets) != 1 || last.NextPageToken != "" || last.Sockets[0].SocketId != ids(a1, a2, a3)[2] {
		t.Fatalf("second page: %v %v", last, err)
	}

	// A user with no sockets: nothing to do, not an error.
	none, err := api.Leave(ctx, &membershipv1.LeaveRequest{User: "carol", Room: "lobby", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	if err != nil || len(none.Results) != 0 || none.WasMember || none.Revision == 0 {
		t.Fatalf("Leave of a user with no sockets: %v %v", none, err)
	}

	// gw2 dies: alice's socket and bob's there go with their leases, from
	// her list and from the counts. A gateway's sockets are spread over its
	// lease shards, whose deadlines lie spread over a third of the TTL plus
	// a second, so bob's may go a little after alice's.
	if err := g2.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 4*ttl, "gw2's sockets gone with its leases", func() bool {
		ls, err := api.ListSockets(ctx, &membershipv1.ListSocketsRequest{User: "alice"})
		room, rerr := api.GetRoom(ctx, &membershipv1.GetRoomRequest{Room: "lobby"})
		return err == nil && len(ls.Sockets) == 2 && rerr == nil && room.Room.MemberCount == 2
	})
	wantRoom(t, api, "lobby", 2, 1)

	leave, err := api.Leave(ctx, &membershipv1.LeaveRequest{User: "alice", Room: "lobby", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	if err != nil || !leave.WasMember || !slices.Equal(resultIDs(leave.Results), ids(a1, a2)) {
		t.Fatalf("Leave by user: %v %v", leave, err)
	}
	for _, s := range []*sock{a1, a2} {
		s.Expect("left", "lobby")
	}
	wantRoom(t, api, "lobby", 0, 0)
}

// Past one transaction (a small --etcd-max-txn-ops), a user's sockets are
// changed in several, and every socket is reported and changed.
func TestUserSelectorPastOneTransaction(t *testing.T) {
	key, keyFile := jwtKey(t)
	e := testutil.StartEtcdWithLimits(t, 0, 16)
	api, _ := startServerProcess(t, e.Endpoint, "--etcd-max-txn-ops", "16")
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, "--jwt-public-key-file", keyFile, "--jwt-audience", "chat")
	tok := signToken(t, key, "dana", time.Now().Add(time.Hour))
	var socks []*sock
	for range 30 {
		socks = append(socks, dialAs(t, g.WSURL, tok))
	}
	ctx := context.Background()
	join, err := api.Join(ctx, &membershipv1.JoinRequest{User: "dana", Room: "big", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	if err != nil {
		t.Fatal(err)
	}
	if got := resultIDs(join.Results); !slices.Equal(got, ids(socks...)) {
		t.Fatalf("%d results, want all %d sockets", len(got), len(socks))
	}
	if m := members(t, api, "big"); len(m) != len(socks) {
		t.Fatalf("%d members, want %d", len(m), len(socks))
	}
	wantRoom(t, api, "big", int64(len(socks)), 1)
	// One Join of 30 named sockets does not fit: the user selector is what
	// makes it one call.
	_, err = api.Join(ctx, &membershipv1.JoinRequest{SocketIds: ids(socks...), Room: "big"})
	wantStatus(t, err, codes.InvalidArgument, service.ReasonInvalidArgument, "socket_ids")
}

// Bad input to the user selector, ListSockets and GetRoom: INVALID_ARGUMENT
// naming the field.
func TestUserSelectorBadInput(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	for name, c := range map[string]struct {
		call  func() error
		field string
	}{
		"join user and socket_id": {func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{User: "u", SocketId: s.ID, Room: "r"})
			return err
		}, "user"},
		"leave user and socket_ids": {func() error {
			_, err := api.Leave(ctx, &membershipv1.LeaveRequest{User: "u", SocketIds: []string{s.ID}, Room: "r"})
			return err
		}, "user"},
		"join control character in user": {func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{User: "a\nb", Room: "r"})
			return err
		}, "user"},
		"leave user too long": {func() error {
			_, err := api.Leave(ctx, &membershipv1.LeaveRequest{User: string(make([]byte, 257)), Room: "r"})
			return err
		}, "user"},
		"join by user, bad room": {func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{User: "u", Room: ""})
			return err
		}, "room"},
		"join nothing selected": {func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{Room: "r"})
			return err
		}, "socket_id"},
		"list sockets without user": {func() error {
			_, err := api.ListSockets(ctx, &membershipv1.ListSocketsRequest{})
			return err
		}, "user"},
		"list sockets bad page token": {func() error {
			_, err := api.ListSockets(ctx, &membershipv1.ListSocketsRequest{User: "u", PageToken: "!"})
			return err
		}, "page_token"},
		"get room without room": {func() error {
			_, err := api.GetRoom(ctx, &membershipv1.GetRoomRequest{})
			return err
		}, "room"},
	} {
		t.Run(name, func(t *testing.T) {
			stacktest.WantStatus(t, c.call(), codes.InvalidArgument, service.ReasonInvalidArgument, c.field)
		})
	}
	if m := members(t, api, "r"); len(m) != 0 {
		t.Fatalf("a refused call changed the room: %v", m)
	}
}
