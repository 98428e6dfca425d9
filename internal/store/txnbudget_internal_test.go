package store

import (
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// The sockets per call are the API's ceilings at etcd's default (and above),
// and shrink with a smaller --max-txn-ops, always leaving a lone call room
// for the coalescing level above it.
func TestSocketsPerCallFollowMaxTxnOps(t *testing.T) {
	for _, c := range []struct{ ops, change, limited int }{
		{128, 100, 60}, {64, 50, 30}, {16, 12, 6}, {1024, 100, 60},
	} {
		b := newTxnBudget(TxnLimits{MaxTxnOps: c.ops})
		if got := b.socketsPerChange(); got != c.change {
			t.Errorf("ops %d: %d sockets per change, want %d", c.ops, got, c.change)
		}
		if got := b.socketsPerLimitedJoin(); got != c.limited {
			t.Errorf("ops %d: %d sockets per limited join, want %d", c.ops, got, c.limited)
		}
		if c.change+3 > c.ops || 2*c.limited+3 > c.ops {
			t.Errorf("ops %d: a lone call would not fit", c.ops)
		}
	}
}

// The shape's bytes are exactly the encoded size of the transaction built,
// and its operation count is what etcd's checkTxnRequest needs.
func TestTxnShapeMatchesEncoding(t *testing.T) {
	s := &Store{k: keys{prefix: "/t/"}, budget: newTxnBudget(TxnLimits{})}
	sock := NewSocketID("gw", clientv3.LeaseID(7))
	var calls []*etcdserverpb.RequestOp
	var shape txnShape
	for i, room := range []string{"a", strings.Repeat("r/", 128), strings.Repeat("x", 256)} {
		call := &etcdserverpb.TxnRequest{}
		for j := 0; j <= i*40; j++ {
			call.Compare = append(call.Compare, s.guard(sock, originState(sock))...)
			call.Success = append(call.Success, s.pbMembershipOp(sock, originState(sock), room, true))
		}
		need, size, err := s.budget.nestedCost(call)
		if err != nil {
			t.Fatal(err)
		}
		if need != len(call.Compare)+2 {
			t.Errorf("call %d needs %d operations, want %d", i, need, len(call.Compare)+2)
		}
		shape = shape.withOp(need, size)
		calls = append(calls, &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestTxn{RequestTxn: call}})
	}
	if got := proto.Size(&etcdserverpb.TxnRequest{Success: calls}); got != shape.bytes {
		t.Errorf("batch encodes in %d bytes, shape says %d", got, shape.bytes)
	}
	if want := len(calls) + 81 + 2; shape.need() != want {
		t.Errorf("batch needs %d operations, want %d", shape.need(), want)
	}
	cmps := []*etcdserverpb.Compare{pbExists([]byte("k")), roomsUnchangedSince(s.k.socketRoomsPrefix(sock.Gateway, sock), 1<<40)}
	base := guardShape(cmps, nil)
	if got := proto.Size(&etcdserverpb.TxnRequest{Compare: cmps}); got != base.bytes {
		t.Errorf("guard encodes in %d bytes, shape says %d", got, base.bytes)
	}
}
