package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.EtcdLeakOptions()...) }

func TestBanUserRemovesEveryTabAndSkipsGoneSockets(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e).Client
	g1 := stacktest.StartGateway(t, e, "gw1", 10*time.Second)
	g2 := stacktest.StartGateway(t, e, "gw2", 10*time.Second)
	// The user's three tabs, spread over both gateways, one more that has
	// closed, and another admin who stays.
	tabs := []*stacktest.Sock{stacktest.Dial(t, g1.WSURL), stacktest.Dial(t, g2.WSURL), stacktest.Dial(t, g2.WSURL)}
	closed := stacktest.Dial(t, g1.WSURL)
	admin := stacktest.Dial(t, g1.WSURL)
	ctx := context.Background()
	for _, s := range append(tabs, closed, admin) {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: adminRoom}); err != nil {
			t.Fatal(err)
		}
		s.Expect("joined", adminRoom)
	}
	closed.Conn.Close()
	stacktest.WaitFor(t, 5*time.Second, "closed tab removed", func() bool {
		return len(stacktest.Members(t, api, adminRoom)) == 4
	})

	var logs bytes.Buffer
	ids := []string{tabs[0].ID, closed.ID, tabs[1].ID, tabs[2].ID}
	left, err := banUser(ctx, api, ids, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil || left != 3 {
		t.Fatalf("banUser: %d %v", left, err)
	}
	if !strings.Contains(logs.String(), "skipping") || !strings.Contains(logs.String(), closed.ID) {
		t.Fatalf("the gone socket was not logged: %s", logs.String())
	}

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
	// Banning again changes nothing and is not an error.
	if left, err := banUser(ctx, api, ids, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || left != 0 {
		t.Fatalf("second ban: %d %v", left, err)
	}
}
