package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.EtcdLeakOptions()...) }

// byHeader authenticates a handshake as the user its X-User header names
// (the gateway's authentication hook; JWTs are tested with the binaries).
func byHeader(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil }

func TestBanUserRemovesEveryTabIncludingOneOpenedJustBefore(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	g1 := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, Authenticate: byHeader})
	g2 := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw2", LeaseTTL: 10 * time.Second, Authenticate: byHeader})
	as := func(user string) http.Header { return http.Header{"X-User": {user}} }
	// The user's tabs, spread over both gateways, and another admin who stays.
	tabs := []*stacktest.Sock{stacktest.DialWith(t, g1.WSURL, as("mallory")), stacktest.DialWith(t, g2.WSURL, as("mallory"))}
	admin := stacktest.DialWith(t, g1.WSURL, as("alice"))
	ctx := context.Background()
	for _, s := range append(tabs, admin) {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: adminRoom}); err != nil {
			t.Fatal(err)
		}
		s.Expect("joined", adminRoom)
	}
	// A tab opened just before the ban, joined to the room as the app does
	// on connect: a list of socket ids kept by the app would miss it.
	fresh := stacktest.DialWith(t, g2.WSURL, as("mallory"))
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: fresh.ID, Room: adminRoom}); err != nil {
		t.Fatal(err)
	}
	fresh.Expect("joined", adminRoom)
	tabs = append(tabs, fresh)

	var logs bytes.Buffer
	left, err := banUser(ctx, api, "mallory", slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || left != 3 {
		t.Fatalf("banUser: %d %v", left, err)
	}
	// WAIT_FOR_APPLY: a broadcast sent now reaches only the other admin.
	br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{adminRoom}, Event: "secret"})
	if err != nil || br.Delivered != 1 {
		t.Fatalf("broadcast after the ban: %v %v", br, err)
	}
	if f := admin.Expect("message", adminRoom); f.Event != "secret" {
		t.Fatalf("admin got %+v", f)
	}
	for _, tab := range tabs {
		tab.Expect("left", adminRoom)
		tab.ExpectNothing(200 * time.Millisecond)
	}
	if m := stacktest.Members(t, api, adminRoom); len(m) != 1 || m[0] != admin.ID {
		t.Fatalf("members after the ban: %v", m)
	}
	// Banning again, or a user with no sockets: nothing to do, not an error.
	for _, user := range []string{"mallory", "nobody"} {
		if left, err := banUser(ctx, api, user, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || left != 0 {
			t.Fatalf("ban of %s: %d %v", user, left, err)
		}
	}
}
