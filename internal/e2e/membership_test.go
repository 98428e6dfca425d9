package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	removeBinaries()
	if code == 0 {
		if err := goleak.Find(testutil.EtcdLeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func text(s string) *structpb.Value {
	v, _ := structpb.NewValue(map[string]any{"text": s})
	return v
}

func TestTwoGatewaysJoinBroadcastLeave(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g1 := startGateway(t, e, "gw1", 10*time.Second)
	g2 := startGateway(t, e, "gw2", 10*time.Second)
	a, b := dial(t, g1.WSURL), dial(t, g2.WSURL)
	ctx := context.Background()

	for _, s := range []*sock{a, b} {
		resp, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "fun"})
		if err != nil || resp.AlreadyMember || resp.Revision == 0 {
			t.Fatalf("join %s: %v %v", s.ID, resp, err)
		}
		s.Expect("joined", "fun")
	}
	br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"fun"}, Event: "chat", Data: text("hi")})
	if err != nil || br.Delivered != 2 || br.FailedGateways != 0 {
		t.Fatalf("broadcast: %v %v", br, err)
	}
	for _, s := range []*sock{a, b} {
		f := s.Expect("message", "fun")
		if f.Event != "chat" || string(f.Data) != `{"text":"hi"}` {
			t.Fatalf("message frame %+v", f)
		}
	}

	if got := members(t, api, "fun"); len(got) != 2 || !hasMember(got, a.ID) || !hasMember(got, b.ID) {
		t.Fatalf("members %v", got)
	}
	lm, _ := api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "fun"})
	for _, m := range lm.Members {
		want := map[string]string{a.ID: "gw1", b.ID: "gw2"}[m.SocketId]
		if m.Gateway != want {
			t.Fatalf("member %s on %q, want %q", m.SocketId, m.Gateway, want)
		}
	}

	lr, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: b.ID, Room: "fun"})
	if err != nil || !lr.WasMember {
		t.Fatalf("leave: %v %v", lr, err)
	}
	b.Expect("left", "fun")
	br, err = api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"fun"}, Data: text("again")})
	if err != nil || br.Delivered != 1 {
		t.Fatalf("broadcast after leave: %v %v", br, err)
	}
	if f := a.Expect("message", "fun"); f.Event != "message" {
		t.Fatalf("default event name: %+v", f)
	}
	b.ExpectNothing(300 * time.Millisecond)

	if got := members(t, api, "fun"); len(got) != 1 || got[0] != a.ID {
		t.Fatalf("members after leave %v", got)
	}
	rooms, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{})
	if err != nil || len(rooms.Rooms) != 1 || rooms.Rooms[0].Name != "fun" || rooms.Rooms[0].MemberCount != 1 {
		t.Fatalf("rooms %v %v", rooms, err)
	}
	mine, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{SocketId: b.ID})
	if err != nil || len(mine.Rooms) != 0 {
		t.Fatalf("b's rooms %v %v", mine, err)
	}
	gs, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: a.ID})
	if err != nil || gs.Socket.Gateway != "gw1" || len(gs.Socket.Rooms) != 1 || gs.Socket.ConnectedAt.AsTime().IsZero() {
		t.Fatalf("get socket %v %v", gs, err)
	}
}

func TestJoinLeaveSemanticsAndErrors(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()

	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	again, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"})
	if err != nil || !again.AlreadyMember {
		t.Fatalf("second join: %v %v", again, err)
	}
	s.Expect("joined", "r")
	s.ExpectNothing(200 * time.Millisecond) // the second join changed nothing

	notMember, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: "elsewhere"})
	if err != nil || notMember.WasMember {
		t.Fatalf("leave of non-member: %v %v", notMember, err)
	}

	// The socket-request form: the socket comes from x-socket-id metadata.
	mdCtx := metadata.AppendToOutgoingContext(ctx, "x-socket-id", s.ID)
	if lr, err := api.Leave(mdCtx, &membershipv1.LeaveRequest{Room: "r"}); err != nil || !lr.WasMember {
		t.Fatalf("leave by metadata: %v %v", lr, err)
	}
	s.Expect("left", "r")
	if jr, err := api.Join(mdCtx, &membershipv1.JoinRequest{Room: "r2"}); err != nil || jr.AlreadyMember {
		t.Fatalf("join by metadata: %v %v", jr, err)
	}
	s.Expect("joined", "r2")

	// A well-formed id of a socket that does not exist.
	ghost := s.ID[:strings.LastIndex(s.ID, ".")+1] + strings.Repeat("A", 22)
	_, err = api.Join(ctx, &membershipv1.JoinRequest{SocketId: ghost, Room: "r"})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
	_, err = api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: ghost, Room: "r"})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
	_, err = api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: ghost})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")

	bad := []struct {
		name  string
		call  func() error
		field string
	}{
		{"empty room", func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID})
			return err
		}, "room"},
		{"300-byte room", func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: strings.Repeat("x", 300)})
			return err
		}, "room"},
		{"control character", func() error {
			_, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: "a\x00b"})
			return err
		}, "room"},
		{"list members of bad room", func() error {
			_, err := api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "tab\there"})
			return err
		}, "room"},
		{"no socket", func() error {
			_, err := api.Leave(ctx, &membershipv1.LeaveRequest{Room: "r"})
			return err
		}, "socket_id"},
		{"malformed socket", func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: "nope", Room: "r"})
			return err
		}, "socket_id"},
		{"malformed metadata socket", func() error {
			_, err := api.Join(metadata.AppendToOutgoingContext(ctx, "x-socket-id", "nope"), &membershipv1.JoinRequest{Room: "r"})
			return err
		}, "x-socket-id"},
		{"unknown wait_for", func() error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r", WaitFor: 9})
			return err
		}, "wait_for"},
		{"broadcast without rooms", func() error {
			_, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{})
			return err
		}, "rooms"},
		{"broadcast bad room", func() error {
			_, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"ok", ""}})
			return err
		}, "rooms[1]"},
		{"page size", func() error {
			_, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{PageSize: 5000})
			return err
		}, "page_size"},
		{"page token", func() error {
			_, err := api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "r", PageToken: "!!"})
			return err
		}, "page_token"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(), codes.InvalidArgument, "INVALID_ARGUMENT", tc.field)
		})
	}
	// Bad input lost nothing.
	if got := members(t, api, "r2"); len(got) != 1 || got[0] != s.ID {
		t.Fatalf("members of r2 after bad calls: %v", got)
	}
}

