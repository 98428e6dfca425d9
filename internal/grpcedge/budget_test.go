package grpcedge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
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
