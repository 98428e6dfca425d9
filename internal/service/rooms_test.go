package service_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// A room named like a socket id would be taken for that socket where a room
// or a socket may be named (AddRoomMembersToRooms' source): every call that
// takes a room name refuses it with INVALID_ARGUMENT/ROOM_NAME_RESERVED and
// the field, in canonical and non-canonical spellings alike.
func TestRoomShapedLikeSocketIDIsRefused(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	g := stacktest.StartGateway(t, e, "gw-a", 10*time.Second)
	s := stacktest.Dial(t, g.WSURL)
	ctx := context.Background()

	for _, room := range []string{
		"gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA", // parses as a socket id
		"gw-a.00000000000ABCDE.AAAAAAAAAAAAAAAAAAAAAA", // upper-case hex: not canonical, same shape
		"gw-a.0000000000000000.AAAAAAAAAAAAAAAAAAAAAA", // lease 0: never issued, same shape
		s.ID, // a connected socket's own id
	} {
		check := func(call string, err error, field string) {
			t.Helper()
			if err == nil {
				t.Fatalf("%s accepted room %q", call, room)
			}
			stacktest.WantStatus(t, err, codes.InvalidArgument, service.ReasonRoomNameReserved, field)
		}
		_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: room})
		check("Join", err, "room")
		_, err = api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: room})
		check("Leave", err, "room")
		_, err = api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: room})
		check("ListMembers", err, "room")
		_, err = api.LeaveAll(ctx, &membershipv1.LeaveAllRequest{Room: room})
		check("LeaveAll", err, "room")
		_, err = api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"fine", room}})
		check("Broadcast", err, "rooms[1]")
		_, err = api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "fine", DestRooms: []string{room}})
		check("AddRoomMembersToRooms", err, "dest_rooms[0]")
		_, err = api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: "fine", DestRooms: []string{room}})
		check("RemoveRoomMembersFromRooms", err, "dest_rooms[0]")
	}
	// A source that is a socket id in all but its canonical spelling is
	// neither that socket nor a room.
	upper := s.ID[:strings.IndexByte(s.ID, '.')+1] + strings.ToUpper(s.ID[strings.IndexByte(s.ID, '.')+1:strings.LastIndexByte(s.ID, '.')]) + s.ID[strings.LastIndexByte(s.ID, '.'):]
	if upper != s.ID {
		_, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: upper, DestRooms: []string{"x"}})
		stacktest.WantStatus(t, err, codes.InvalidArgument, service.ReasonRoomNameReserved, "source_room")
	}
	// Names that only resemble the shape stay rooms.
	for _, room := range []string{"gw-a.0000000000000001", "gw-a.000000000000001.AAAAAAAAAAAAAAAAAAAAAA", "gw a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA", "gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAA="} {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: room}); err != nil {
			t.Errorf("Join %q: %v", room, err)
		}
		s.Expect("joined", room)
	}
}

// A socket id as AddRoomMembersToRooms' or RemoveRoomMembersFromRooms'
// source still names that socket.
func TestSocketIDSourceStillNamesTheSocket(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	g := stacktest.StartGateway(t, e, "gw-a", 10*time.Second)
	s := stacktest.Dial(t, g.WSURL)
	ctx := context.Background()
	resp, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: s.ID, DestRooms: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Sockets != 1 || resp.Changed != 2 {
		t.Fatalf("AddRoomMembersToRooms from the socket: %v; want 1 socket, 2 changed", resp)
	}
	s.Expect("joined", "a")
	s.Expect("joined", "b")
	rm, err := api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: s.ID, DestRooms: []string{"a"}})
	if err != nil || rm.Changed != 1 {
		t.Fatalf("RemoveRoomMembersFromRooms from the socket: %v, %v", rm, err)
	}
	got, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
	if err != nil || fmt.Sprint(got.Socket.Rooms) != "[b]" {
		t.Fatalf("GetSocket: %v, %v; want rooms [b]", got, err)
	}
}
