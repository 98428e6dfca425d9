package gateway

import "time"

// Lease shard renewal schedule.
//
// etcd's lessor looks for expired leases every 500 ms and revokes each as one
// raft entry that deletes every key on the lease in one backend transaction;
// the leases found in one pass are proposed together, so their entries apply
// back to back and every other write waits behind all of them. Shards renewed
// together expire together after a crash and make one long pause, however
// many there are. So each shard is renewed at its own slot, evenly spaced over
// the renewal period: their deadlines, and so their revocations after a crash,
// are spread over that period, a few shards (and a fraction of the keys) per
// lessor pass.

// renewalPeriod is how often each lease shard of TTL ttl is renewed:
// every third of the TTL, however many there are. The shard renewed longest
// ago still has 2/3 of the TTL left, so the session outlives an etcd outage
// of 2/3 of the TTL less leaseMargin (6.2 s at the default 10 s) whatever
// the number of shards, and after a crash the shards' deadlines lie spread
// over the last third of the TTL (6 or 7 lessor passes at 10 s). The spread
// and the outage a session outlives add up to the TTL less leaseMargin: a
// wider spread costs tolerance, unless the TTL grows. Renewed every half TTL
// (as several shards were before) the spread was 5 s and the tolerance 4.5 s;
// in the crash benchmark under heavy load such sessions were lost more often
// (BENCHMARKS.md section 5).
func renewalPeriod(ttl time.Duration) time.Duration {
	return ttl / 3
}

// firstRenewals gives, for a session whose n leases were granted at start (a
// monoNow value), the instant of each lease's first renewal: lease i at
// start + (i+1)·period/n. Lease n-1 is renewed one period after the grant,
// like a single lease; after that each keeps its slot, one period apart, so
// the deadlines stay period/n apart.
func firstRenewals(start int64, n int, period time.Duration) []int64 {
	due := make([]int64, n)
	for i := range due {
		due[i] = start + int64(period)*int64(i+1)/int64(n)
	}
	return due
}

// nextSlot is the first instant after now of the slot series slot + k·period.
func nextSlot(slot, now int64, period time.Duration) int64 {
	if slot > now {
		return slot
	}
	return slot + (1+(now-slot)/int64(period))*int64(period)
}
