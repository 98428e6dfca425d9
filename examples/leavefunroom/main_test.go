package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.EtcdLeakOptions()...) }

// The whole path: socket → gateway → this app → Leave with x-socket-id.
func TestLeaveFunRoomThroughASocketRequest(t *testing.T) {
	e := testutil.StartEtcd(t)
	srv := stacktest.StartMembershipServer(t, e)
	app := httptest.NewServer(func() http.Handler {
		mux := http.NewServeMux()
		mux.Handle("POST /leaveFunRoom", leaveFunRoom(srv.Client))
		return mux
	}())
	defer app.Close()
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, UpstreamURL: app.URL})
	s := stacktest.Dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := srv.Client.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "fun"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "fun")

	s.Send(`{"type":"request","id":1,"method":"POST","path":"/leaveFunRoom","body":{"roomName":"fun"}}`)
	got := map[string]stacktest.Frame{}
	for i := 0; i < 2; i++ { // the left frame and the response, in either order
		f := s.Next(5 * time.Second)
		got[f.Type] = f
	}
	if got["left"].Room != "fun" {
		t.Fatalf("no left frame: %+v", got)
	}
	resp := got["response"]
	var body struct{ Message string }
	json.Unmarshal(resp.Body, &body)
	if resp.Status != 200 || string(resp.ID) != "1" || body.Message != "Left a room called fun." {
		t.Fatalf("response %+v (%s)", resp, resp.Body)
	}
	if m := stacktest.Members(t, srv.Client, "fun"); len(m) != 0 {
		t.Fatalf("still a member: %v", m)
	}

	// No roomName: 400, and the socket stays connected and in its rooms.
	if _, err := srv.Client.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "fun"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "fun")
	s.Send(`{"type":"request","id":"two","method":"POST","path":"/leaveFunRoom","body":{}}`)
	if f := s.Expect("response", ""); f.Status != 400 || string(f.ID) != `"two"` {
		t.Fatalf("response %+v", f)
	}
	if m := stacktest.Members(t, srv.Client, "fun"); len(m) != 1 {
		t.Fatalf("members after a bad request: %v", m)
	}
}

// A plain HTTP call, not from a socket: 400, as Sails' res.badRequest().
func TestLeaveFunRoomRefusesNonSocketRequests(t *testing.T) {
	e := testutil.StartEtcd(t)
	srv := stacktest.StartMembershipServer(t, e)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/leaveFunRoom", strings.NewReader(`{"roomName":"fun"}`))
	leaveFunRoom(srv.Client).ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "only serves socket requests") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}
