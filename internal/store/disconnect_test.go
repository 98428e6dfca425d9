package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// A Disconnect is durable once its first transaction commits: with the
// membership-server gone before it removed the memberships, the gateway
// still closes the socket with the code and reason, and its removal deletes
// the memberships and the notice.
func TestDisconnectCommittedClosesWithoutTheServer(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e)
	g := stacktest.StartGateway(t, e, "gw1", 10*time.Second)
	s := stacktest.Dial(t, g.WSURL)
	ctx := context.Background()
	for _, room := range []string{"a", "b"} {
		if _, err := api.Client.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: room, WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
			t.Fatal(err)
		}
	}
	sid, err := store.ParseSocketID(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(e.Client, "")
	if err := st.DisconnectCommitOnly(ctx, []store.SocketID{sid}, store.DisconnectNotice{Code: 4100, Reason: "gone"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for closed := false; !closed; {
		select {
		case _, ok := <-s.Frames:
			closed = !ok
		case <-deadline:
			t.Fatal("socket not closed")
		}
	}
	if ce := <-s.Closed; ce == nil || ce.Code != 4100 || ce.Text != "gone" {
		t.Fatalf("closed with %+v, want 4100 gone", ce)
	}
	stacktest.WaitFor(t, 5*time.Second, "every key of the socket to go", func() bool {
		resp, err := e.Client.Get(ctx, "/membership/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			if strings.Contains(string(kv.Key), s.ID) {
				return false
			}
		}
		return true
	})
}

// Disconnect of more sockets than one transaction holds (etcd's least
// --max-txn-ops accepted) removes them all in several, and reports the
// ones already gone.
func TestDisconnectManyWithinMaxTxnOps(t *testing.T) {
	e := testutil.StartEtcdWithLimits(t, 0, store.MinMaxTxnOps)
	s := store.New(e.Client, "/t/")
	if err := s.SetTxnLimits(store.TxnLimits{MaxTxnOps: store.MinMaxTxnOps}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	socks := connectMany(t, e.Client, s, "gw1", 60)
	if added, _, err := s.AddToRooms(ctx, socks, []string{"a", "b/c"}); err != nil || added != 120 {
		t.Fatalf("add to rooms: added %d, %v", added, err)
	}
	gone := append([]store.SocketID{store.NewSocketID("gw1", socks[0].Lease)}, socks...) // one never registered
	res, err := s.Disconnect(ctx, gone, store.DisconnectNotice{Code: 4000})
	if err != nil || res.Disconnected != 60 || res.Closed[0] || !res.Closed[1] || len(res.Holders) != 1 {
		t.Fatalf("Disconnect: %+v, %v", res, err)
	}
	resp, err := e.Client.Get(ctx, "/t/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(res.Revision))
	if err != nil {
		t.Fatal(err)
	}
	notices := 0
	for _, kv := range resp.Kvs {
		switch k := string(kv.Key); {
		case strings.HasPrefix(k, "/t/gwm/gw1/!disconnect/"):
			notices++
		case k != "/t/gateways/gw1":
			t.Errorf("key %q left after Disconnect", kv.Key)
		}
	}
	if notices != 60 {
		t.Fatalf("%d notices, want 60", notices)
	}
	// The gateway's removal of the closed sockets takes the notices.
	if n, err := s.RemoveSockets(ctx, socks); err != nil || n != 60 {
		t.Fatalf("RemoveSockets: %d %v", n, err)
	}
	if resp, _ := e.Client.Get(ctx, "/t/gwm/", clientv3.WithPrefix(), clientv3.WithCountOnly()); resp.Count != 0 {
		t.Fatalf("%d gwm keys left", resp.Count)
	}
}

// A Disconnect retried after one that committed its first transaction and
// no more (the membership-server died, or the answer was lost and the
// transaction retried) reports the socket already gone, and still returns
// with none of its memberships left, as DisconnectResponse.revision says.
func TestDisconnectRetriedAfterItsFirstStepRemovesTheMemberships(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	sock := connectUser(t, s, "gw1", grant(t, e.Client, 60), "alice")
	for _, room := range []string{"a", "b/c"} {
		if _, err := s.Join(ctx, []store.SocketID{sock}, room); err != nil {
			t.Fatal(err)
		}
	}
	n := store.DisconnectNotice{Code: 4000}
	if err := s.DisconnectCommitOnly(ctx, []store.SocketID{sock}, n); err != nil {
		t.Fatal(err)
	}
	res, err := s.Disconnect(ctx, []store.SocketID{sock}, n)
	if err != nil || res.Disconnected != 0 || len(res.Closed) != 1 || res.Closed[0] {
		t.Fatalf("retry: %+v %v; want the socket reported already gone", res, err)
	}
	resp, err := e.Client.Get(ctx, "/t/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(res.Revision))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if strings.Contains(k, sock.String()) && !strings.Contains(k, "/!disconnect/") {
			t.Errorf("%s left at revision %d", k, res.Revision)
		}
	}
}
