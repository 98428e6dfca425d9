// Command banuser is the second example of Sails' sails.sockets.leave() page,
// in Go: make each of a user's sockets (one per browser tab) leave
// privateAdminRoom, logging and skipping sockets that are already gone.
//
//	go run ./examples/banuser --membership-addr 127.0.0.1:50051 SOCKET_ID...
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

const adminRoom = "privateAdminRoom"

func main() {
	membershipAddr := flag.String("membership-addr", "127.0.0.1:50051", "membership-server gRPC address")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cc, err := grpc.NewClient(*membershipAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Error("dial", "err", err)
		os.Exit(1)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left, err := banUser(ctx, membershipv1.NewMembershipServiceClient(cc), flag.Args(), log)
	if err != nil {
		log.Error("ban failed", "err", err)
		os.Exit(1)
	}
	fmt.Printf("%d socket(s) removed from %s\n", left, adminRoom)
}

// banUser is the Sails snippet
//
//	_.each(user.socketIds, function(socketId) {
//	  sails.sockets.leave(socketId, 'privateAdminRoom');
//	});
//
// with what Sails cannot give: each Leave returns once committed, so when
// banUser returns nothing sent to the room reaches any of these sockets, on
// whichever gateway they are.
func banUser(ctx context.Context, api membershipv1.MembershipServiceClient, socketIDs []string, log *slog.Logger) (int, error) {
	left := 0
	for _, id := range socketIDs {
		resp, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: id, Room: adminRoom})
		switch status.Code(err) {
		case codes.OK:
			if resp.WasMember {
				left++
			}
		case codes.NotFound:
			log.Info("socket already disconnected; skipping", "socket", id)
		default:
			return left, fmt.Errorf("socket %s: %w", id, err)
		}
	}
	return left, nil
}
