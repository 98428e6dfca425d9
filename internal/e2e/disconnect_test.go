package e2e

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// startAPIWithOptions serves the API with opts on a loopback listener and
// returns a client, the service and the gRPC server (stopped at cleanup).
func startAPIWithOptions(t *testing.T, kv *clientv3.Client, opts service.Options, dial ...grpc.DialOption) (membershipv1.MembershipServiceClient, *service.Server, *grpc.Server) {
	t.Helper()
	svc := service.NewWithOptions(kv, "", stacktest.Logger(), opts)
	srv := grpc.NewServer(app.ServerOptions(stacktest.Logger(), 10*time.Second, "")...)
	membershipv1.RegisterMembershipServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		svc.EndWatches()
		srv.Stop()
		svc.Close()
	})
	return membershipv1.NewMembershipServiceClient(cc), svc, srv
}

// userGateway starts a gateway whose sockets are authenticated as the user
// named by the handshake's ?user= (empty: none).
func userGateway(t *testing.T, e *testutil.Etcd, id string) *stacktest.Gateway {
	t.Helper()
	return stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: id, LeaseTTL: 10 * time.Second,
		Authenticate: func(r *http.Request) (string, error) { return r.URL.Query().Get("user"), nil }})
}

func dialUser(t *testing.T, g *stacktest.Gateway, user string) *sock {
	t.Helper()
	return dial(t, g.WSURL+"?user="+user)
}

// closedWith waits for the server's close frame and checks its code and text.
func closedWith(t *testing.T, s *sock, code int, text string) {
	t.Helper()
	for {
		select {
		case _, ok := <-s.Frames:
			if ok {
				continue // notices queued before the close
			}
			select {
			case ce := <-s.Closed:
				if ce == nil || ce.Code != code || ce.Text != text {
					t.Fatalf("socket %s closed with %+v, want %d %q", s.ID, ce, code, text)
				}
				return
			case <-time.After(5 * time.Second):
				t.Fatalf("socket %s: no close", s.ID)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("socket %s: not closed within 5s", s.ID)
		}
	}
}

func stillOpen(t *testing.T, api membershipv1.MembershipServiceClient, s *sock) {
	t.Helper()
	if _, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: s.ID}); err != nil {
		t.Fatalf("socket %s should still be connected: %v", s.ID, err)
	}
	select {
	case ce := <-s.Closed:
		t.Fatalf("socket %s closed: %+v", s.ID, ce)
	default:
	}
}

// noticesLeft counts disconnect notices still in etcd.
func noticesLeft(t *testing.T, e *testutil.Etcd) int {
	t.Helper()
	resp, err := e.Client.Get(context.Background(), "/membership/gwm/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "/!disconnect/") {
			n++
		}
	}
	return n
}

// Disconnect by socket_ids closes sockets on two gateways with the code and
// reason, removes their keys, reports a socket already gone, and leaves no
// notice behind once the gateways have removed the sockets.
func TestDisconnectSocketIDs(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g1, g2 := startGateway(t, e, "gw1", 10*time.Second), startGateway(t, e, "gw2", 10*time.Second)
	ctx := context.Background()
	a, b, keep := dial(t, g1.WSURL), dial(t, g2.WSURL), dial(t, g1.WSURL)
	gone := dial(t, g2.WSURL)
	for _, s := range []*sock{a, b, keep} {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
			t.Fatal(err)
		}
	}
	gone.Conn.Close()
	waitFor(t, 5*time.Second, "the closed socket's record to go", func() bool {
		_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: gone.ID})
		return err != nil
	})
	for _, wait := range []membershipv1.WaitFor{membershipv1.WaitFor_WAIT_FOR_APPLY} {
		resp, err := api.Disconnect(ctx, &membershipv1.DisconnectRequest{SocketIds: []string{a.ID, gone.ID, b.ID, a.ID},
			Code: 4321, Reason: "banned", WaitFor: wait})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Disconnected != 2 || len(resp.Results) != 3 || !resp.Results[0].Disconnected || resp.Results[1].Disconnected ||
			resp.Results[1].SocketId != gone.ID || !resp.Results[2].Disconnected {
			t.Fatalf("response %v", resp)
		}
		// The keys are gone at the response's revision.
		got, err := e.Client.Get(ctx, "/membership/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(resp.Revision))
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range got.Kvs {
			k := string(kv.Key)
			if (strings.Contains(k, a.ID) || strings.Contains(k, b.ID)) && !strings.Contains(k, "/!disconnect/") {
				t.Errorf("key %s left at revision %d", k, resp.Revision)
			}
		}
	}
	closedWith(t, a, 4321, "banned")
	closedWith(t, b, 4321, "banned")
	if got := members(t, api, "r"); len(got) != 1 || got[0] != keep.ID {
		t.Fatalf("members after Disconnect: %v", got)
	}
	stillOpen(t, api, keep)
	waitFor(t, 5*time.Second, "the gateways to delete the notices", func() bool { return noticesLeft(t, e) == 0 })

	// Again: both are gone now, reported, not an error; default code.
	resp, err := api.Disconnect(ctx, &membershipv1.DisconnectRequest{SocketIds: []string{a.ID, b.ID}})
	if err != nil || resp.Disconnected != 0 || resp.Results[0].Disconnected || resp.Revision == 0 {
		t.Fatalf("second Disconnect: %v %v", resp, err)
	}
}

