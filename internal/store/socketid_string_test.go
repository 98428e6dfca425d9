package store_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
)

// A socket id's string is "{gateway}.{lease as %016x}.{nonce}" for every
// lease, built in one allocation: a Join or Leave encodes each id several
// times.
func TestSocketIDStringInOneAllocation(t *testing.T) {
	leases := []int64{0, 1, 0xf, 0x10, 0x694d9a1c2b3e4f50, math.MaxInt64, -1, math.MinInt64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		leases = append(leases, r.Int64()>>r.IntN(63))
	}
	for _, l := range leases {
		id := store.NewSocketID("gw-1", clientv3.LeaseID(l))
		want := id.Gateway + "." + fmt.Sprintf("%016x", l) + "." + id.Nonce
		if got := id.String(); got != want {
			t.Fatalf("lease %d: %q; want %q", l, got, want)
		}
		back, err := store.ParseSocketID(id.String())
		if l > 0 && (err != nil || back != id) {
			t.Fatalf("lease %d: ParseSocketID(%q) = %+v, %v", l, id.String(), back, err)
		}
	}
	id := store.NewSocketID("gw-1", 0x694d9a1c2b3e4f50)
	if n := testing.AllocsPerRun(100, func() { _ = id.String() }); n > 1 {
		t.Errorf("%.0f allocations per SocketID.String; want 1", n)
	}
}
