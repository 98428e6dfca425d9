package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestRoomWideCallsOnAThousandMembersOverTwoGateways(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	gws := []*stacktest.Gateway{startGateway(t, e, "gw1", 10*time.Second), startGateway(t, e, "gw2", 10*time.Second)}
	const n = 1000
	socks := make([]*sock, n)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				socks[i] = dial(t, gws[i%2].WSURL)
			}
		}()
	}
	wg.Wait()
	ctx := context.Background()

	// Arrays of sockets, as Sails takes them: 100 per call.
	for i := 0; i < n; i += 100 {
		req := &membershipv1.JoinRequest{Room: "src"}
		for _, s := range socks[i : i+100] {
			req.SocketIds = append(req.SocketIds, s.ID)
		}
		resp, err := api.Join(ctx, req)
		if err != nil || len(resp.Results) != 100 || resp.AlreadyMember {
			t.Fatalf("join batch %d: %v", i, err)
		}
	}

	add, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "src", DestRooms: []string{"a", "b", "a"}})
	if err != nil || add.Sockets != n || add.Changed != 2*n {
		t.Fatalf("add: %v %v", add, err)
	}
	if again, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "src", DestRooms: []string{"a", "b"}}); err != nil || again.Changed != 0 {
		t.Fatalf("second add: %v %v", again, err)
	}
	for _, room := range []string{"src", "a", "b"} {
		if got := members(t, api, room); len(got) != n {
			t.Fatalf("%s has %d members", room, len(got))
		}
	}
	rooms, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{})
	if err != nil || len(rooms.Rooms) != 3 {
		t.Fatalf("rooms %v %v", rooms, err)
	}
	for _, r := range rooms.Rooms {
		if r.MemberCount != n {
			t.Fatalf("room %s counts %d", r.Name, r.MemberCount)
		}
	}
	// A socket in all three target rooms gets the message once.
	if br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"src", "a", "b"}}); err != nil || br.Delivered != n {
		t.Fatalf("broadcast: %v %v", br, err)
	}

	rm, err := api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: "src", DestRooms: []string{"b", "never-joined"}})
	if err != nil || rm.Sockets != n || rm.Changed != n {
		t.Fatalf("remove: %v %v", rm, err)
	}
	if got := members(t, api, "b"); len(got) != 0 {
		t.Fatalf("b still has %d members", len(got))
	}

	// A socket id as the source acts on that socket, as in Sails.
	one := socks[7]
	if r, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: one.ID, DestRooms: []string{"solo"}}); err != nil || r.Sockets != 1 || r.Changed != 1 {
		t.Fatalf("add by socket: %v %v", r, err)
	}
	if r, err := api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: one.ID, DestRooms: []string{"solo"}}); err != nil || r.Changed != 1 {
		t.Fatalf("remove by socket: %v %v", r, err)
	}

	// Sails' leaveAll: every member of src leaves every room.
	la, err := api.LeaveAll(ctx, &membershipv1.LeaveAllRequest{Room: "src"})
	if err != nil || la.Sockets != n || la.Changed != 2*n {
		t.Fatalf("leave all: %v %v", la, err)
	}
	if rooms, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{}); err != nil || len(rooms.Rooms) != 0 {
		t.Fatalf("rooms after leave all: %v %v", rooms, err)
	}
	if br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"src", "a", "b"}}); err != nil || br.Delivered != 0 {
		t.Fatalf("broadcast after leave all: %v %v", br, err)
	}
	// What each socket saw, in order.
	for _, i := range []int{0, 1, 7, n - 1} {
		s := socks[i]
		var seen []string
		want := []string{"joined src", "joined a", "joined b", "message src", "left b"}
		if i == 7 {
			want = append(want, "joined solo", "left solo")
		}
		want = append(want, "left src/a", "left src/a")
		for range want {
			f := s.Next(5 * time.Second)
			seen = append(seen, f.Type+" "+f.Room)
		}
		for j, w := range want {
			got := seen[j]
			if w == "left src/a" && (got == "left src" || got == "left a") {
				continue
			}
			if w == "joined a" || w == "joined b" { // one transaction chunk may order them either way
				if got == "joined a" || got == "joined b" {
					continue
				}
			}
			if got != w {
				t.Fatalf("socket %d saw %q, want %q", i, seen, want)
			}
		}
	}

	// Unknown rooms are no-ops; an unknown socket as source is NOT_FOUND.
	if r, err := api.LeaveAll(ctx, &membershipv1.LeaveAllRequest{Room: "nobody"}); err != nil || r.Sockets != 0 || r.Changed != 0 {
		t.Fatalf("leave all of an unknown room: %v %v", r, err)
	}
	if r, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "nobody", DestRooms: []string{"x"}}); err != nil || r.Changed != 0 {
		t.Fatalf("add from an unknown room: %v %v", r, err)
	}
	ghost := one.ID[:strings.LastIndex(one.ID, ".")+1] + strings.Repeat("Q", 22)
	_, err = api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: ghost, DestRooms: []string{"x"}})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
}

