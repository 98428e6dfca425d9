package gatewayconn_test

import (
	"context"
	"testing"

	"github.com/socketrooms/membership/internal/gatewayconn"
)

// BenchmarkWaitAppliedParallel is WAIT_FOR_APPLY's wait on one gateway, 64
// waits at a time per GOMAXPROCS (b.SetParallelism), for a revision the
// gateway has applied: the cost of the wait itself, the gRPC calls to the
// gateway included (gateway-calls/op: how many WaitApplied calls the gateway
// served per wait). The gateway runs in this process, so ns/op and
// allocs/op count both sides.
func BenchmarkWaitAppliedParallel(b *testing.B) {
	f := newFixture(b)
	reg, calls := f.startCounted("gw")
	rev := f.revision()
	ctx := context.Background()
	if err := f.pool.WaitApplied(ctx, rev, []gatewayconn.Registration{reg}); err != nil {
		b.Fatal(err)
	}
	calls0 := calls.total.Load()
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		regs := []gatewayconn.Registration{reg}
		for pb.Next() {
			if err := f.pool.WaitApplied(ctx, rev, regs); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(calls.total.Load()-calls0)/float64(b.N), "gateway-calls/op")
}
