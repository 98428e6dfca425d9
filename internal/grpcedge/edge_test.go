package grpcedge_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/grpcedge"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// servers are both gRPC servers as their binaries build them
// (app.ServerOptions, and the budget when given), on loopback listeners.
type servers struct {
	membership, gateway *grpc.ClientConn
	gatewayID           string
	gw                  *gateway.Gateway
}

func startServers(t testing.TB, membershipBudget, gatewayBudget *grpcedge.Budget) *servers {
	t.Helper()
	e := testutil.StartEtcd(t)
	s := &servers{gatewayID: "gw-edge"}

	svc := service.New(e.Client, "", stacktest.Logger())
	t.Cleanup(svc.Close)
	msrv := grpc.NewServer(append(app.ServerOptions(stacktest.Logger(), 10*time.Second, ""), membershipBudget.ServerOptions()...)...)
	membershipv1.RegisterMembershipServiceServer(msrv, svc)
	s.membership = serve(t, msrv)

	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{ID: s.gatewayID, AdvertiseAddr: glis.Addr().String(), LeaseTTL: 5 * time.Second,
		Logger: stacktest.Logger()}, testutil.NewClient(t, e.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	s.gw = g
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	gsrv := grpc.NewServer(append(app.ServerOptions(stacktest.Logger(), 10*time.Second, ""), gatewayBudget.ServerOptions()...)...)
	g.RegisterGRPC(gsrv)
	s.gateway = serveOn(t, gsrv, glis)
	stacktest.WaitFor(t, 10*time.Second, "gateway registered", g.Ready)
	return s
}

func serve(t testing.TB, srv *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, srv, lis)
}

func serveOn(t testing.TB, srv *grpc.Server, lis net.Listener) *grpc.ClientConn {
	t.Helper()
	go srv.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); srv.Stop() })
	return cc
}

// rawCodec sends and receives a call's message bytes as they are, so that a
// test can send bytes no generated client would encode.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// invokeRaw sends b as the request of fullMethod.
func invokeRaw(ctx context.Context, cc *grpc.ClientConn, fullMethod string, b []byte) error {
	var out []byte
	return cc.Invoke(ctx, fullMethod, &b, &out, grpc.ForceCodecV2(rawCodec{}))
}

// errorInfo returns err's ErrorInfo, failing t unless err has code and one.
func errorInfo(t testing.TB, err error, code codes.Code) *errdetails.ErrorInfo {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
	return nil
}

func statusCode(err error) codes.Code { return status.Code(err) }
