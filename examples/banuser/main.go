// Command banuser is the second example of Sails' sails.sockets.leave() page,
// in Go: make every socket of a user (one per browser tab) leave
// privateAdminRoom, in one call.
//
//	go run ./examples/banuser --membership-addr 127.0.0.1:50051 USER
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

const adminRoom = "privateAdminRoom"

func main() {
	membershipAddr := flag.String("membership-addr", "127.0.0.1:50051", "membership-server gRPC address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if flag.NArg() != 1 {
		log.Error("usage: banuser [--membership-addr ADDR] USER")
		os.Exit(2)
	}
	cc, err := grpc.NewClient(*membershipAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Error("dial", "err", err)
		os.Exit(1)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left, err := banUser(ctx, membershipv1.NewMembershipServiceClient(cc), flag.Arg(0), log)
	if err != nil {
		log.Error("ban failed", "err", err)
		os.Exit(1)
	}
	fmt.Printf("%d socket(s) removed from %s\n", left, adminRoom)
}

// banUser is the Sails snippet
//
//	if (user.connectedSocketIds.length === 0) { return; } // nothing to do
//	_.each(user.connectedSocketIds, function(socketId) {
//	  sails.sockets.leave(socketId, 'privateAdminRoom');
//	});
//
// as one Leave by user: the membership-server selects every socket whose
// token named the user, on whichever gateway, including a tab opened a
// moment ago that the app's own list would not have yet. It returns once
// their gateways applied the change (WAIT_FOR_APPLY): nothing sent to the
// room afterwards reaches any of them. A user with no sockets is nothing to
// do, not an error.
func banUser(ctx context.Context, api membershipv1.MembershipServiceClient, user string, log *slog.Logger) (int, error) {
	resp, err := api.Leave(ctx, &membershipv1.LeaveRequest{User: user, Room: adminRoom, WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY})
	if err != nil {
		return 0, fmt.Errorf("user %s: %w", user, err)
	}
	left := 0
	for _, r := range resp.Results {
		if r.WasMember {
			left++
		}
	}
	log.Info("user banned from the admin room", "user", user, "sockets", len(resp.Results), "left", left, "revision", resp.Revision)
	return left, nil
}
