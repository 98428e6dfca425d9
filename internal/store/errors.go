package store

import (
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrCorruptRecord reports a key or value in the keyspace that does not
// decode as this package writes it: a socket or gateway record that is not
// its JSON, a room key segment with a bad escape. Something other than this
// service wrote there; retrying reads the same bytes. The error's text names
// the key, for logs; it is not meant for callers.
var ErrCorruptRecord = errors.New("corrupt record")

// ErrShuttingDown reports a call made while the Store is stopping (after
// StartBatching's stop), or carried by a transaction that stop cancelled
// (its outcome unknown): another replica can serve it.
var ErrShuttingDown = errors.New("membership store is shutting down")

// corrupt wraps a decoding failure of the value at key.
func corrupt(what string, key []byte, err error) error {
	return fmt.Errorf("%w: %s at key %q: %v", ErrCorruptRecord, what, key, err)
}

// etcdRetryErrors are etcd's errors that say it cannot answer now but will:
// no leader or a leader change, a request that timed out in raft, a stopped
// or unhealthy member, a cluster mid-upgrade (not capable), too many
// requests, and a full database (writes resume once it is compacted and
// defragmented).
var etcdRetryErrors = []error{
	rpctypes.ErrNoLeader, rpctypes.ErrNotLeader, rpctypes.ErrLeaderChanged,
	rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
	rpctypes.ErrTimeoutWaitAppliedIndex, rpctypes.ErrStopped, rpctypes.ErrUnhealthy,
	rpctypes.ErrNotCapable, rpctypes.ErrTooManyRequests, rpctypes.ErrNoSpace,
}

// EtcdUnavailable tells whether err says etcd cannot be reached or cannot
// answer now: one of etcdRetryErrors, another etcd error with code
// UNAVAILABLE or DEADLINE_EXCEEDED, a gRPC transport error of the etcd
// connection (UNAVAILABLE: refused, reset, no endpoint), or the client
// finding no endpoint. Such a failure is worth retrying; any other etcd error
// (a refused request: too many operations, too large, permission denied)
// fails alike every time. The API maps it to UNAVAILABLE/ETCD_UNAVAILABLE,
// and a gateway retries a socket's removal on it.
func EtcdUnavailable(err error) bool {
	for _, e := range etcdRetryErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	if errors.Is(err, clientv3.ErrNoAvailableEndpoints) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		c := se.GRPCStatus().Code()
		return c == codes.Unavailable || c == codes.DeadlineExceeded
	}
	return false
}
