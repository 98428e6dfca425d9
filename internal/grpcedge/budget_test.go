package grpcedge_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/grpcedge"
	"github.com/socketrooms/membership/internal/stacktest"
)

const perCall = grpcedge.MaxRecvMsgSize

// openHeld opens n calls of fullMethod and sends their headers but no
// message, so that each holds whatever the server reserved for it on its
// headers. results receives each call's outcome as its RecvMsg returns.
func openHeld(t *testing.T, ctx context.Context, cc *grpc.ClientConn, fullMethod string, n int, reply func() proto.Message) ([]grpc.ClientStream, chan heldResult) {
	t.Helper()
	results := make(chan heldResult, n)
	streams := make([]grpc.ClientStream, n)
	for i := range streams {
		st, err := cc.NewStream(ctx, &grpc.StreamDesc{}, fullMethod)
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = st
		go func() { results <- heldResult{i, st.RecvMsg(reply())} }()
	}
	return streams, results
}

type heldResult struct {
	i   int
	err error
}

// refusals waits for want calls to end, each refused with OVERLOADED in
// domain: they are refused while the admitted calls are still held (their
// messages not even sent), so no refused call waited for a place.
func refusals(t *testing.T, results chan heldResult, want int, domain string) map[int]bool {
	t.Helper()
	refused := map[int]bool{}
	timeout := time.After(10 * time.Second)
	for len(refused) < want {
		select {
		case r := <-results:
			info := errorInfo(t, r.err, codes.ResourceExhausted)
			if info.Reason != grpcedge.ReasonOverloaded || info.Domain != domain {
				t.Fatalf("call %d: ErrorInfo %v, want %s in %s", r.i, info, grpcedge.ReasonOverloaded, domain)
			}
			refused[r.i] = true
		case <-timeout:
			t.Fatalf("%d of %d calls refused while the others were held", len(refused), want)
		}
	}
	return refused
}

func waitReserved(t *testing.T, b *grpcedge.Budget, what string, ok func(int64) bool) {
	t.Helper()
	stacktest.WaitFor(t, 10*time.Second, what, func() bool { return ok(b.Reserved()) })
}

