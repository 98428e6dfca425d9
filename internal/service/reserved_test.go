package service_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/socketio"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// A Socket.IO client would take an event named connect, disconnect, … for
// its own lifecycle event, and one named membership:… for a gateway notice:
// Broadcast and Blast refuse them with INVALID_ARGUMENT on the field event,
// and still deliver every other name.
func TestReservedEventNamesAreRefused(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	g := stacktest.StartGateway(t, e, "gw-a", 10*time.Second)
	s := stacktest.Dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")
	for _, event := range append([]string{"membership:anything"}, socketio.ReservedEvents...) {
		_, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Event: event})
		stacktest.WantStatus(t, err, codes.InvalidArgument, service.ReasonInvalidArgument, "event")
		_, err = api.Blast(ctx, &membershipv1.BlastRequest{Event: event})
		stacktest.WantStatus(t, err, codes.InvalidArgument, service.ReasonInvalidArgument, "event")
	}
	s.ExpectNothing(200 * time.Millisecond)
	for _, event := range []string{"chat", "message", "connected", "membership"} {
		if _, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Event: event}); err != nil {
			t.Fatalf("%s: %v", event, err)
		}
		if f := s.Expect("message", "r"); f.Event != event {
			t.Fatalf("got event %q, want %q", f.Event, event)
		}
	}
}
