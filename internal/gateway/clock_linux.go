package gateway

import "golang.org/x/sys/unix"

// monoNow reads CLOCK_BOOTTIME in nanoseconds. Unlike CLOCK_MONOTONIC (what
// time.Since uses) it keeps counting while the machine is suspended, so a
// gateway whose host slept past its lease TTL sees the lease as expired on
// waking, as it does after SIGSTOP.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic("CLOCK_BOOTTIME unavailable: " + err.Error())
	}
	return ts.Nano()
}
