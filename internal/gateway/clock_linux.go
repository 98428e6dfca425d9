package gateway

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// monoNow reads CLOCK_BOOTTIME in nanoseconds. Unlike CLOCK_MONOTONIC (what
// time.Since uses) it keeps counting while the machine is suspended, so a
// gateway whose host slept past its lease TTL sees the lease as expired on
// waking, as it does after SIGSTOP. It is a system call (the vDSO the
// runtime reads clocks through does not serve CLOCK_BOOTTIME); every
// reading also becomes the base of monoNowFast.
func monoNow() int64 {
	at := time.Now() // before the BOOTTIME reading: the base errs late, not early
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic("CLOCK_BOOTTIME unavailable: " + err.Error())
	}
	boot := ts.Nano()
	bootBase.Store(&clockBase{boot: boot, wall: at.UnixNano(), mono: at.Sub(monoEpoch)})
	return boot
}

// clockBase ties CLOCK_BOOTTIME to the clocks time.Now reads without a
// system call: boot was read just after the wall clock read wall and the
// monotonic clock mono (since monoEpoch).
type clockBase struct {
	boot int64
	wall int64
	mono time.Duration
}

var (
	bootBase  atomic.Pointer[clockBase]
	monoEpoch = time.Now()
)

// clockSlack is how far the wall clock may move apart from the monotonic
// clock since the base before monoNowFast reads CLOCK_BOOTTIME itself;
// monoNowFast's readings are 2*clockSlack ahead, so a lease is given up at
// most that much (against leaseMargin, 500 ms) early.
const clockSlack = int64(time.Millisecond)

// monoNowFast is monoNow (never behind it) without a system call while the
// machine has not been suspended since the base: the base's BOOTTIME plus
// the monotonic time since. A suspension stops the monotonic clock but not
// the wall clock (the kernel adds the time slept to both CLOCK_REALTIME and
// CLOCK_BOOTTIME on resume), so it shows as the wall clock running ahead of
// the monotonic one by the time slept; NTP's rate corrections move both
// alike. Any such gap past clockSlack either way (a suspension, or the wall
// clock set) sends the reading to CLOCK_BOOTTIME, which takes a new base. A
// suspension could hide only behind a wall clock set back by the same time
// to within clockSlack, or between time.Now's two clock reads, where it is
// no different from one just after any reading. The lease proof (alive) is
// read this way before each batch a writer sends.
func monoNowFast() int64 {
	if b := bootBase.Load(); b != nil {
		now := time.Now()
		mono := now.Sub(monoEpoch) - b.mono
		drift := now.UnixNano() - b.wall - int64(mono)
		if drift >= -clockSlack && drift <= clockSlack {
			return b.boot + int64(mono) + 2*clockSlack
		}
	}
	return monoNow()
}
