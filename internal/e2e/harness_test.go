package e2e

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// Short names for the stacktest helpers used throughout this package.

type sock = stacktest.Sock

func startMembershipServer(t *testing.T, e *testutil.Etcd) membershipv1.MembershipServiceClient {
	t.Helper()
	return stacktest.StartMembershipServer(t, e).Client
}

func startMembershipServerWith(t *testing.T, kv *clientv3.Client) membershipv1.MembershipServiceClient {
	t.Helper()
	return stacktest.StartMembershipServerWith(t, kv).Client
}

func startGateway(t *testing.T, e *testutil.Etcd, id string, ttl time.Duration) *stacktest.Gateway {
	t.Helper()
	return stacktest.StartGateway(t, e, id, ttl)
}

func startGatewayVia(t *testing.T, endpoints, id string, ttl time.Duration) *stacktest.Gateway {
	t.Helper()
	return stacktest.StartGatewayVia(t, endpoints, gateway.Config{ID: id, LeaseTTL: ttl})
}

func dial(t *testing.T, url string) *sock { t.Helper(); return stacktest.Dial(t, url) }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	stacktest.WaitFor(t, timeout, what, cond)
}

func wantStatus(t *testing.T, err error, code codes.Code, reason, field string) *errdetails.ErrorInfo {
	t.Helper()
	return stacktest.WantStatus(t, err, code, reason, field)
}

func members(t *testing.T, c membershipv1.MembershipServiceClient, room string) []string {
	t.Helper()
	return stacktest.Members(t, c, room)
}

func hasMember(ids []string, id string) bool { return stacktest.HasMember(ids, id) }