// Disconnect by user closes that user's sockets on every gateway (found by
// their records) and no one else's; a user without sockets is no error.
func TestDisconnectUser(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g1, g2 := userGateway(t, e, "gw1"), userGateway(t, e, "gw2")
	ctx := context.Background()
	a1, a2, bob := dialUser(t, g1, "alice"), dialUser(t, g2, "alice"), dialUser(t, g1, "bob")
	resp, err := api.Disconnect(ctx, &membershipv1.DisconnectRequest{User: "alice"})
	if err != nil || resp.Disconnected != 2 {
		t.Fatalf("Disconnect alice: %v %v", resp, err)
	}
	// The user index keys went with the records: the user has no sockets
	// as of the revision the call returned.
	if n, err := e.Client.Get(ctx, "/membership/users/alice/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(resp.Revision)); err != nil || n.Count != 0 {
		t.Fatalf("user index keys of alice after Disconnect: %v %v", n, err)
	}
	if l, err := api.ListSockets(ctx, &membershipv1.ListSocketsRequest{User: "alice"}); err != nil || len(l.Sockets) != 0 {
		t.Fatalf("ListSockets alice after Disconnect: %v %v", l, err)
	}
	closedWith(t, a1, 4000, "")
	closedWith(t, a2, 4000, "")
	stillOpen(t, api, bob)
	resp, err = api.Disconnect(ctx, &membershipv1.DisconnectRequest{User: "carol"})
	if err != nil || resp.Disconnected != 0 || resp.Revision == 0 {
		t.Fatalf("Disconnect of a user without sockets: %v %v", resp, err)
	}
}

// Disconnect by room closes the members as of one revision; sockets that
// join while it runs and whose Join committed after the call's last
// transaction stay connected.
func TestDisconnectRoomWhileMembersJoin(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 10*time.Second)
	ctx := context.Background()
	var before []*sock
	for i := 0; i < 40; i++ {
		s := dial(t, g.WSURL)
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "lobby"}); err != nil {
			t.Fatal(err)
		}
		before = append(before, s)
	}
	type joiner struct {
		s   *sock
		rev int64
	}
	var (
		mu      sync.Mutex
		joiners []joiner
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := dial(t, g.WSURL)
			r, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "lobby"})
			if err != nil {
				continue // closed by the Disconnect between dial and Join
			}
			mu.Lock()
			joiners = append(joiners, joiner{s, r.Revision})
			mu.Unlock()
		}
	}()
	time.Sleep(50 * time.Millisecond)
	resp, err := api.Disconnect(ctx, &membershipv1.DisconnectRequest{Room: "lobby", Code: 4001, Reason: "closing"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if resp.Disconnected < int64(len(before)) {
		t.Fatalf("disconnected %d, want at least the %d members before the call", resp.Disconnected, len(before))
	}
	for _, s := range before {
		closedWith(t, s, 4001, "closing")
	}
	later := 0
	for _, j := range joiners {
		if j.rev > resp.Revision {
			later++
			stillOpen(t, api, j.s)
		}
	}
	if later == 0 {
		t.Fatal("no socket joined after the Disconnect: the test proves nothing")
	}
	t.Logf("%d members closed; %d sockets joined after revision %d and stay", resp.Disconnected, later, resp.Revision)
}

// A Socket.IO client gets membership:disconnected with the code and reason,
// then a DISCONNECT packet, then the session closes.
func TestDisconnectSocketIO(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGateway(t, e, "gw1", 10*time.Second)
	s, sid := dialSIO(t, g, "4")
	s.write(websocket.TextMessage, `40`)
	if got := s.read(); got != `40{"sid":"`+sid+`"}` {
		t.Fatalf("CONNECT answered %q", got)
	}
	if _, err := api.Disconnect(context.Background(), &membershipv1.DisconnectRequest{SocketIds: []string{sid}, Code: 4403, Reason: "kicked"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`42["membership:disconnected",{"code":4403,"reason":"kicked"}]`, `41`, `closed`} {
		if got := s.read(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// Bad input: no selector, two selectors, a code outside 4000–4999, a
// reason too long, a malformed user or socket id.
func TestDisconnectBadInput(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	sid := "gw1.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA"
	for _, c := range []struct {
		name  string
		req   *membershipv1.DisconnectRequest
		field string
	}{
		{"no selector", &membershipv1.DisconnectRequest{}, "socket_ids"},
		{"socket_ids and room", &membershipv1.DisconnectRequest{SocketIds: []string{sid}, Room: "r"}, "room"},
		{"socket_ids and user", &membershipv1.DisconnectRequest{SocketIds: []string{sid}, User: "u"}, "user"},
		{"code below", &membershipv1.DisconnectRequest{Room: "r", Code: 3999}, "code"},
		{"code above", &membershipv1.DisconnectRequest{Room: "r", Code: 5000}, "code"},
		{"reason too long", &membershipv1.DisconnectRequest{Room: "r", Reason: strings.Repeat("x", 124)}, "reason"},
		{"user with a control character", &membershipv1.DisconnectRequest{User: "a\nb"}, "user"},
		{"bad socket id", &membershipv1.DisconnectRequest{SocketIds: []string{"nope"}}, "socket_ids[0]"},
		{"bad wait_for", &membershipv1.DisconnectRequest{Room: "r", WaitFor: 9}, "wait_for"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := api.Disconnect(context.Background(), c.req)
			wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", c.field)
		})
	}
}
