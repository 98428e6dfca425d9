package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/testutil"
)

// A consumer that stops reading altogether is ended too: once its buffer has
// stayed full for the stall timeout, its stream no longer counts against
// --max-watch-streams (the handler does not wait in a send the consumer will
// never make room for), and when the consumer reads again it gets what was
// already on the wire, then RESOURCE_EXHAUSTED.
func TestWatchStalledConsumerFreesItsStream(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _, _ := startAPIWithOptions(t, e.Client,
		service.Options{Watch: service.WatchOptions{BufferEvents: 100, StallTimeout: 500 * time.Millisecond, MaxStreams: 1}},
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	stalled, err := api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Recv(); err != nil {
		t.Fatal(err)
	}
	// Far past a 64 KiB window and 100 events, none of them read.
	joinAndLeaveLongRooms(t, api, s.ID)
	// The one stream this replica serves must come free while the stalled
	// consumer still reads nothing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		next, err := api.WatchMembership(sctx, &membershipv1.WatchMembershipRequest{})
		if err == nil {
			_, err = next.Recv()
		}
		cancel()
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("a new stream while the other consumer stalls: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	n := 0
	for {
		_, err := stalled.Recv()
		if err != nil {
			wantStatus(t, err, codes.ResourceExhausted, "SLOW_CONSUMER", "")
			break
		}
		if n++; n > 1100 {
			t.Fatal("the stream kept every event for a consumer that did not read")
		}
	}
}

// joinAndLeaveLongRooms makes socket join and leave 100 rooms of ~250-byte
// names five times: 1,000 events of ~300 bytes on a watch stream.
func joinAndLeaveLongRooms(t *testing.T, api membershipv1.MembershipServiceClient, socket string) {
	t.Helper()
	ctx := context.Background()
	var rooms []string
	for i := 0; i < 100; i++ {
		rooms = append(rooms, fmt.Sprintf("%03d-%s", i, strings.Repeat("r", 240)))
	}
	for round := 0; round < 5; round++ {
		if _, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: socket, DestRooms: rooms}); err != nil {
			t.Fatal(err)
		}
		if _, err := api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: socket, DestRooms: rooms}); err != nil {
			t.Fatal(err)
		}
	}
}