func TestRoomNamesRoundTrip(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	names := []string{"a/b", "100%", "fun room", "%2F/%25", "/", "ünïcødé/ 𝄞", strings.Repeat("é", 128)}
	for _, n := range names {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: n}); err != nil {
			t.Fatalf("join %q: %v", n, err)
		}
		s.Expect("joined", n)
	}
	var listed []string
	token := ""
	for {
		resp, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Rooms {
			listed = append(listed, r.Name)
			if r.MemberCount != 1 {
				t.Errorf("room %q has count %d", r.Name, r.MemberCount)
			}
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	mine, err := api.ListRooms(ctx, &membershipv1.ListRoomsRequest{SocketId: s.ID})
	if err != nil {
		t.Fatal(err)
	}
	var socketRooms []string
	for _, r := range mine.Rooms {
		socketRooms = append(socketRooms, r.Name)
	}
	sort.Strings(names)
	sort.Strings(listed)
	if strings.Join(listed, "\n") != strings.Join(names, "\n") || strings.Join(socketRooms, "\n") != strings.Join(names, "\n") {
		t.Fatalf("listed %q / %q, want %q", listed, socketRooms, names)
	}
	for _, n := range names {
		if got := members(t, api, n); len(got) != 1 {
			t.Fatalf("members of %q: %v", n, got)
		}
		br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{n}})
		if err != nil || br.Delivered != 1 {
			t.Fatalf("broadcast to %q: %v %v", n, br, err)
		}
		s.Expect("message", n)
	}
}

func TestDisconnectRemovesSocketAtOnce(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 30*time.Second) // far longer than the test waits
	s := dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	s.Conn.Close()
	start := time.Now()
	waitFor(t, 3*time.Second, "membership removed", func() bool { return len(members(t, api, "r")) == 0 })
	t.Logf("removed %v after disconnect", time.Since(start))
	_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
	_, err = api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
}

func TestBroadcastOncePerSocketAndExceptions(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g1 := startGateway(t, e, "gw1", 10*time.Second)
	g2 := startGateway(t, e, "gw2", 10*time.Second)
	a, b, c := dial(t, g1.WSURL), dial(t, g2.WSURL), dial(t, g2.WSURL)
	ctx := context.Background()
	for _, s := range []*sock{a, b, c} {
		for _, room := range []string{"x", "y"} {
			if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: room, WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
				t.Fatal(err)
			}
			s.Expect("joined", room)
		}
	}
	// In both rooms: one message each, from the first room named.
	br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"y", "x", "y"}, Data: structpb.NewNumberValue(1)})
	if err != nil || br.Delivered != 3 {
		t.Fatalf("broadcast: %v %v", br, err)
	}
	for _, s := range []*sock{a, b, c} {
		if f := s.Expect("message", "y"); string(f.Data) != "1" {
			t.Fatalf("data %s", f.Data)
		}
		s.ExpectNothing(100 * time.Millisecond)
	}
	// Excluded explicitly and as the requesting socket.
	mdCtx := metadata.AppendToOutgoingContext(ctx, "x-socket-id", c.ID)
	br, err = api.Broadcast(mdCtx, &membershipv1.BroadcastRequest{Rooms: []string{"x"}, ExceptSocketIds: []string{a.ID}})
	if err != nil || br.Delivered != 1 {
		t.Fatalf("broadcast with exceptions: %v %v", br, err)
	}
	if f := b.Expect("message", "x"); string(f.Data) != "null" {
		t.Fatalf("data %s", f.Data)
	}
	a.ExpectNothing(100 * time.Millisecond)
	c.ExpectNothing(100 * time.Millisecond)

	bl, err := api.Blast(ctx, &membershipv1.BlastRequest{Event: "news", Data: structpb.NewStringValue("all")})
	if err != nil || bl.Delivered != 3 {
		t.Fatalf("blast: %v %v", bl, err)
	}
	for _, s := range []*sock{a, b, c} {
		f := s.Expect("message", "")
		var v string
		if json.Unmarshal(f.Data, &v); v != "all" || f.Event != "news" {
			t.Fatalf("blast frame %+v", f)
		}
	}
}

func TestSocketRequestWithoutUpstreamAnswers501(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	if err := s.Conn.WriteMessage(1, []byte(`{"type":"request","id":7,"method":"GET","path":"/x"}`)); err != nil {
		t.Fatal(err)
	}
	f := s.Expect("response", "")
	if f.Status != 501 || string(f.ID) != "7" {
		t.Fatalf("response %+v", f)
	}
}
