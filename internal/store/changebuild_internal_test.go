package store

import (
	"slices"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// changeBuildCases are the transactions a one-socket Join and Leave send
// when the socket lives at its origin (the fast path), batched.
func changeBuildCases() (s *Store, sockets []SocketID, states []socketState) {
	s = &Store{k: keys{prefix: DefaultPrefix}, budget: newTxnBudget(TxnLimits{})}
	sockets = []SocketID{NewSocketID("gateway-1", 0x694d7c3a1b2f0e11)}
	states = []socketState{originState(sockets[0])}
	return s, sockets, states
}

// BenchmarkBuildChange measures what building one attempt of a one-socket
// Join or Leave costs the membership-server, etcd left out: the guard, the
// writes, the failure branch's reads and the batch keys.
func BenchmarkBuildChange(b *testing.B) {
	s, sockets, states := changeBuildCases()
	for _, join := range []bool{true, false} {
		name := "leave"
		if join {
			name = "join"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.buildChange(sockets, states, "room-42", join, nil, true)
			}
		})
	}
}

// TestBuildChangeAllocs keeps the number of allocations per change down:
// each one is work for the collector, and each collection shrinks the
// stacks of the gRPC stream workers, which grow again on the next call
// (BENCHMARKS.md, section 15).
func TestBuildChangeAllocs(t *testing.T) {
	s, sockets, states := changeBuildCases()
	for _, join := range []bool{true, false} {
		n := testing.AllocsPerRun(100, func() { s.buildChange(sockets, states, "room-42", join, nil, true) })
		if n > maxBuildChangeAllocs {
			t.Errorf("join=%v: %v allocations to build a one-socket change, want at most %d", join, n, maxBuildChangeAllocs)
		}
	}
}

// maxBuildChangeAllocs is 7 (a one-socket change's messages share one
// allocation, each key is built once) and some slack; the nested shape
// (a membership transaction under the guard) took 14, and building every
// message and key on its own 47.
const maxBuildChangeAllocs = 9

// txnDepth is how many transaction levels req has: 1 when none is nested.
func txnDepth(req *etcdserverpb.TxnRequest) int {
	below := 0
	for _, ops := range [][]*etcdserverpb.RequestOp{req.Success, req.Failure} {
		for _, op := range ops {
			if t := op.GetRequestTxn(); t != nil {
				below = max(below, txnDepth(t))
			}
		}
	}
	return 1 + below
}

// opKeys names the operations of ops: "put KEY", "delete KEY", "range KEY"
// or "count KEY".
func opKeys(ops []*etcdserverpb.RequestOp) []string {
	var out []string
	for _, op := range ops {
		switch {
		case op.GetRequestPut() != nil:
			out = append(out, "put "+string(op.GetRequestPut().Key))
		case op.GetRequestDeleteRange() != nil:
			out = append(out, "delete "+string(op.GetRequestDeleteRange().Key))
		case op.GetRequestRange() != nil && op.GetRequestRange().CountOnly:
			out = append(out, "count "+string(op.GetRequestRange().Key))
		case op.GetRequestRange() != nil:
			out = append(out, "range "+string(op.GetRequestRange().Key))
		default:
			out = append(out, "txn")
		}
	}
	return out
}

// A one-socket Join or Leave without extra compares is one transaction
// level, the membership's writes right under the socket's guard, at its
// origin and while it moves; calls on several sockets, or with extra
// compares, keep a membership transaction per socket.
func TestBuildChangeFlat(t *testing.T) {
	s, sockets, states := changeBuildCases()
	sock := sockets[0]
	id := sock.String()
	to := Home{Gateway: "gateway-2", Lease: 0x5eed}
	moving := originState(sock)
	moving.recRev, moving.move, moving.moveRev = 7, &moveRecord{From: sock.Origin(), To: to}, 9
	rec, room := DefaultPrefix+"sockets/"+id, DefaultPrefix+"rooms/room-42/"+id
	gwmAt := func(gw string) string { return DefaultPrefix + "gwm/" + gw + "/" + id + "/room-42" }
	for _, tc := range []struct {
		name             string
		st               socketState
		join             bool
		compares         int
		success, failure []string
	}{
		{"join", states[0], true, 2, []string{"put " + gwmAt("gateway-1"), "put " + room}, []string{"range " + rec, "count " + room}},
		{"leave", states[0], false, 1, []string{"delete " + gwmAt("gateway-1"), "delete " + room}, []string{"range " + rec}},
		{"join moving", moving, true, 3, []string{"put " + gwmAt("gateway-2"), "put " + room}, []string{"range " + rec, "count " + room}},
		{"leave moving", moving, false, 2, []string{"delete " + gwmAt("gateway-1"), "delete " + gwmAt("gateway-2"), "delete " + room}, []string{"range " + rec}},
	} {
		call, keys := s.buildChange(sockets, []socketState{tc.st}, "room-42", tc.join, nil, true)
		if d := txnDepth(call); d != 1 {
			t.Errorf("%s: %d transaction levels, want 1", tc.name, d)
			continue
		}
		if len(call.Compare) != tc.compares || !slices.Equal(opKeys(call.Success), tc.success) || !slices.Equal(opKeys(call.Failure), tc.failure) {
			t.Errorf("%s: %d compares, success %q, failure %q; want %d, %q, %q",
				tc.name, len(call.Compare), opKeys(call.Success), opKeys(call.Failure), tc.compares, tc.success, tc.failure)
		}
		if tc.join {
			c := call.Compare[len(call.Compare)-1]
			if string(c.Key) != room || c.Target != etcdserverpb.Compare_CREATE || c.Result != etcdserverpb.Compare_EQUAL || c.GetCreateRevision() != 0 {
				t.Errorf("%s: last compare %v, want the room key's create revision == 0", tc.name, c)
			}
		}
		if !slices.Equal(keys, []string{room}) {
			t.Errorf("%s: batch keys %q, want the room key", tc.name, keys)
		}
		// What the batch budgets for it (txnbudget.go): its longest list.
		if need, want := txnNeed(call), max(tc.compares, len(tc.success), len(tc.failure)); need != want {
			t.Errorf("%s: txnNeed %d, want %d", tc.name, need, want)
		}
	}
	two := []SocketID{sock, NewSocketID("gateway-1", 0x694d7c3a1b2f0e12)}
	for _, join := range []bool{true, false} {
		call, _ := s.buildChange(two, []socketState{originState(two[0]), originState(two[1])}, "room-42", join, nil, false)
		if d := txnDepth(call); d != 2 {
			t.Errorf("join=%v, two sockets: %d transaction levels, want 2", join, d)
		}
	}
	extra := []*etcdserverpb.Compare{pbExists([]byte(rec))}
	if call, _ := s.buildChange(sockets, states, "room-42", true, extra, false); txnDepth(call) != 2 {
		t.Errorf("join with extra compares: %d transaction levels, want 2", txnDepth(call))
	}
}
