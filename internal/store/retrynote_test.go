package store_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// lossyKV commits every transaction, but while lose is above zero it drops
// the answer and reports the connection lost instead: the outcome a caller
// sees when the etcd member it talks to dies after proposing.
type lossyKV struct {
	etcdserverpb.KVClient
	lose atomic.Int32
}

func (k *lossyKV) Txn(ctx context.Context, in *etcdserverpb.TxnRequest, opts ...grpc.CallOption) (*etcdserverpb.TxnResponse, error) {
	resp, err := k.KVClient.Txn(ctx, in, opts...)
	if err == nil && k.lose.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "connection lost after the proposal")
	}
	return resp, err
}

// A Join or Leave whose first attempt committed but whose answer was lost is
// sent again, succeeds, and carries the retry note (JoinResponse.retried);
// its answer then describes the state the first attempt left. A call that
// lost no attempt carries no note. Both the coalesced and the
// one-transaction-per-call paths are covered.
func TestRetryNoteAfterALostAnswer(t *testing.T) {
	cl := testutil.StartCluster(t, 1)
	cli := testutil.NewClient(t, cl.Endpoints()...)
	for _, tc := range []struct {
		name       string
		committers int
	}{{"coalesced", 2}, {"unbatched", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			s := store.New(cli, "/"+tc.name+"/")
			kv := &lossyKV{}
			s.WrapKV(func(inner etcdserverpb.KVClient) etcdserverpb.KVClient {
				kv.KVClient = inner
				return kv
			})
			if tc.committers > 0 {
				defer s.StartBatching(tc.committers)()
			}
			socks := connectLeaderLoss(t, cli, s, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			call := func(join bool) (store.ChangeResult, bool) {
				t.Helper()
				cctx, note := store.WithRetryNote(ctx)
				var res store.ChangeResult
				var err error
				if join {
					res, err = s.Join(cctx, socks, "lobby")
				} else {
					res, err = s.Leave(cctx, socks, "lobby")
				}
				if err != nil {
					t.Fatalf("join=%v: %v", join, err)
				}
				return res, note.Load()
			}

			if _, retried := call(true); retried {
				t.Fatal("a Join that lost no attempt is noted as retried")
			}
			kv.lose.Store(1)
			res, retried := call(false)
			if !retried {
				t.Fatal("a Leave sent again after its answer was lost is not noted as retried")
			}
			if kv.lose.Load() >= 0 {
				t.Fatal("the lossy client lost no answer: the test did not exercise a retry")
			}
			t.Logf("retried Leave: %+v", res)
			info, _, err := s.GetSocket(ctx, socks[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Rooms) != 0 {
				t.Fatalf("after the retried Leave the socket is still in %v", info.Rooms)
			}
			kv.lose.Store(1)
			if _, retried := call(true); !retried {
				t.Fatal("a Join sent again after its answer was lost is not noted as retried")
			}
			info, _, err = s.GetSocket(ctx, socks[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Rooms) != 1 || info.Rooms[0] != "lobby" {
				t.Fatalf("after the retried Join the socket is in %v, want [lobby]", info.Rooms)
			}
		})
	}
}
