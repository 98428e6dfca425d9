package e2e

import (
	"context"
	"fmt"
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

// A Socket.IO session that stops reading is closed once its kernel buffers
// and its queue are full, by --send-queue frames or by
// --max-socket-queue-bytes bytes as a native socket is, and counted in
// gateway_slow_client_disconnects_total{protocol="socketio"}; a native socket
// in the same room keeps getting every message, counted under
// protocol="native".
func TestSocketIOStalledSessionIsDropped(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	for _, tc := range []struct {
		name string
		cfg  gateway.Config
	}{
		{"frames", gateway.Config{SendQueue: 4}},
		{"bytes", gateway.Config{SendQueue: 10000, MaxSocketQueueBytes: 1 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.ID, cfg.LeaseTTL = "gw-"+tc.name, 10*time.Second
			g := stacktest.StartGatewayVia(t, e.Endpoint, cfg)
			reader := dial(t, g.WSURL)
			stalled, sid := dialSIO(t, g, "4")
			stalled.write(websocket.TextMessage, "40")
			if got := stalled.read(); !strings.HasPrefix(got, `40{"sid":"`+sid) {
				t.Fatalf("CONNECT answered %q", got)
			}
			ctx := context.Background()
			if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: []string{reader.ID, sid}, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
				t.Fatal(err)
			}
			reader.Expect("joined", "r")
			// From here on the Socket.IO session reads nothing.
			big := structpb.NewStringValue(strings.Repeat("y", 256<<10))
			dropped, sent := false, 0
			for ; sent < 200 && !dropped; sent++ {
				if _, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Event: "chat", Data: big}); err != nil {
					t.Fatal(err)
				}
				reader.Expect("message", "r")
				_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: sid})
				dropped = err != nil
			}
			if !dropped {
				t.Fatal("the stalled Socket.IO session was never closed")
			}
			metricsURL := strings.Replace(strings.Replace(g.WSURL, "ws://", "http://", 1), "/ws", "/metrics", 1)
			metric := func(name, protocol string) float64 {
				return metricValue(t, scrape(t, metricsURL), fmt.Sprintf(`%s\{protocol="%s"\}`, name, protocol))
			}
			waitFor(t, 5*time.Second, "the slow Socket.IO disconnect counted", func() bool {
				return metric("gateway_slow_client_disconnects_total", "socketio") == 1
			})
			if n := metric("gateway_slow_client_disconnects_total", "native"); n != 0 {
				t.Errorf("native slow disconnects %v, want 0", n)
			}
			if n := metric("gateway_broadcast_deliveries_total", "native"); n != float64(sent) {
				t.Errorf("native deliveries %v, want %d", n, sent)
			}
			if n := metric("gateway_broadcast_deliveries_total", "socketio"); n < 1 || n >= float64(sent) {
				t.Errorf("socketio deliveries %v, want at least 1 and fewer than the %d broadcasts", n, sent)
			}
			if g.G.Sockets() != 1 {
				t.Errorf("%d sockets on the gateway, want the reader only", g.G.Sockets())
			}
		})
	}
}
