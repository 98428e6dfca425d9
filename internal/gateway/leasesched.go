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

// shardTTLExtra is how much longer than Config.LeaseTTL each lease is granted
// when there are several (Config.LeaseShards > 1), and how much longer than a
// third of the TTL each waits between renewals. The two cancel out: the
// shard renewed longest ago still has TTL - TTL/3 left, so the etcd outage a
// session outlives is the same as with one lease (2/3 of the TTL less
// leaseMargin: 6.2 s at 10 s). The spread of the deadlines after a crash
// (the renewal period) and that outage add up to the granted TTL less
// leaseMargin, so granting more is the one way to widen the spread without
// shortening the outage. What the extra buys: after a crash the shards'
// deadlines lie over TTL/3 + shardTTLExtra (4.33 s instead of 3.33 s at
// 10 s, 8 or 9 of etcd's 500 ms lessor passes instead of 6 or 7), so fewer
// keys are revoked per pass (2 of 16 shards at most instead of 3) and other
// writes pause less (BENCHMARKS.md section 5). What it costs: a crashed
// gateway's sockets and memberships go up to shardTTLExtra later (within
// TTL + shardTTLExtra and one lessor pass: 11.5 s at 10 s). One second
// because etcd grants whole seconds; more would widen the spread further at
// the same price per second.
const shardTTLExtra = time.Second

// leaseSchedule gives, for n leases of the configured TTL ttl
// (Config.LeaseTTL), the TTL each is granted (whole seconds, as etcd grants
// them) and the period each is renewed at. One lease: granted ttl, renewed
// every ttl/3. Several: granted ttl + shardTTLExtra, renewed every
// ttl/3 + shardTTLExtra. Either way a lease renewed one period ago has
// ttl - ttl/3 left (the floor of the outage a session outlives), and with
// several the deadlines after a crash lie spread over the whole period
// (firstRenewals).
//
// The session's proof of life uses the TTL etcd answers with (session.renewed),
// not this one.
func leaseSchedule(ttl time.Duration, n int) (granted, period time.Duration) {
	granted, period = ttl.Truncate(time.Second), ttl/3
	if n > 1 {
		granted += shardTTLExtra
		period += shardTTLExtra
	}
	return granted, period
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
