package grpcedge_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/grpcedge"
	"github.com/socketrooms/membership/internal/stacktest"
)

// A request that does not decode leaves nothing kept once its call is over,
// however the call ends: grpc-go reads a non-client-streaming call's request
// and then once more for its end (decoding a second message into the same
// request), and that second read can fail, on a second message or on a
// cancel, before any interceptor sees the request. Health needs no token, so
// anyone could otherwise grow the server's memory a call at a time.
func TestUndecodableRequestsLeaveNothingKept(t *testing.T) {
	srv := grpc.NewServer(app.ServerOptions(stacktest.Logger(), 10*time.Second, "secret")...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	cc := serve(t, srv)
	bad := []byte{0x0a, 0x01, 0xff} // service: "\xff", not UTF-8
	pending := func() int { n, _ := grpcedge.PendingDecodeErrors(); return n }
	before := pending()

	const calls = 20
	for _, m := range []struct {
		full string
		desc grpc.StreamDesc
	}{
		{"/grpc.health.v1.Health/Watch", grpc.StreamDesc{ServerStreams: true}},
		{"/grpc.health.v1.Health/Check", grpc.StreamDesc{}},
	} {
		for range calls {
			// A second message: the call ends with a cardinality violation.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := cc.NewStream(ctx, &m.desc, m.full, grpc.ForceCodecV2(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := st.SendMsg(&bad); err != nil {
					break
				}
			}
			st.CloseSend()
			var out []byte
			if err := st.RecvMsg(&out); err == nil {
				t.Fatalf("%s with two undecodable messages answered", m.full)
			}
			cancel()

			// A cancel once the request was read.
			ctx, cancel = context.WithCancel(context.Background())
			st, err = cc.NewStream(ctx, &m.desc, m.full, grpc.ForceCodecV2(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			n := pending()
			if err := st.SendMsg(&bad); err != nil {
				t.Fatal(err)
			}
			// The server has decoded it once it kept its error (before
			// any fix) or once the fixed server answers the call.
			done := make(chan error, 1)
			go func() { done <- st.RecvMsg(&out) }()
			deadline := time.Now().Add(2 * time.Second)
			for pending() <= n && len(done) == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			cancel()
			<-done
		}
	}
	stacktest.WaitFor(t, 10*time.Second, "no decode error kept", func() bool {
		runtime.GC()
		n, counted := grpcedge.PendingDecodeErrors()
		return n <= before && counted == int64(n)
	})
}
