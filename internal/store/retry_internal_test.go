package store

import (
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// An attempt the term watch cancelled is a transaction lost with its leader:
// retried while the deadline allows, and reported to callers as etcd's
// "leader changed" (UNAVAILABLE, retry), never as an unknown error.
func TestTermRoseIsLeaderChanged(t *testing.T) {
	if !errors.Is(errTermRose, rpctypes.ErrLeaderChanged) {
		t.Fatalf("%v does not match rpctypes.ErrLeaderChanged", errTermRose)
	}
	if !retryable(errTermRose) {
		t.Fatalf("%v is not retried", errTermRose)
	}
}