func TestMultiSocketJoinLeaveIsAtomic(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g1, g2 := startGateway(t, e, "gw1", 10*time.Second), startGateway(t, e, "gw2", 10*time.Second)
	a, b := dial(t, g1.WSURL), dial(t, g2.WSURL)
	gone := dial(t, g1.WSURL)
	gone.Conn.Close()
	waitFor(t, 5*time.Second, "closed socket removed", func() bool {
		_, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: gone.ID})
		return err != nil
	})
	ctx := context.Background()

	_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: a.ID, SocketIds: []string{b.ID, gone.ID}, Room: "r"})
	st := stacktest.WantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
	if st.Metadata["socket_ids"] != gone.ID {
		t.Fatalf("error names %q, want %s", st.Metadata["socket_ids"], gone.ID)
	}
	if got := members(t, api, "r"); len(got) != 0 {
		t.Fatalf("a failed multi-socket join wrote %v", got)
	}
	resp, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: []string{a.ID, b.ID, a.ID}, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	if err != nil || len(resp.Results) != 2 || resp.AlreadyMember {
		t.Fatalf("join: %v %v", resp, err)
	}
	a.Expect("joined", "r")
	b.Expect("joined", "r")
	lr, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketIds: []string{b.ID, a.ID}, Room: "r"})
	if err != nil || !lr.WasMember || !lr.Results[0].WasMember || lr.Results[0].SocketId != b.ID {
		t.Fatalf("leave: %v %v", lr, err)
	}
	a.Expect("left", "r")
	b.Expect("left", "r")
}

func TestBadInputForEveryRPC(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	long := strings.Repeat("r", 257)
	many := func(k int) []string {
		var out []string
		for i := 0; i < k; i++ {
			out = append(out, fmt.Sprintf("room-%d", i))
		}
		return out
	}
	manySockets := make([]string, 101)
	for i := range manySockets {
		manySockets[i] = s.ID
	}
	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"Join too many sockets", func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: manySockets, Room: "r"})
			return err
		}, "socket_ids"},
		{"Join malformed socket in list", func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: []string{s.ID, "x"}, Room: "r"})
			return err
		}, "socket_ids[1]"},
		{"Leave long room", func() error {
			_, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: long})
			return err
		}, "room"},
		{"ListRooms malformed socket", func() error {
			_, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{SocketId: "x"})
			return err
		}, "socket_id"},
		{"ListMembers no room", func() error {
			_, err := api.ListMembers(ctx, &membershipv1.ListMembersRequest{})
			return err
		}, "room"},
		{"GetSocket no socket", func() error {
			_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{})
			return err
		}, "socket_id"},
		{"Broadcast too many rooms", func() error {
			_, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: many(101)})
			return err
		}, "rooms"},
		{"Broadcast long event", func() error {
			_, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Event: long})
			return err
		}, "event"},
		{"Blast long event", func() error {
			_, err := api.Blast(ctx, &membershipv1.BlastRequest{Event: long})
			return err
		}, "event"},
		{"LeaveAll no room", func() error {
			_, err := api.LeaveAll(ctx, &membershipv1.LeaveAllRequest{})
			return err
		}, "room"},
		{"LeaveAll long room", func() error {
			_, err := api.LeaveAll(ctx, &membershipv1.LeaveAllRequest{Room: long})
			return err
		}, "room"},
		{"AddRoomMembersToRooms no source", func() error {
			_, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{DestRooms: []string{"x"}})
			return err
		}, "source_room"},
		{"AddRoomMembersToRooms no dest", func() error {
			_, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "r"})
			return err
		}, "dest_rooms"},
		{"AddRoomMembersToRooms bad dest", func() error {
			_, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "r", DestRooms: []string{"ok", long}})
			return err
		}, "dest_rooms[1]"},
		{"RemoveRoomMembersFromRooms too many dests", func() error {
			_, err := api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: "r", DestRooms: many(101)})
			return err
		}, "dest_rooms"},
		{"RemoveRoomMembersFromRooms long source", func() error {
			_, err := api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: long, DestRooms: []string{"x"}})
			return err
		}, "source_room"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), codes.InvalidArgument, "INVALID_ARGUMENT", tc.field)
		})
	}
}
