package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// Frames of every length class (7-bit, 16-bit and 64-bit lengths) arrive
// intact, in order, and a client's ping is answered.
func TestFramesOfEverySizeAndPings(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")
	pongs := make(chan struct{}, 1)
	s.Conn.SetPongHandler(func(string) error { pongs <- struct{}{}; return nil })
	sizes := []int{0, 90, 125, 126, 65535, 70000, 300000}
	for _, n := range sizes {
		if _, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Data: structpb.NewStringValue(strings.Repeat("x", n))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Conn.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, n := range sizes {
		f := s.Expect("message", "r")
		var v string
		if err := json.Unmarshal(f.Data, &v); err != nil || len(v) != n {
			t.Fatalf("message of %d bytes arrived as %d (%v)", n, len(v), err)
		}
	}
	select {
	case <-pongs:
	case <-time.After(5 * time.Second):
		t.Fatal("no pong")
	}
}

// A client that stops reading is disconnected once its kernel buffers and
// its queue are full; the others keep getting every message meanwhile. A
// gateway that waited on the stalled client's writes would hold each Deliver
// for the whole write timeout (a minute here), past the membership-server's
// gatewayconn.DeliverTimeout, and the Broadcast would report the gateway
// failed: that, not a wall-clock bound, is what this test looks for.
func TestStalledClientIsDroppedWithoutSlowingOthers(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, SendQueue: 4,
		WriteTimeout: time.Minute})
	reader := dial(t, g.WSURL)
	stalled := dialSilent(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: []string{reader.ID, stalled}, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	reader.Expect("joined", "r")
	big := structpb.NewStringValue(strings.Repeat("y", 256<<10))
	dropped := false
	for i := 0; i < 200 && !dropped; i++ {
		br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Data: big})
		if err != nil {
			t.Fatal(err)
		}
		if br.FailedGateways != 0 || br.Delivered < 1 {
			t.Fatalf("broadcast %d: delivered to %d sockets, %d failed gateways: a stalled client held it up",
				i, br.Delivered, br.FailedGateways)
		}
		reader.Expect("message", "r")
		_, err = api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: stalled})
		dropped = err != nil
	}
	if !dropped {
		t.Fatal("the stalled client was never disconnected")
	}
	if got := members(t, api, "r"); len(got) != 1 || got[0] != reader.ID {
		t.Fatalf("members after the drop: %v", got)
	}
}

// The gateway pings every socket; one that answers stays, one that does not
// is dropped after two intervals.
func TestUnansweredPingsDropTheSocket(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, PingInterval: 200 * time.Millisecond})
	alive := dial(t, g.WSURL) // reads, so its library answers pings
	silent := dialSilent(t, g.WSURL)
	ctx := context.Background()
	waitFor(t, 5*time.Second, "the silent socket to be dropped", func() bool {
		_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: silent})
		return err != nil
	})
	if _, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: alive.ID}); err != nil {
		t.Fatalf("the answering socket was dropped too: %v", err)
	}
}

// dialSilent connects a client that reads its connected frame and nothing
// after (so it answers no ping either), and returns its socket id.
func dialSilent(t *testing.T, url string) string {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var hello struct {
		SocketID string `json:"socket_id"`
	}
	if err := conn.ReadJSON(&hello); err != nil {
		t.Fatal(err)
	}
	return hello.SocketID
}

// Only allowed origins get a socket; a refused one is answered 403 before
// any upgrade.
func TestAllowedOrigins(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second,
		AllowedOrigins: []string{"https://app.example"}})
	host := strings.TrimSuffix(strings.TrimPrefix(g.WSURL, "ws://"), "/ws")
	for origin, ok := range map[string]bool{
		"":                         true, // not a browser
		"https://app.example":      true,
		"https://APP.example":      true,
		"http://" + host:           true, // the gateway's own origin
		"https://evil.example":     false,
		"https://app.example.evil": false,
		"null":                     false,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial(g.WSURL, h)
		if ok {
			if err != nil {
				t.Errorf("origin %q refused: %v", origin, err)
				continue
			}
			conn.Close()
			continue
		}
		if err == nil {
			conn.Close()
			t.Errorf("origin %q got a socket", origin)
		} else if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: %v, want 403", origin, err)
		}
	}
}

func TestGatewayLimits(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second,
		MaxSockets: 2, FramesPerSecond: 5})
	a := dial(t, g.WSURL)
	dial(t, g.WSURL)
	if _, resp, err := websocket.DefaultDialer.Dial(g.WSURL, nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third socket on a gateway of 2: %v", err)
	}

	// A burst past the rate: the excess requests are answered 429.
	for i := 0; i < 20; i++ {
		a.Send(`{"type":"request","id":` + strconv.Itoa(i) + `,"path":"/x"}`)
	}
	statuses := map[int]int{}
	for i := 0; i < 20; i++ {
		statuses[a.Expect("response", "").Status]++
	}
	if statuses[http.StatusNotImplemented] != 10 || statuses[http.StatusTooManyRequests] != 10 {
		t.Fatalf("statuses %v, want 10 served (the 2 s burst) and 10 refused", statuses)
	}
	// Far past it, the socket is closed.
	for i := 0; i < 40; i++ {
		if err := a.Conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"noise"}`)); err != nil {
			break
		}
	}
	for range a.Frames {
	}
	if ce := <-a.Closed; ce == nil || ce.Code != websocket.ClosePolicyViolation {
		t.Fatalf("close %v, want 1008", ce)
	}
}
