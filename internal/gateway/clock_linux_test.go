package gateway

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// boottime reads CLOCK_BOOTTIME without taking a base for monoNowFast.
func boottime(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano()
}

// monoNowFast is never behind CLOCK_BOOTTIME: a reading is at least the
// BOOTTIME read before it.
func TestMonoNowFastNeverBehindBoottime(t *testing.T) {
	monoNow()
	for range 100_000 {
		before := boottime(t)
		fast := monoNowFast()
		after := boottime(t)
		if fast < before {
			t.Fatalf("monoNowFast read %d, %d ns behind CLOCK_BOOTTIME read before it", fast, before-fast)
		}
		if fast > after+int64(time.Second) {
			t.Fatalf("monoNowFast read %d, %v ahead of CLOCK_BOOTTIME read after it", fast, time.Duration(fast-after))
		}
	}
}

// A suspension of the machine since the base (the base's BOOTTIME and wall
// clock behind by the time slept, the monotonic clock not) and a wall clock
// set since both send monoNowFast to CLOCK_BOOTTIME: a lease whose proof
// ran out while the machine slept is not taken for alive, as the monotonic
// clock alone would take it.
func TestMonoNowFastSeesSuspension(t *testing.T) {
	monoNow()
	b := *bootBase.Load()
	slept := int64(time.Hour)
	cases := []struct {
		name string
		base clockBase
	}{
		{"suspended an hour", clockBase{boot: b.boot - slept, wall: b.wall - slept, mono: b.mono}},
		{"wall clock set back an hour", clockBase{boot: b.boot, wall: b.wall + slept, mono: b.mono}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSession(context.Background(), []clientv3.LeaseID{1})
			defer s.cancel()
			base := tc.base
			bootBase.Store(&base)
			now := boottime(t)
			// The proof ran out half an hour ago (by BOOTTIME); on the
			// base's BOOTTIME plus the monotonic time since, the
			// suspended case would still have half an hour to go.
			s.aliveUntil.Store(now - slept/2)
			if s.alive() {
				t.Fatal("lease taken for alive after its proof ran out")
			}
			bootBase.Store(&base)
			if fast := monoNowFast(); fast < now {
				t.Fatalf("monoNowFast read %d, %v behind CLOCK_BOOTTIME", fast, time.Duration(now-fast))
			}
			if got := bootBase.Load(); *got == base {
				t.Fatal("the base was not taken again from CLOCK_BOOTTIME")
			}
		})
	}
}
