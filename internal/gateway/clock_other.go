//go:build !linux

package gateway

import "time"

var monoBase = time.Now()

// monoNow reads the monotonic clock in nanoseconds. It keeps running while the
// process is frozen; on Linux the gateway uses CLOCK_BOOTTIME, which also
// counts machine suspension.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// monoNowFast is monoNow, which makes no system call here.
func monoNowFast() int64 { return monoNow() }
