package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// heldKV holds the first transaction sent through it until release is
// closed, as a slow etcd commit would, and counts the transactions sent.
type heldKV struct {
	etcdserverpb.KVClient
	sent    atomic.Int64
	held    chan struct{} // closed once the first transaction is held
	release chan struct{}
}

func (h *heldKV) Txn(ctx context.Context, in *etcdserverpb.TxnRequest, opts ...grpc.CallOption) (*etcdserverpb.TxnResponse, error) {
	if h.sent.Add(1) == 1 {
		close(h.held)
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.KVClient.Txn(ctx, in, opts...)
}

// While a transaction is in flight, a few calls wait for it and then share
// one transaction, rather than each starting a transaction of its own (which
// made batches small under load); a backlog of ExtraCommitterBatch calls (64
// at etcd's default --max-txn-ops) does start another committer at once. Each call still returns its own result
// once its change is committed.
func TestBatchStartsAnotherCommitterOnlyForABacklog(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backlog bool // ExtraCommitterBatch calls made while the first transaction is held, else 3
	}{
		{"few wait for the transaction in flight", false},
		{"a backlog gets a committer of its own", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testutil.StartEtcd(t)
			s := store.New(e.Client, "/t/")
			sock := connect(t, e.Client, s, "gw1")
			kv := &heldKV{held: make(chan struct{}), release: make(chan struct{})}
			s.WrapKV(func(inner etcdserverpb.KVClient) etcdserverpb.KVClient {
				kv.KVClient = inner
				return kv
			})
			defer s.StartBatching(4)()
			waiting := 3
			if tc.backlog {
				waiting = s.ExtraCommitterBatch()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			var wg sync.WaitGroup
			join := func(room string) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, err := s.Join(ctx, []store.SocketID{sock}, room)
					if err != nil {
						t.Errorf("join %s: %v", room, err)
						return
					}
					if res.WasMember[0] || res.Revision == 0 {
						t.Errorf("join %s: %+v; want a new membership at a revision", room, res)
					}
				}()
			}
			join("first")
			select {
			case <-kv.held:
			case <-ctx.Done():
				t.Fatal("the first Join sent no transaction")
			}
			for i := range waiting {
				join(fmt.Sprintf("r%d", i))
			}
			if !tc.backlog {
				// They wait for the transaction in flight.
				for s.PendingCalls() < waiting {
					if ctx.Err() != nil || kv.sent.Load() > 1 {
						t.Fatalf("%d transactions sent, %d calls waiting, while the first was in flight; want 1 and %d",
							kv.sent.Load(), s.PendingCalls(), waiting)
					}
					time.Sleep(time.Millisecond)
				}
			} else {
				// Another committer takes them while the first is held.
				for kv.sent.Load() < 2 {
					if ctx.Err() != nil {
						t.Fatalf("no second transaction for %d waiting calls while the first was in flight", waiting)
					}
					time.Sleep(time.Millisecond)
				}
			}
			close(kv.release)
			wg.Wait()
			if txns, calls := s.BatchStats(); txns != 2 || calls != int64(waiting)+1 {
				t.Errorf("%d transactions carried %d calls; want %d carrying %d", txns, calls, 2, waiting+1)
			}
			info, _, err := s.GetSocket(ctx, sock)
			if err != nil {
				t.Fatal(err)
			}
			if len(info.Rooms) != waiting+1 {
				t.Errorf("socket in %d rooms; want %d", len(info.Rooms), waiting+1)
			}
		})
	}
}

// electionKV answers the first failFirst transactions for room "first" with
// UNAVAILABLE (as during an etcd election) without sending them, and records
// the room of every transaction sent through it.
type electionKV struct {
	etcdserverpb.KVClient
	failFirst int
	mu        sync.Mutex
	sent      []string // "first" or "second", in order
}

func (k *electionKV) Txn(ctx context.Context, in *etcdserverpb.TxnRequest, opts ...grpc.CallOption) (*etcdserverpb.TxnResponse, error) {
	room := "first"
	// The call's nested transaction (one socket's: flat), whose last
	// compare is the room key's.
	call := in.Success[0].GetRequestTxn()
	if strings.Contains(string(call.Compare[len(call.Compare)-1].Key), "/second/") {
		room = "second"
	}
	k.mu.Lock()
	k.sent = append(k.sent, room)
	fail := room == "first" && len(k.sent) <= k.failFirst
	k.mu.Unlock()
	if fail {
		return nil, status.Error(codes.Unavailable, "etcdserver: leader changed")
	}
	return k.KVClient.Txn(ctx, in, opts...)
}

func (k *electionKV) order() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.sent)
}

// A call made while the only committer pauses before a retry (an etcd
// election) is sent at once by a committer of its own, not held until that
// committer's retries end: waiting for a transaction in flight is for a
// transaction that is in flight.
func TestBatchCallIsNotHeldBehindARetryPause(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	sock := connect(t, e.Client, s, "gw1")
	// From the fourth retry on, pauses are 80 ms or more (retry.go).
	kv := &electionKV{failFirst: 6}
	s.WrapKV(func(inner etcdserverpb.KVClient) etcdserverpb.KVClient {
		kv.KVClient = inner
		return kv
	})
	defer s.StartBatching(4)()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	first := make(chan error, 1)
	go func() {
		_, err := s.Join(ctx, []store.SocketID{sock}, "first")
		first <- err
	}()
	for len(kv.order()) < 4 || s.PausedCommitters() == 0 {
		if len(kv.order()) > kv.failFirst || ctx.Err() != nil {
			t.Fatalf("no pause seen before a retry; sent %v", kv.order())
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Join(ctx, []store.SocketID{sock}, "second"); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	order := kv.order()
	i := slices.Index(order, "second")
	if i < 0 || !slices.Contains(order[i+1:], "first") {
		t.Errorf("transactions sent %v: the second Join waited for the first's retries to end", order)
	}
}
