package app_test

import (
	"context"
	"flag"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/grpcedge"
	"github.com/socketrooms/membership/internal/stacktest"
)

const broadcast = "/membership.v1.MembershipService/Broadcast"

// budgetServer is a server built as the membership-server builds its own
// (ServerOptions and the flag's), with a budget of three calls; reserved reads
// its inflight_payload_bytes gauge.
func budgetServer(t *testing.T, defaultTimeout time.Duration, token string) (cc *grpc.ClientConn, reserved func() int64) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f := app.AddInflightPayloadFlag(fs, "Broadcast and Blast calls")
	if err := fs.Parse([]string{"--max-inflight-payload-bytes=" + strconv.Itoa(3*grpcedge.MaxRecvMsgSize)}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv := grpc.NewServer(append(app.ServerOptions(stacktest.Logger(), defaultTimeout, token), f.ServerOptions(reg, "test", defaultTimeout, token)...)...)
	membershipv1.RegisterMembershipServiceServer(srv, membershipv1.UnimplementedMembershipServiceServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	cc, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close(); srv.Stop() })
	return cc, func() int64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "test_inflight_payload_bytes" {
				return int64(mf.GetMetric()[0].GetGauge().GetValue())
			}
		}
		t.Fatal("no test_inflight_payload_bytes")
		return 0
	}
}

// stall opens a Broadcast that sends its headers and never its message; its
// outcome arrives on the returned channel.
func stall(t *testing.T, ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) <-chan error {
	t.Helper()
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{}, broadcast, opts...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.RecvMsg(new(membershipv1.BroadcastResponse)) }()
	return done
}

// Payload calls without the token, which never send their message, are
// refused UNAUTHENTICATED on their headers and reserve nothing, so they cannot
// keep calls with the token out: the budget's reservation is taken before any
// interceptor, the token check among them, could run.
func TestUnauthenticatedPayloadCallsReserveNothing(t *testing.T) {
	cc, reserved := budgetServer(t, time.Minute, "secret")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var held []<-chan error
	for range 4 {
		held = append(held, stall(t, ctx, cc))
	}
	held = append(held, stall(t, ctx, cc, grpc.PerRPCCredentials(app.BearerToken("wrong"))))
	for i, done := range held {
		select {
		case err := <-done:
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("call %d without the token: %v, want UNAUTHENTICATED", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d without the token still open; %d bytes reserved", i, reserved())
		}
	}
	if n := reserved(); n != 0 {
		t.Fatalf("%d bytes reserved by refused calls", n)
	}
	var empty membershipv1.BroadcastRequest
	err := cc.Invoke(ctx, broadcast, &empty, new(membershipv1.BroadcastResponse), grpc.PerRPCCredentials(app.BearerToken("secret")))
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("Broadcast with the token: %v, want it admitted (UNIMPLEMENTED here)", err)
	}
}

// A payload call without a deadline whose message never comes returns its
// reservation after the server's default call timeout, as DEADLINE_EXCEEDED;
// before, it held the budget for as long as its connection lived.
func TestStalledPayloadCallReturnsItsReservation(t *testing.T) {
	const timeout = 300 * time.Millisecond
	cc, reserved := budgetServer(t, timeout, "secret")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := stall(t, ctx, cc, grpc.PerRPCCredentials(app.BearerToken("secret")))
	stacktest.WaitFor(t, 5*time.Second, "the call's reservation", func() bool { return reserved() == grpcedge.MaxRecvMsgSize })
	select {
	case err := <-done:
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("stalled call: %v, want DEADLINE_EXCEEDED", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("stalled call still open after 10s (default timeout %v); %d bytes reserved", timeout, reserved())
	}
	stacktest.WaitFor(t, 5*time.Second, "the reservation returned", func() bool { return reserved() == 0 })
}