// Concurrent large Broadcasts past the budget: the calls past it are refused
// with RESOURCE_EXHAUSTED/OVERLOADED at once, the others succeed, and every
// reserved byte is returned after. Without the budget all are read and run.
func TestBroadcastsPastTheBudgetAreRefused(t *testing.T) {
	const admitted, calls = 3, 10
	budget := grpcedge.NewBudget(admitted*perCall, perCall, grpcedge.PayloadMethods...)
	s := startServers(t, budget, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	streams, results := openHeld(t, ctx, s.membership, "/membership.v1.MembershipService/Broadcast", calls,
		func() proto.Message { return &membershipv1.BroadcastResponse{} })
	refused := refusals(t, results, calls-admitted, "membership.v1")
	if got := budget.Reserved(); got != admitted*perCall {
		t.Fatalf("reserved %d bytes, want %d", got, admitted*perCall)
	}

	data := structpb.NewStringValue(strings.Repeat("x", 1<<20-64))
	for i, st := range streams {
		if refused[i] {
			continue
		}
		if err := st.SendMsg(&membershipv1.BroadcastRequest{Rooms: []string{"big"}, Data: data}); err != nil {
			t.Fatalf("call %d: send: %v", i, err)
		}
	}
	for range admitted {
		if r := <-results; r.err != nil {
			t.Fatalf("admitted call %d: %v", r.i, r.err)
		}
	}
	waitReserved(t, budget, "every reserved byte returned", func(n int64) bool { return n == 0 })
	if budget.Refused() != calls-admitted {
		t.Fatalf("refused %d, want %d", budget.Refused(), calls-admitted)
	}
	// Other calls never draw on the budget.
	if _, err := membershipv1.NewMembershipServiceClient(s.membership).ListRooms(ctx, &membershipv1.ListRoomsRequest{}); err != nil {
		t.Fatal(err)
	}
}

// The same for the gateway's Deliver, and a decoded call holds only its
// size: three 1 MiB Delivers waiting for a revision the gateway has not
// applied keep about 3 MiB of a 12 MiB budget, so two of the next eight calls
// fit (4 MiB each until read) and six are refused.
func TestDeliversPastTheBudgetAreRefused(t *testing.T) {
	budget := grpcedge.NewBudget(3*perCall, perCall, grpcedge.PayloadMethods...)
	s := startServers(t, nil, budget)
	gw := gatewayv1.NewGatewayServiceClient(s.gateway)
	data := []byte(`"` + strings.Repeat("x", 1<<20) + `"`)

	waitCtx, stopWaiting := context.WithCancel(context.Background())
	defer stopWaiting()
	waiting := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := gw.Deliver(waitCtx, &gatewayv1.DeliverRequest{Revision: 1 << 40, AllSockets: true, DataJson: data, GatewayId: s.gatewayID})
			waiting <- err
		}()
	}
	waitReserved(t, budget, "three waiting Delivers trimmed to their size", func(n int64) bool {
		return n > 3<<20 && n < 3<<20+4096
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	streams, results := openHeld(t, ctx, s.gateway, "/gateway.v1.GatewayService/Deliver", 8,
		func() proto.Message { return &gatewayv1.DeliverResponse{} })
	refused := refusals(t, results, 6, "gateway.v1")

	stopWaiting()
	for range 3 {
		errorInfoless(t, <-waiting, codes.Canceled)
	}
	for i, st := range streams {
		if refused[i] {
			continue
		}
		if err := st.SendMsg(&gatewayv1.DeliverRequest{AllSockets: true, DataJson: data, GatewayId: s.gatewayID}); err != nil {
			t.Fatalf("call %d: send: %v", i, err)
		}
	}
	for range 2 {
		if r := <-results; r.err != nil {
			t.Fatalf("admitted call %d: %v", r.i, r.err)
		}
	}
	waitReserved(t, budget, "every reserved byte returned", func(n int64) bool { return n == 0 })
}

func errorInfoless(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if c := statusCode(err); c != code {
		t.Fatalf("got %v, want %v", err, code)
	}
}

// A call's requests to other servers count in its reservation while they are
// in flight, CopyFactor times each (the membership-server's Deliver to each
// gateway is encoded again to be sent): a 1 MiB call fanned out to two held
// calls holds 1 + 2×CopyFactor MiB of the budget (3 MiB at CopyFactor 1), and
// all of it returns.
func TestOutgoingRequestsCountInTheBudget(t *testing.T) {
	arrived, hold := make(chan struct{}, 2), make(chan struct{})
	sink := grpc.NewServer()
	sink.RegisterService(&grpc.ServiceDesc{ServiceName: "test.Sink", HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Hold", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(wrapperspb.BytesValue)); err != nil {
				return nil, err
			}
			arrived <- struct{}{}
			<-hold
			return &emptypb.Empty{}, nil
		}}}}, struct{}{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go sink.Serve(lis)
	t.Cleanup(sink.Stop)
	out, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(grpcedge.CountOutgoing))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	budget := grpcedge.NewBudget(3*perCall, perCall, "/test.Front/Send")
	front := grpc.NewServer(append(app.ServerOptions(stacktest.Logger(), 10*time.Second, ""), budget.ServerOptions()...)...)
	front.RegisterService(&grpc.ServiceDesc{ServiceName: "test.Front", HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Send", Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/test.Front/Send"}, func(ctx context.Context, req any) (any, error) {
				errs := make(chan error, 2)
				for range 2 {
					go func() { errs <- out.Invoke(ctx, "/test.Sink/Hold", req, new(emptypb.Empty)) }()
				}
				return &emptypb.Empty{}, errors.Join(<-errs, <-errs)
			})
		}}}}, struct{}{})
	frontConn := serve(t, front)

	req := wrapperspb.Bytes(make([]byte, 1<<20))
	size := int64(proto.Size(req))
	done := make(chan error, 1)
	go func() { done <- frontConn.Invoke(context.Background(), "/test.Front/Send", req, new(emptypb.Empty)) }()
	<-arrived
	<-arrived
	if got, want := budget.Reserved(), (1+2*grpcedge.CopyFactor)*size; got != want {
		t.Fatalf("reserved %d bytes while both outgoing calls are held, want %d", got, want)
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitReserved(t, budget, "every reserved byte returned", func(n int64) bool { return n == 0 })
}
