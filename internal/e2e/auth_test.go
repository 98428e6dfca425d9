package e2e

import (
	"context"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"os"
	"os/exec"
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
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/etcdembed"
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

// Mutual TLS on both APIs: the right client certificate works, a certificate
// from another CA and a plaintext client are refused; the membership-server
// reaches a gateway with its own client certificate.
func TestMutualTLSOnBothAPIs(t *testing.T) {
	e := testutil.StartEtcd(t)
	ca, other := testutil.NewCA(t, "cluster"), testutil.NewCA(t, "stranger")
	gwCert, gwKey := ca.Issue("gateway")
	srvCert, srvKey := ca.Issue("membership-server")
	clientCert, clientKey := ca.Issue("client")
	strangerCert, strangerKey := other.Issue("client")

	gwAddr := testutil.FreeAddr(t)
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, "--grpc-addr", gwAddr,
		"--tls-cert-file", gwCert, "--tls-key-file", gwKey, "--tls-client-ca-file", ca.File)
	addr := testutil.FreeAddr(t)
	cmd := exec.Command(binary(t, "membership-server"), "--grpc-addr", addr, "--etcd-endpoints", e.Endpoint,
		"--log-level", "error", "--metrics-addr", "",
		"--tls-cert-file", srvCert, "--tls-key-file", srvKey, "--tls-client-ca-file", ca.File,
		"--gateway-tls-ca-file", ca.File, "--gateway-tls-cert-file", srvCert, "--gateway-tls-key-file", srvKey)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	connect := func(certFile, keyFile string) membershipv1.MembershipServiceClient {
		creds, err := app.ClientTLS(ca.File, certFile, keyFile, "")
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return membershipv1.NewMembershipServiceClient(cc)
	}
	api := connect(clientCert, clientKey)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	waitFor(t, 15*time.Second, "the TLS server to serve", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := api.Join(cctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"})
		return err == nil
	})
	s.Expect("joined", "r")
	if br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}}); err != nil || br.Delivered != 1 {
		t.Fatalf("broadcast over mutual TLS to the gateway: %v %v", br, err)
	}
	s.Expect("message", "r")

	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := connect(strangerCert, strangerKey).ListRooms(cctx, &membershipv1.ListRoomsRequest{}); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := membershipv1.NewMembershipServiceClient(plain).ListRooms(cctx, &membershipv1.ListRoomsRequest{}); err == nil {
		t.Fatal("a plaintext client was served")
	}
	// The gateway's internal API refuses a caller with a stranger's certificate.
	strangerCreds, err := app.ClientTLS(ca.File, strangerCert, strangerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	gcc, err := grpc.NewClient(gwAddr, grpc.WithTransportCredentials(strangerCreds))
	if err != nil {
		t.Fatal(err)
	}
	defer gcc.Close()
	if _, err := gatewayv1.NewGatewayServiceClient(gcc).Deliver(cctx, &gatewayv1.DeliverRequest{AllSockets: true}); err == nil {
		t.Fatal("the gateway served a stranger's certificate")
	}
	s.ExpectNothing(200 * time.Millisecond)
}

// Both binaries reach an etcd that requires TLS client certificates.
func TestEtcdOverMutualTLS(t *testing.T) {
	ca := testutil.NewCA(t, "etcd")
	etcdCert, etcdKey := ca.Issue("etcd")
	clientCert, clientKey := ca.Issue("etcd-client")
	addr := testutil.FreeAddr(t)
	srv, err := etcdembed.Start(etcdembed.Config{Dir: t.TempDir(), ClientAddr: addr, PeerAddr: testutil.FreeAddr(t),
		LogLevel: "panic", CertFile: etcdCert, KeyFile: etcdKey, ClientCAFile: ca.File})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	tlsFlags := []string{"--etcd-ca-file", ca.File, "--etcd-cert-file", clientCert, "--etcd-key-file", clientKey}
	e := &testutil.Etcd{Endpoint: srv.Endpoint}
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, tlsFlags...)
	api, _ := startServerProcess(t, srv.Endpoint, tlsFlags...)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")

	// Without a client certificate etcd refuses the server: it never reports
	// SERVING (its broadcast target index cannot load), and its calls fail.
	// (Its version check at start would keep it from listening at all;
	// skipped, to see etcd refuse the calls themselves.)
	noCert, health, _, _ := launchServerProcess(t, srv.Endpoint, "--etcd-ca-file", ca.File, "--etcd-skip-version-check")
	waitFor(t, 15*time.Second, "membership-server answering health", func() bool {
		hctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := health.Check(hctx, &healthpb.HealthCheckRequest{})
		return err == nil
	})
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := noCert.GetSocket(cctx, &membershipv1.GetSocketRequest{SocketId: s.ID}); err == nil {
		t.Fatal("etcd served a client without a certificate")
	}
	hctx, hcancel := context.WithTimeout(ctx, 3*time.Second)
	defer hcancel()
	if resp, err := health.Check(hctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health of a server etcd refuses: %v %v, want NOT_SERVING", resp, err)
	}
}

// Gateways are dialled at their advertised address (a pod IP on Kubernetes),
// so one certificate for all of them names a fixed DNS name instead, which
// --gateway-tls-server-name makes the membership-server check.
func TestGatewayTLSServerName(t *testing.T) {
	e := testutil.StartEtcd(t)
	ca := testutil.NewCA(t, "cluster")
	gwCert, gwKey := ca.IssueFor("gateway", "gateway.socketrooms.internal")
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, "--tls-cert-file", gwCert, "--tls-key-file", gwKey)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		flags     []string
		delivered int64
	}{
		{"checked against the dialled IP", nil, 0},
		{"checked against the shared name", []string{"--gateway-tls-server-name", "gateway.socketrooms.internal"}, 1},
	} {
		api, _ := startServerProcess(t, e.Endpoint, append([]string{"--gateway-tls-ca-file", ca.File}, tc.flags...)...)
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
			t.Fatal(err)
		}
		br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}})
		if err != nil || br.Delivered != tc.delivered || br.FailedGateways != int32(1-tc.delivered) {
			t.Fatalf("%s: broadcast %v %v", tc.name, br, err)
		}
	}
	s.Expect("joined", "r")
	s.Expect("message", "r")
}
