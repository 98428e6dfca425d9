package store_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// connectMany registers gateway gw and n sockets on one lease, as a gateway
// holding n connections does.
func connectMany(t *testing.T, cli *clientv3.Client, s *store.Store, gw string, n int) []store.SocketID {
	t.Helper()
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterGateway(ctx, store.GatewayRecord{ID: gw, GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	socks := make([]store.SocketID, n)
	for i := range socks {
		socks[i] = store.NewSocketID(gw, lease.ID)
		if _, err := s.AddSocket(ctx, socks[i], store.SocketRecord{Gateway: gw, ConnectedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return socks
}

// longRoom is a room name of n bytes, distinct per i.
func longRoom(i, n int) string {
	p := fmt.Sprintf("room-%03d-", i)
	return p + strings.Repeat("x", n-len(p))
}

// Calls that each fit etcd's limits must also fit when coalesced: 40
// concurrent Joins of 100 sockets to 200-byte rooms are each ~130 KB of
// transaction, and as many as the operation limit allows (26) would be
// ~3.4 MB in one transaction, past the client's 2 MiB send limit and etcd's
// 1.5 MiB --max-request-bytes.
func TestCoalescedJoinsStayWithinRequestBytes(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	stop := s.StartBatching(4)
	defer stop()
	socks := connectMany(t, e.Client, s, "gw1", 100)
	ctx := context.Background()
	const calls = 40
	var wg sync.WaitGroup
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Join(ctx, socks, longRoom(i, 200))
			if err != nil {
				t.Errorf("join %d: %v", i, err)
				return
			}
			for j, was := range res.WasMember {
				if was {
					t.Errorf("join %d: socket %d already a member", i, j)
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < calls; i++ {
		members, _, err := s.RoomMembers(ctx, longRoom(i, 200), 0)
		if err != nil || len(members) != len(socks) {
			t.Errorf("room %d: %d members, want %d (%v)", i, len(members), len(socks), err)
		}
	}
}
