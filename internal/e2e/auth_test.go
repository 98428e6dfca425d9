package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/testutil"
)

func tokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With tokens configured, neither gRPC API answers a caller without the right
// one; health stays open for probes.
func TestBearerTokensOnBothAPIs(t *testing.T) {
	e := testutil.StartEtcd(t)
	gwAddr := testutil.FreeAddr(t)
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, "--grpc-addr", gwAddr, "--auth-token-file", tokenFile(t, "gateway-secret"))
	// startServerProcess waits for health SERVING without a token.
	api, _ := startServerProcess(t, e.Endpoint, "--auth-token-file", tokenFile(t, "api-secret"),
		"--gateway-auth-token-file", tokenFile(t, "gateway-secret"))
	wrongGatewayToken, _ := startServerProcess(t, e.Endpoint, "--gateway-auth-token-file", tokenFile(t, "not-it"))
	s := dial(t, g.WSURL)
	ctx := context.Background()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer api-secret")

	_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("join without a token: %v", err)
	}
	_, err = api.Join(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer api-secreT"), &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("join with a wrong token: %v", err)
	}
	if _, err := api.Join(authed, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")
	if br, err := api.Broadcast(authed, &membershipv1.BroadcastRequest{Rooms: []string{"r"}}); err != nil || br.Delivered != 1 {
		t.Fatalf("broadcast with the gateway token: %v %v", br, err)
	}
	s.Expect("message", "r")
	// A server presenting the wrong token to the gateway delivers nothing.
	if br, err := wrongGatewayToken.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}}); err != nil || br.Delivered != 0 || br.FailedGateways != 1 {
		t.Fatalf("broadcast with a wrong gateway token: %v %v", br, err)
	}
	s.ExpectNothing(200 * time.Millisecond)

	// The gateway's internal API itself refuses an unauthenticated caller.
	cc, err := grpc.NewClient(gwAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = gatewayv1.NewGatewayServiceClient(cc).Deliver(ctx, &gatewayv1.DeliverRequest{AllSockets: true, Event: "forged"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unauthenticated deliver: %v", err)
	}
	s.ExpectNothing(200 * time.Millisecond)
}
