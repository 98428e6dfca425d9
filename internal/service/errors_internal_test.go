package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/socketrooms/membership/internal/store"
)

// Which errors the mapper tells callers to retry (UNAVAILABLE), and which
// not. The errors are the values etcd's client returns, wrapped as the store
// wraps them.
func TestToStatusRetryOnlyWhatEtcdCannotAnswerNow(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	wrap := func(err error) error { return fmt.Errorf("list members: %w", err) }
	for _, c := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{rpctypes.ErrNoLeader, codes.Unavailable, ReasonEtcdUnavailable},
		{rpctypes.ErrLeaderChanged, codes.Unavailable, ReasonEtcdUnavailable},
		{rpctypes.ErrTimeout, codes.Unavailable, ReasonEtcdUnavailable},
		{rpctypes.ErrTimeoutDueToConnectionLost, codes.Unavailable, ReasonEtcdUnavailable},
		{rpctypes.ErrNotCapable, codes.Unavailable, ReasonEtcdUnavailable},
		{rpctypes.ErrStopped, codes.Unavailable, ReasonEtcdUnavailable},
		{rpctypes.ErrNoSpace, codes.Unavailable, ReasonEtcdUnavailable},
		{clientv3.ErrNoAvailableEndpoints, codes.Unavailable, ReasonEtcdUnavailable},
		{status.Error(codes.Unavailable, "connection error: connection refused"), codes.Unavailable, ReasonEtcdUnavailable},
		{rpctypes.ErrCompacted, codes.Aborted, ReasonRevisionCompacted},
		{store.ErrShuttingDown, codes.Unavailable, ReasonShuttingDown},
		{fmt.Errorf("%w: socket record at key %q: bad", store.ErrCorruptRecord, "/k"), codes.Internal, ReasonCorruptRecord},
		{rpctypes.ErrFutureRev, codes.Internal, ReasonInternal},
		{errors.New("something else"), codes.Internal, ReasonInternal},
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max"), codes.Internal, ReasonInternal},
		{&applyError{revision: 7, err: fmt.Errorf("%w: gateway record at key %q: bad", store.ErrCorruptRecord, "/g")}, codes.Internal, ReasonCorruptRecord},
		{&applyError{revision: 7, err: errors.New("connection refused")}, codes.Unavailable, ReasonGatewayUnavailable},
	} {
		st := status.Convert(toStatus(context.Background(), log, wrap(c.err)))
		reason := ""
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				reason = info.Reason
			}
		}
		if st.Code() != c.code || reason != c.reason {
			t.Errorf("%v: %v/%s, want %v/%s", c.err, st.Code(), reason, c.code, c.reason)
		}
	}
}
