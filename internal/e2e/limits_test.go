package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// The membership-server's --max-rooms-per-socket and --max-payload-bytes
// refuse what is past them with clean errors and change nothing.
func TestServerLimits(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := startGateway(t, e, "gw1", 10*time.Second)
	api, _ := startServerProcess(t, e.Endpoint, "--max-rooms-per-socket", "2", "--max-payload-bytes", "64")
	ctx := context.Background()
	a, b := dial(t, g.WSURL), dial(t, g.WSURL)

	for _, room := range []string{"r1", "r2"} {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: a.ID, Room: room}); err != nil {
			t.Fatal(err)
		}
		a.Expect("joined", room)
	}
	_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: []string{b.ID, a.ID}, Room: "r3"})
	md := wantStatus(t, err, codes.FailedPrecondition, service.ReasonRoomLimitExceeded, "").Metadata
	if md["socket_ids"] != a.ID || md["limit"] != "2" {
		t.Fatalf("metadata %v", md)
	}
	b.ExpectNothing(200 * time.Millisecond) // the Join was atomic: b joined nothing

	sid, err := store.ParseSocketID(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	many := make([]string, store.MaxSocketsPerLimitedJoin+1)
	for i := range many {
		many[i] = store.NewSocketID(sid.Gateway, sid.Lease).String()
	}
	_, err = api.Join(ctx, &membershipv1.JoinRequest{SocketIds: many, Room: "r1"})
	wantStatus(t, err, codes.InvalidArgument, service.ReasonInvalidArgument, "socket_ids")

	// Room-wide: a is full, b is not.
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: b.ID, Room: "r1"}); err != nil {
		t.Fatal(err)
	}
	b.Expect("joined", "r1")
	resp, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "r1", DestRooms: []string{"r9"}})
	if err != nil || resp.Sockets != 2 || resp.Changed != 1 || resp.OverLimit != 1 {
		t.Fatalf("AddRoomMembersToRooms: %v %v", resp, err)
	}
	b.Expect("joined", "r9")
	a.ExpectNothing(200 * time.Millisecond)

	small, _ := structpb.NewValue(map[string]any{"text": "hi"})
	if _, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r1"}, Data: small}); err != nil {
		t.Fatal(err)
	}
	a.Expect("message", "r1")
	big, _ := structpb.NewValue(map[string]any{"text": strings.Repeat("x", 64)})
	_, err = api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r1"}, Data: big})
	wantStatus(t, err, codes.InvalidArgument, service.ReasonPayloadTooLarge, "data")
	_, err = api.Blast(ctx, &membershipv1.BlastRequest{Data: big})
	wantStatus(t, err, codes.InvalidArgument, service.ReasonPayloadTooLarge, "data")
	a.ExpectNothing(200 * time.Millisecond)

	// Nonsense limits stop the binary at once with a message.
	for _, flags := range [][]string{{"--max-payload-bytes", "0"}, {"--max-payload-bytes", "4194304"}, {"--max-rooms-per-socket", "-1"}} {
		out, err := exec.Command(binary(t, "membership-server"), append([]string{"--etcd-endpoints", e.Endpoint}, flags...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), flags[0]) {
			t.Errorf("%v: %v %s", flags, err, out)
		}
	}
}
