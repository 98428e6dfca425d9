package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/testutil"
)

// startMembershipServer serves the API over a real loopback listener and
// returns a client to it.
func startMembershipServer(t *testing.T, e *testutil.Etcd) membershipv1.MembershipServiceClient {
	t.Helper()
	return startMembershipServerWith(t, e.Client)
}

// startMembershipServerWith serves the API over the given etcd client.
func startMembershipServerWith(t *testing.T, kv *clientv3.Client) membershipv1.MembershipServiceClient {
	t.Helper()
	svc := service.New(kv, "", testLogger())
	srv := grpc.NewServer(app.ServerOptions(testLogger(), 10*time.Second)...)
	membershipv1.RegisterMembershipServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		svc.Close()
	})
	return membershipv1.NewMembershipServiceClient(cc)
}

// gw is an in-process gateway with real listeners.
type gw struct {
	id    string
	wsURL string
	g     *gateway.Gateway
	stop  func()
}

func startGateway(t *testing.T, e *testutil.Etcd, id string, ttl time.Duration) *gw {
	t.Helper()
	return startGatewayVia(t, e.Endpoint, id, ttl)
}

// startGatewayVia starts a gateway that reaches etcd at endpoint (a
// comma-separated list for a cluster).
func startGatewayVia(t *testing.T, endpoint, id string, ttl time.Duration) *gw {
	t.Helper()
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := testutil.NewClient(t, strings.Split(endpoint, ",")...)
	g, err := gateway.New(gateway.Config{ID: id, AdvertiseAddr: grpcLis.Addr().String(), LeaseTTL: ttl, Logger: testLogger()}, cli)
	if err != nil {
		t.Fatal(err)
	}
	gsrv := grpc.NewServer()
	g.RegisterGRPC(gsrv)
	hsrv := &http.Server{Handler: g.Handler()}
	go gsrv.Serve(grpcLis)
	go hsrv.Serve(wsLis)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		hsrv.Close()
		gsrv.Stop()
	}
	t.Cleanup(stop)
	waitFor(t, 10*time.Second, "gateway registered", g.Ready)
	return &gw{id: id, wsURL: "ws://" + wsLis.Addr().String() + "/ws", g: g, stop: stop}
}

// sock is a real WebSocket client.
type sock struct {
	t      *testing.T
	id     string
	conn   *websocket.Conn
	frames chan frame
	closed chan *websocket.CloseError // the close frame the server sent, or nil
}

type frame struct {
	Type     string          `json:"type"`
	SocketID string          `json:"socket_id"`
	Room     string          `json:"room"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	ID       json.RawMessage `json:"id"`
	Status   int             `json:"status"`
	Body     json.RawMessage `json:"body"`
}

func dial(t *testing.T, url string) *sock {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	s := &sock{t: t, conn: conn, frames: make(chan frame, 1024), closed: make(chan *websocket.CloseError, 1)}
	go func() {
		defer close(s.frames)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					s.closed <- ce
				} else {
					s.closed <- nil
				}
				return
			}
			var f frame
			if err := json.Unmarshal(data, &f); err != nil {
				t.Errorf("bad frame %q: %v", data, err)
				continue
			}
			s.frames <- f
		}
	}()
	t.Cleanup(func() { conn.Close() })
	f := s.next(5 * time.Second)
	if f.Type != "connected" || f.SocketID == "" {
		t.Fatalf("first frame %+v, want connected", f)
	}
	s.id = f.SocketID
	return s
}

func (s *sock) next(timeout time.Duration) frame {
	s.t.Helper()
	select {
	case f, ok := <-s.frames:
		if !ok {
			s.t.Fatalf("socket %s closed while waiting for a frame", s.id)
		}
		return f
	case <-time.After(timeout):
		s.t.Fatalf("socket %s: no frame within %v", s.id, timeout)
	}
	return frame{}
}

// expect reads the next frame and checks its type and room.
func (s *sock) expect(typ, room string) frame {
	s.t.Helper()
	f := s.next(5 * time.Second)
	if f.Type != typ || f.Room != room {
		s.t.Fatalf("socket %s: got %+v, want %s in %q", s.id, f, typ, room)
	}
	return f
}

// expectNothing fails if any frame arrives within d.
func (s *sock) expectNothing(d time.Duration) {
	s.t.Helper()
	select {
	case f, ok := <-s.frames:
		if ok {
			s.t.Fatalf("socket %s: unexpected frame %+v", s.id, f)
		}
	case <-time.After(d):
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantStatus checks an error's code and ErrorInfo reason (and field, if given).
func wantStatus(t *testing.T, err error, code codes.Code, reason, field string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.Reason != reason {
				t.Fatalf("reason %q, want %q (%v)", info.Reason, reason, err)
			}
			if field != "" && info.Metadata["field"] != field {
				t.Fatalf("field %q, want %q (%v)", info.Metadata["field"], field, err)
			}
			return
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
}

func members(t *testing.T, c membershipv1.MembershipServiceClient, room string) []string {
	t.Helper()
	resp, err := c.ListMembers(context.Background(), &membershipv1.ListMembersRequest{Room: room})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range resp.Members {
		ids = append(ids, m.SocketId)
	}
	return ids
}

func hasMember(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
