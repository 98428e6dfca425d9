// Package stacktest starts the system's parts for tests: membership-servers
// and gateways in-process on real loopback listeners over a real etcd, and
// real WebSocket clients.
package stacktest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
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

// Logger is quiet unless STACK_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("STACK_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Server is an in-process membership-server.
type Server struct {
	Client membershipv1.MembershipServiceClient
	Addr   string
	// CloseService closes the service as a membership-server does at
	// shutdown, while the listener keeps serving (calls then meet a closed
	// service); the test's cleanup does it otherwise.
	CloseService func()
}

// StartMembershipServer serves the API over e's client on a loopback listener.
func StartMembershipServer(t testing.TB, e *testutil.Etcd) *Server {
	t.Helper()
	return StartMembershipServerWith(t, e.Client)
}

// StartMembershipServerWith serves the API over the given etcd client.
func StartMembershipServerWith(t testing.TB, kv *clientv3.Client) *Server {
	t.Helper()
	svc := service.New(kv, "", Logger())
	srv := grpc.NewServer(app.ServerOptions(Logger(), 10*time.Second, "")...)
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
	var once sync.Once
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		once.Do(svc.Close)
	})
	return &Server{Client: membershipv1.NewMembershipServiceClient(cc), Addr: lis.Addr().String(), CloseService: func() { once.Do(svc.Close) }}
}

// Gateway is an in-process gateway with real listeners.
type Gateway struct {
	ID    string
	WSURL string
	G     *gateway.Gateway
	Stop  func()
}

// StartGateway starts a gateway on e with the given id and lease TTL.
func StartGateway(t testing.TB, e *testutil.Etcd, id string, ttl time.Duration) *Gateway {
	t.Helper()
	return StartGatewayVia(t, e.Endpoint, gateway.Config{ID: id, LeaseTTL: ttl})
}

// StartGatewayVia starts a gateway that reaches etcd at endpoints (comma
// separated), configured by cfg; AdvertiseAddr and Logger are filled in.
func StartGatewayVia(t testing.TB, endpoints string, cfg gateway.Config) *Gateway {
	t.Helper()
	return StartGatewayServing(t, endpoints, cfg)
}

// StartGatewayServing is StartGatewayVia with options for the gateway's gRPC
// server (an interceptor that observes or delays calls, for example).
func StartGatewayServing(t testing.TB, endpoints string, cfg gateway.Config, opts ...grpc.ServerOption) *Gateway {
	t.Helper()
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wsLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := testutil.NewClient(t, strings.Split(endpoints, ",")...)
	cfg.AdvertiseAddr = grpcLis.Addr().String()
	cfg.Logger = Logger()
	g, err := gateway.New(cfg, cli)
	if err != nil {
		t.Fatal(err)
	}
	gsrv := grpc.NewServer(opts...)
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
	WaitFor(t, 10*time.Second, "gateway registered", g.Ready)
	return &Gateway{ID: cfg.ID, WSURL: "ws://" + wsLis.Addr().String() + "/ws", G: g, Stop: stop}
}

// Sock is a real WebSocket client of a gateway.
type Sock struct {
	t    testing.TB
	ID   string
	User string // the user the connected frame named
	// Connected is the connected frame (resume_token, resumed, rooms, …).
	Connected Frame
	Conn      *websocket.Conn
	Frames    chan Frame
	// Closed receives the close frame the server sent (nil for any other end)
	// once the connection ends.
	Closed chan *websocket.CloseError
}

// Frame is any frame of the client protocol.
type Frame struct {
	Type     string          `json:"type"`
	SocketID string          `json:"socket_id"`
	User     string          `json:"user"`
	Room     string          `json:"room"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data"`
	ID       json.RawMessage `json:"id"`
	Status   int             `json:"status"`
	Body     json.RawMessage `json:"body"`
	// Connection state recovery (resume.go): seq on messages; the rest on
	// connected frames.
	Seq         uint64   `json:"seq"`
	ResumeToken string   `json:"resume_token"`
	Resumed     *bool    `json:"resumed"`
	Rooms       []string `json:"rooms"`
	ResumeError string   `json:"resume_error"`
}

// Dial connects a socket and reads its connected frame.
func Dial(t testing.TB, url string) *Sock {
	t.Helper()
	return DialWith(t, url, nil)
}

// DialWith is Dial with handshake headers.
func DialWith(t testing.TB, url string, header http.Header) *Sock {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	s := &Sock{t: t, Conn: conn, Frames: make(chan Frame, 4096), Closed: make(chan *websocket.CloseError, 1)}
	go func() {
		defer close(s.Frames)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					s.Closed <- ce
				} else {
					s.Closed <- nil
				}
				return
			}
			var f Frame
			if err := json.Unmarshal(data, &f); err != nil {
				t.Errorf("bad frame %q: %v", data, err)
				continue
			}
			s.Frames <- f
		}
	}()
	t.Cleanup(func() { conn.Close() })
	f := s.Next(5 * time.Second)
	if f.Type != "connected" || f.SocketID == "" {
		t.Fatalf("first frame %+v, want connected", f)
	}
	s.ID = f.SocketID
	s.User = f.User
	s.Connected = f
	return s
}

// Close closes the socket on purpose, as a client does: a close frame
// (1000), an answer awaited for up to two seconds, then the connection. A
// gateway ends such a socket at once, resume window or not; closing the
// connection alone is a connection that failed.
func (s *Sock) Close() {
	s.t.Helper()
	_ = s.Conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	select {
	case ce := <-s.Closed:
		s.Closed <- ce
	case <-time.After(2 * time.Second):
	}
	s.Conn.Close()
}

// Send writes a text frame.
func (s *Sock) Send(frame string) {
	s.t.Helper()
	if err := s.Conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		s.t.Fatal(err)
	}
}

// Next returns the next frame, failing the test after timeout.
func (s *Sock) Next(timeout time.Duration) Frame {
	s.t.Helper()
	select {
	case f, ok := <-s.Frames:
		if !ok {
			s.t.Fatalf("socket %s closed while waiting for a frame", s.ID)
		}
		return f
	case <-time.After(timeout):
		s.t.Fatalf("socket %s: no frame within %v", s.ID, timeout)
	}
	return Frame{}
}

// Expect reads the next frame and checks its type and room.
func (s *Sock) Expect(typ, room string) Frame {
	s.t.Helper()
	f := s.Next(5 * time.Second)
	if f.Type != typ || f.Room != room {
		s.t.Fatalf("socket %s: got %+v, want %s in %q", s.ID, f, typ, room)
	}
	return f
}

// ExpectNothing fails if any frame arrives within d.
func (s *Sock) ExpectNothing(d time.Duration) {
	s.t.Helper()
	select {
	case f, ok := <-s.Frames:
		if ok {
			s.t.Fatalf("socket %s: unexpected frame %+v", s.ID, f)
		}
	case <-time.After(d):
	}
}

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WantStatus checks an error's code and ErrorInfo reason (and field, if given).
func WantStatus(t testing.TB, err error, code codes.Code, reason, field string) *errdetails.ErrorInfo {
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
			return info
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
	return nil
}

// Members lists every member of room, all pages.
func Members(t testing.TB, c membershipv1.MembershipServiceClient, room string) []string {
	t.Helper()
	var ids []string
	token := ""
	for {
		resp, err := c.ListMembers(context.Background(), &membershipv1.ListMembersRequest{Room: room, PageSize: 1000, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range resp.Members {
			ids = append(ids, m.SocketId)
		}
		if token = resp.NextPageToken; token == "" {
			return ids
		}
	}
}

// HasMember reports whether id is in ids.
func HasMember(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
