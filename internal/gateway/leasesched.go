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

// renewalPeriod is how often each of n lease shards of TTL ttl is renewed.
// One lease is renewed every third of its TTL. Several are renewed every half
// TTL, so that their deadlines spread over ttl/2 (10 lessor passes at the
// default 10 s): the shard renewed longest ago still has ttl/2 left, so the
// session outlives an etcd outage of ttl/2 less leaseMargin (4.5 s at 10 s,
// beyond a leader election) instead of 2/3 of the TTL.
func renewalPeriod(ttl time.Duration, n int) time.Duration {
	if n <= 1 {
		return ttl / 3
	}
	return ttl / 2
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
