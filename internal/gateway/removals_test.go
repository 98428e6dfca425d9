package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// writeStall holds back an etcd client's writes (Put, DeleteRange, Txn)
// while it is on, as an etcd whose writes stall (a slow disk, a raft that
// cannot commit) does, until the caller's deadline or Resume. Reads and
// streams, lease renewals and the watch among them, pass.
type writeStall struct {
	mu      sync.Mutex
	stalled chan struct{} // non-nil while on; closed by Resume
}

func (w *writeStall) Stall() {
	w.mu.Lock()
	w.stalled = make(chan struct{})
	w.mu.Unlock()
}

func (w *writeStall) Resume() {
	w.mu.Lock()
	close(w.stalled)
	w.stalled = nil
	w.mu.Unlock()
}

func (w *writeStall) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	switch method {
	case "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange", "/etcdserverpb.KV/Txn":
		w.mu.Lock()
		stalled := w.stalled
		w.mu.Unlock()
		if stalled != nil {
			select {
			case <-stalled:
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// startGateway runs a gateway on cli with an HTTP server for its sockets
// until the test ends, and waits for it to register.
func startGateway(t *testing.T, cfg Config, cli *clientv3.Client) (*Gateway, string) {
	t.Helper()
	g, err := New(cfg, cli)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	srv := httptest.NewServer(g.Handler())
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	waitFor(t, 10*time.Second, "gateway registered", g.Ready)
	return g, "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connect opens a socket and reads its "connected" frame, which the gateway
// sends once the socket's record is in etcd.
func connect(t *testing.T, url string) (*websocket.Conn, store.SocketID) {
	d := websocket.Dialer{ReadBufferSize: 256, WriteBufferSize: 256, HandshakeTimeout: 10 * time.Second}
	conn, _, err := d.Dial(url, nil)
	if err != nil {
		t.Error(err)
		return nil, store.SocketID{}
	}
	var f frame
	if _, b, err := conn.ReadMessage(); err != nil || json.Unmarshal(b, &f) != nil || f.Type != "connected" {
		t.Errorf("first frame: %v %+v", err, f)
		conn.Close()
		return nil, store.SocketID{}
	}
	sid, err := store.ParseSocketID(f.SocketID)
	if err != nil {
		t.Error(err)
	}
	return conn, sid
}

// keyCount counts the keys under the default prefix's part (e.g. "sockets/").
func keyCount(t *testing.T, cli *clientv3.Client, part string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), store.DefaultPrefix+part, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func metricValue(t *testing.T, g *Gateway, name string) float64 {
	t.Helper()
	mfs, err := g.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// More sockets than the 4,096 the removal retry queue once held close while
// etcd's writes stall and its lease renewals go on. Once writes resume, no
// closed socket stays registered: every record and membership key goes.
func TestSocketsClosedWhileWritesStallAreAllRemoved(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 4,200 WebSockets")
	}
	const sockets = 4200
	e := testutil.StartEtcd(t)
	var stall writeStall
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(stall.intercept)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	g, url := startGateway(t, Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", LeaseTTL: 10 * time.Second,
		EtcdTimeout: 2 * time.Second, PingInterval: time.Hour}, cli)

	conns := make([]*websocket.Conn, sockets)
	sids := make([]store.SocketID, sockets)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				conns[i], sids[i] = connect(t, url)
			}
		}()
	}
	for i := range conns {
		next <- i
	}
	close(next)
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if t.Failed() {
		t.FailNow()
	}
	ctx := context.Background()
	if added, _, err := store.New(e.Client, "").AddToRooms(ctx, sids, []string{"room"}); err != nil || added != sockets {
		t.Fatalf("join %d sockets: added %d, %v", sockets, added, err)
	}
	if n := keyCount(t, e.Client, "sockets/"); n != sockets {
		t.Fatalf("%d socket records, want %d", n, sockets)
	}

	stall.Stall()
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 60*time.Second, "every socket gone from the hub", func() bool { return g.Sockets() == 0 })
	time.Sleep(3 * g.cfg.EtcdTimeout) // the removals time out meanwhile
	if !g.Ready() {
		t.Fatal("the gateway lost its lease while only writes stalled")
	}
	stall.Resume()
	resumed := time.Now()

	deadline := time.Now().Add(60 * time.Second) // generous: under -race, etcd runs in this process too
	for {
		records, rooms, gwm := keyCount(t, e.Client, "sockets/"), keyCount(t, e.Client, "rooms/"), keyCount(t, e.Client, "gwm/")
		if records+rooms+gwm == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60s after etcd's writes resumed, %d of %d closed sockets are still registered (%d room keys, %d gwm keys left)",
				records, sockets, rooms, gwm)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("every closed socket's keys gone %v after writes resumed", time.Since(resumed).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "no removal pending", func() bool { return metricValue(t, g, "gateway_socket_removals_pending") == 0 })
	if got := abandoned(t, g, "not_retryable"); got != 0 {
		t.Fatalf("%v removals abandoned", got)
	}
}

// A record of a socket on the gateway's lease that the gateway does not hold
// (here written straight to etcd, as a registration whose put committed
// after the gateway had given up on it would be) is removed by reconcile,
// with its memberships; the gateway's open socket keeps its own.
func TestReconcileRemovesRecordWithoutSocket(t *testing.T) {
	e := testutil.StartEtcd(t)
	const interval = 100 * time.Millisecond
	g, url := startGateway(t, Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", ReconcileInterval: interval}, e.Client)
	conn, live := connect(t, url)
	if conn == nil {
		t.FailNow()
	}
	defer conn.Close()

	ctx := context.Background()
	st := store.New(e.Client, "")
	rec, err := st.Gateway(ctx, "gw")
	if err != nil {
		t.Fatal(err)
	}
	orphan := store.NewSocketID("gw", rec.Lease)
	if _, err := st.AddSocket(ctx, orphan, store.SocketRecord{Gateway: "gw", ConnectedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if added, _, err := st.AddToRooms(ctx, []store.SocketID{orphan, live}, []string{"room"}); err != nil || added != 2 {
		t.Fatalf("join: added %d, %v", added, err)
	}

	waitFor(t, 10*time.Second, "the record without a socket removed", func() bool {
		_, _, err := st.GetSocket(ctx, orphan)
		return errors.Is(err, store.ErrSocketNotFound)
	})
	time.Sleep(5 * interval) // more passes: the open socket must stay
	if info, _, err := st.GetSocket(ctx, live); err != nil || len(info.Rooms) != 1 {
		t.Fatalf("the open socket after reconciling: %+v, %v", info, err)
	}
	members, _, err := st.RoomMembers(ctx, "room", 0)
	if err != nil || len(members) != 1 || members[0] != live {
		t.Fatalf("room members %v (%v), want only the open socket %s", members, err, live)
	}
	if n := keyCount(t, e.Client, "gwm/gw/"+orphan.String()+"/"); n != 0 {
		t.Fatalf("%d gwm keys of the removed record left", n)
	}
	if got := metricValue(t, g, "gateway_socket_records_reconciled_total"); got != 1 {
		t.Fatalf("gateway_socket_records_reconciled_total = %v, want 1", got)
	}
}
