package store

import "testing"

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
// failure branch's read, the membership transaction and the batch keys.
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

// maxBuildChangeAllocs is 14 (the messages of one socket's change share
// allocations, each key is built once) and some slack; building every
// message and key on its own took 47.
const maxBuildChangeAllocs = 16
