package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// depthKV passes transactions to etcd and records how many levels each had.
type depthKV struct {
	etcdserverpb.KVClient
	mu     sync.Mutex
	depths []int
}

func (k *depthKV) Txn(ctx context.Context, in *etcdserverpb.TxnRequest, opts ...grpc.CallOption) (*etcdserverpb.TxnResponse, error) {
	k.mu.Lock()
	k.depths = append(k.depths, depthOf(in))
	k.mu.Unlock()
	return k.KVClient.Txn(ctx, in, opts...)
}

func depthOf(req *etcdserverpb.TxnRequest) int {
	below := 0
	for _, op := range append(append([]*etcdserverpb.RequestOp{}, req.Success...), req.Failure...) {
		if t := op.GetRequestTxn(); t != nil {
			below = max(below, depthOf(t))
		}
	}
	return 1 + below
}

// take returns the depths recorded since the last take.
func (k *depthKV) take() []int {
	k.mu.Lock()
	defer k.mu.Unlock()
	d := k.depths
	k.depths = nil
	return d
}

// One-socket Joins and Leaves, sent as flat transactions (one level), keep
// their meaning in every state of the socket: a new and an existing
// membership, a socket gone, moved, or being moved.
func TestFlatJoinLeave(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	kv := &depthKV{}
	s.WrapKV(func(c etcdserverpb.KVClient) etcdserverpb.KVClient { kv.KVClient = c; return kv })
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")

	get := func(key string) *mvccpb.KeyValue {
		t.Helper()
		resp, err := e.Client.Get(ctx, "/t/"+key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		return resp.Kvs[0]
	}
	revision := func() int64 {
		t.Helper()
		resp, err := e.Client.Get(ctx, "/t/none")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	// sent checks that the last call sent attempts transactions, each flat.
	sent := func(what string, attempts int) {
		t.Helper()
		d := kv.take()
		if len(d) != attempts {
			t.Errorf("%s: %d transactions sent (levels %v), want %d", what, len(d), d, attempts)
		}
		for _, n := range d {
			if n != 1 {
				t.Errorf("%s: a transaction of %d levels sent (all: %v), want 1", what, n, d)
			}
		}
	}
	// member checks room's two keys of sock: both under home's gateway on
	// its lease, written at rev, or neither.
	member := func(what string, sock store.SocketID, room string, home store.Home, rev int64) {
		t.Helper()
		gwm, rk := get("gwm/"+home.Gateway+"/"+sock.String()+"/"+room), get("rooms/"+room+"/"+sock.String())
		if rev == 0 {
			if gwm != nil || rk != nil {
				t.Errorf("%s: keys left: gwm/ %v, rooms/ %v", what, gwm, rk)
			}
			return
		}
		for _, kv := range []*mvccpb.KeyValue{gwm, rk} {
			if kv == nil || kv.ModRevision != rev || clientv3.LeaseID(kv.Lease) != home.Lease {
				t.Errorf("%s: key %v, want it on %s's lease %x, written at %d", what, kv, home.Gateway, home.Lease, rev)
			}
		}
	}
	// change runs a Join or Leave of sock in room and checks its answer.
	change := func(what string, join bool, sock store.SocketID, room string, wasMember bool, home store.Home) store.ChangeResult {
		t.Helper()
		before := revision()
		var res store.ChangeResult
		var err error
		if join {
			res, err = s.Join(ctx, []store.SocketID{sock}, room)
		} else {
			res, err = s.Leave(ctx, []store.SocketID{sock}, room)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.WasMember[0] != wasMember || res.Homes[0] != home {
			t.Errorf("%s: was member %v at %+v, want %v at %+v", what, res.WasMember[0], res.Homes[0], wasMember, home)
		}
		// A change that finds the membership as asked writes nothing.
		if wrote := join != wasMember; wrote != (res.Revision > before) || (!wrote && res.Revision != before) {
			t.Errorf("%s: revision %d, %d before", what, res.Revision, before)
		}
		return res
	}

	t.Run("at origin", func(t *testing.T) {
		sock := connectUser(t, s, "gwa", a.Lease, "ann")
		kv.take()
		r := change("join new", true, sock, "fun", false, a)
		sent("join new", 1)
		member("join new", sock, "fun", a, r.Revision)
		change("join existing", true, sock, "fun", true, a)
		sent("join existing", 1)
		member("join existing", sock, "fun", a, r.Revision)
		change("leave member", false, sock, "fun", true, a)
		sent("leave member", 1)
		member("leave member", sock, "fun", a, 0)
		change("leave non-member", false, sock, "fun", false, a)
		sent("leave non-member", 1)
	})

	t.Run("socket gone", func(t *testing.T) {
		sock := store.NewSocketID("gwa", a.Lease)
		kv.take()
		before := revision()
		for _, join := range []bool{true, false} {
			var err error
			if join {
				_, err = s.Join(ctx, []store.SocketID{sock}, "fun")
			} else {
				_, err = s.Leave(ctx, []store.SocketID{sock}, "fun")
			}
			var nf *store.SocketsNotFoundError
			if !errors.Is(err, store.ErrSocketNotFound) || !errors.As(err, &nf) || len(nf.IDs) != 1 || nf.IDs[0] != sock.String() {
				t.Errorf("join=%v of a socket gone: %v, want it not found", join, err)
			}
			sent(fmt.Sprintf("join=%v of a socket gone", join), 1)
		}
		if after := revision(); after != before {
			t.Errorf("revision %d after changes of a socket gone, %d before", after, before)
		}
	})

	t.Run("moved", func(t *testing.T) {
		// At gwb since a move, a member of "old" there: each change fails
		// its guard at the origin and is sent again against gwb.
		sock := store.NewSocketID("gwa", a.Lease)
		rec := fmt.Sprintf(`{"gateway":"gwb","lease":%d,"connected_at":"2026-01-01T00:00:00Z"}`, int64(b.Lease))
		put, err := e.Client.Txn(ctx).Then(
			clientv3.OpPut("/t/sockets/"+sock.String(), rec, clientv3.WithLease(b.Lease)),
			clientv3.OpPut("/t/gwm/gwb/"+sock.String()+"/old", "", clientv3.WithLease(b.Lease)),
			clientv3.OpPut("/t/rooms/old/"+sock.String(), "", clientv3.WithLease(b.Lease)),
		).Commit()
		if err != nil {
			t.Fatal(err)
		}
		kv.take()
		change("join existing", true, sock, "old", true, b)
		sent("join existing", 2)
		member("join existing", sock, "old", b, put.Header.Revision)
		r := change("join new", true, sock, "new", false, b)
		sent("join new", 2)
		member("join new", sock, "new", b, r.Revision)
		change("leave member", false, sock, "old", true, b)
		sent("leave member", 2)
		member("leave member", sock, "old", b, 0)
		change("leave non-member", false, sock, "old", false, b)
		sent("leave non-member", 2)
	})

	t.Run("moving", func(t *testing.T) {
		// Moving from gwa to gwb, a member of "stay" still at gwa: Joins
		// write at gwb, Leaves delete under both.
		sock := connectUser(t, s, "gwa", a.Lease, "bea")
		change("join before the move", true, sock, "stay", false, a)
		marker := fmt.Sprintf(`{"from":{"gateway":"gwa","lease":%d},"to":{"gateway":"gwb","lease":%d}}`, int64(a.Lease), int64(b.Lease))
		if _, err := e.Client.Put(ctx, "/t/sockets/"+sock.String()+"/move", marker, clientv3.WithLease(b.Lease)); err != nil {
			t.Fatal(err)
		}
		kv.take()
		r := change("join new", true, sock, "go", false, b)
		sent("join new", 2)
		member("join new", sock, "go", b, r.Revision)
		change("join existing", true, sock, "go", true, b)
		sent("join existing", 2)
		member("join existing", sock, "go", b, r.Revision)
		change("join existing at the origin", true, sock, "stay", true, b)
		sent("join existing at the origin", 2)
		change("leave member at the origin", false, sock, "stay", true, b)
		sent("leave member at the origin", 2)
		member("leave member at the origin", sock, "stay", a, 0)
		change("leave member at the destination", false, sock, "go", true, b)
		sent("leave member at the destination", 2)
		member("leave member at the destination", sock, "go", b, 0)
		change("leave non-member", false, sock, "go", false, b)
		sent("leave non-member", 2)
	})
}
