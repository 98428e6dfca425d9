package gatewayconn_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/gatewayconn"
	"github.com/socketrooms/membership/internal/stacktest"
)

// waitCalls counts the WaitApplied calls a gateway serves: all of them, and
// those in flight now.
type waitCalls struct {
	total, inFlight atomic.Int64
}

func (c *waitCalls) interceptor() grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod != gatewayv1.GatewayService_WaitApplied_FullMethodName {
			return h(ctx, req)
		}
		c.total.Add(1)
		c.inFlight.Add(1)
		defer c.inFlight.Add(-1)
		return h(ctx, req)
	})
}

// startCounted starts gateway id on f's etcd with its WaitApplied calls
// counted, and returns its registration.
func (f *fixture) startCounted(id string) (gatewayconn.Registration, *waitCalls) {
	f.t.Helper()
	calls := &waitCalls{}
	stacktest.StartGatewayServing(f.t, f.e.Endpoint, gateway.Config{ID: id, LeaseTTL: 10 * time.Second}, calls.interceptor())
	var reg gatewayconn.Registration
	stacktest.WaitFor(f.t, bound, "the index to hold "+id, func() bool {
		rec, ok := f.index.Gateway(id)
		reg = gatewayconn.Registration{Gateway: id, Lease: rec.Lease}
		return ok
	})
	return reg, calls
}

func (f *fixture) revision() int64 {
	f.t.Helper()
	resp, err := f.e.Client.Get(context.Background(), "nothing")
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.Header.Revision
}

// Many waits on one gateway at once, as WAIT_FOR_APPLY Joins and Leaves
// under load make them, cost the gateway a few WaitApplied calls, not one
// each: one call is in flight per registration, for the highest revision
// asked, and its answer releases every wait at or below the revision the
// gateway reports.
func TestWaitAppliedBatchesWaitsOnOneGateway(t *testing.T) {
	f := newFixture(t)
	reg, calls := f.startCounted("gw")
	const waiters, ahead = 64, 4
	rev := f.revision()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, waiters)
	for i := 0; i < waiters; i++ {
		// Revisions not committed yet: every wait is still open when the
		// last one starts.
		want := rev + 1 + int64(i%ahead)
		go func() { errs <- f.pool.WaitApplied(ctx, want, []gatewayconn.Registration{reg}) }()
	}
	stacktest.WaitFor(t, bound, "a WaitApplied call in flight", func() bool { return calls.inFlight.Load() > 0 })
	time.Sleep(200 * time.Millisecond) // the other waits join it meanwhile
	for i := 0; i < ahead; i++ {
		if _, err := f.e.Client.Put(context.Background(), "elsewhere", "x"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < waiters; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("wait %d: %v", i, err)
		}
	}
	// One call for the first wait, one for the highest revision asked by
	// those that came while it was in flight, and room for stragglers on a
	// loaded machine: far below one per wait.
	if n := calls.total.Load(); n > 8 {
		t.Fatalf("%d waits made %d WaitApplied calls to the gateway, want at most 8", waiters, n)
	}
}

// A wait that gives up (its deadline) leaves the batch without ending the
// call the others wait on; when the last one gives up the call is
// cancelled, so nothing stays in flight at the gateway. A failure of the
// gateway is every waiter's answer.
func TestWaitAppliedBatchOutlivesAGivenUpWait(t *testing.T) {
	f := newFixture(t)
	reg, calls := f.startCounted("gw")
	rev := f.revision()

	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	long, cancelLong := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelLong()
	shortErr := make(chan error, 1)
	longErr := make(chan error, 1)
	go func() { shortErr <- f.pool.WaitApplied(short, rev+1, []gatewayconn.Registration{reg}) }()
	stacktest.WaitFor(t, bound, "a WaitApplied call in flight", func() bool { return calls.inFlight.Load() > 0 })
	go func() { longErr <- f.pool.WaitApplied(long, rev+1, []gatewayconn.Registration{reg}) }()
	if err := <-shortErr; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the short wait: %v, want %v", err, context.DeadlineExceeded)
	}
	select {
	case err := <-longErr:
		t.Fatalf("the long wait ended with the short one: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := f.e.Client.Put(context.Background(), "elsewhere", "x"); err != nil {
		t.Fatal(err)
	}
	if err := <-longErr; err != nil {
		t.Fatalf("the long wait: %v", err)
	}

	// Everyone gives up on a revision far ahead: the call goes too.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := f.pool.WaitApplied(ctx, rev+1_000_000, []gatewayconn.Registration{reg}); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("a wait for a revision far ahead: %v, want %v", err, context.DeadlineExceeded)
			}
		}()
	}
	wg.Wait()
	stacktest.WaitFor(t, bound, "no WaitApplied call in flight", func() bool { return calls.inFlight.Load() == 0 })

	// A registration the gateway no longer holds: every waiter gets its
	// refusal.
	ended := gatewayconn.Registration{Gateway: reg.Gateway, Lease: reg.Lease + 1}
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() { errs <- f.pool.WaitApplied(long, rev, []gatewayconn.Registration{ended}) }()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err == nil {
			t.Fatal("a wait on an ended registration succeeded")
		}
	}
}

// A gateway ends a call that has no deadline at its default call timeout
// (app.ServerOptions: 10 s in cmd/gateway). The shared call carries the
// latest of its waiters' deadlines, and a call whose time ran out is asked
// again for the waiters whose own time has not: a wait longer than the
// gateway's default is answered when the gateway applies the revision, not
// failed with the gateway's DEADLINE_EXCEEDED.
func TestWaitAppliedOutlastsTheGatewaysDefaultTimeout(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deadline bool
	}{{"caller deadline", true}, {"no caller deadline", false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			const gatewayDefault = 200 * time.Millisecond
			defaultTimeout := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if _, ok := ctx.Deadline(); !ok {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, gatewayDefault)
					defer cancel()
				}
				return h(ctx, req)
			})
			calls := &waitCalls{}
			stacktest.StartGatewayServing(t, f.e.Endpoint, gateway.Config{ID: "gw", LeaseTTL: 10 * time.Second}, calls.interceptor(), defaultTimeout)
			var reg gatewayconn.Registration
			stacktest.WaitFor(t, bound, "the index to hold gw", func() bool {
				rec, ok := f.index.Gateway("gw")
				reg = gatewayconn.Registration{Gateway: "gw", Lease: rec.Lease}
				return ok
			})
			ctx := context.Background()
			if tc.deadline {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
			}
			want := f.revision() + 1 // not committed yet
			done := make(chan error, 1)
			go func() { done <- f.pool.WaitApplied(ctx, want, []gatewayconn.Registration{reg}) }()
			// Past the gateway's default, the wait must still be open.
			time.Sleep(5 * gatewayDefault)
			select {
			case err := <-done:
				t.Fatalf("the wait ended before its revision was committed: %v", err)
			default:
			}
			if _, err := f.e.Client.Put(context.Background(), "bump", "x"); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("wait: %v; want nil once the gateway applied the revision", err)
				}
			case <-time.After(bound):
				t.Fatal("the wait never ended")
			}
		})
	}
}
