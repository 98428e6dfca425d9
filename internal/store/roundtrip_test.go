package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// txnCounter counts the etcd Txn requests a client sends.
type txnCounter struct{ n atomic.Int64 }

func (c *txnCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == "/etcdserverpb.KV/Txn" {
		c.n.Add(1)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// countingClient is a client of e whose Txn requests c counts.
func countingClient(tb testing.TB, e *testutil.Etcd, c *txnCounter) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(c.intercept)}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Join and Leave of a socket that never moved cost one etcd transaction,
// as before sockets could move; of a moved socket, two (the first one's
// failure branch reads where it lives).
func TestJoinLeaveRoundTrips(t *testing.T) {
	e := testutil.StartEtcd(t)
	var c txnCounter
	s := store.New(countingClient(t, e, &c), "/t/")
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	socks := []store.SocketID{connectUser(t, s, "gwa", a.Lease, ""), connectUser(t, s, "gwa", a.Lease, "")}
	count := func(what string, want int64, f func() error) {
		t.Helper()
		before := c.n.Load()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		if got := c.n.Load() - before; got != want {
			t.Errorf("%s: %d etcd transactions, want %d", what, got, want)
		}
	}
	join := func(room string) func() error {
		return func() error { _, err := s.Join(ctx, socks, room); return err }
	}
	count("join", 1, join("r"))
	count("join again", 1, join("r"))
	count("leave", 1, func() error { _, err := s.Leave(ctx, socks, "r"); return err })
	if err := s.MoveSocket(ctx, socks[1], a, b); err != nil {
		t.Fatal(err)
	}
	count("join with a moved socket", 2, join("r2"))
}

// BenchmarkJoinLeave measures Join+Leave pairs of distinct sockets from
// concurrent callers, coalesced (batch) or one transaction each (plain).
func BenchmarkJoinLeave(b *testing.B) {
	for _, batching := range []bool{false, true} {
		for _, conc := range []int{1, 64} {
			name := fmt.Sprintf("plain/callers=%d", conc)
			if batching {
				name = fmt.Sprintf("batch/callers=%d", conc)
			}
			b.Run(name, func(b *testing.B) {
				e := testutil.StartEtcd(b)
				s := store.New(e.Client, "/t/")
				if batching {
					defer s.StartBatching(4)()
				}
				ctx := context.Background()
				lease, err := e.Client.Grant(ctx, 600)
				if err != nil {
					b.Fatal(err)
				}
				socks := make([]store.SocketID, conc)
				for i := range socks {
					socks[i] = store.NewSocketID("gw", lease.ID)
					if _, err := s.AddSocket(ctx, socks[i], store.SocketRecord{Gateway: "gw", ConnectedAt: time.Now()}); err != nil {
						b.Fatal(err)
					}
				}
				var next atomic.Int64
				b.ResetTimer()
				var wg sync.WaitGroup
				for w := range conc {
					wg.Add(1)
					go func() {
						defer wg.Done()
						sock := []store.SocketID{socks[w]}
						for next.Add(1) <= int64(b.N) {
							if _, err := s.Join(ctx, sock, "room"); err != nil {
								b.Error(err)
								return
							}
							if _, err := s.Leave(ctx, sock, "room"); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "changes/s")
			})
		}
	}
}
