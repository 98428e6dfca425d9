package service_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// ListGateways shows real gateways with their sockets, as they connect and
// close, their leases as etcd has them, and pages in id order; bad paging
// is INVALID_ARGUMENT on the field.
func TestListGatewaysShowsGatewaysSocketsAndLeases(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e)
	ctx := context.Background()
	gwb := stacktest.StartGateway(t, e, "gwb", 5*time.Second)
	gwa := stacktest.StartGateway(t, e, "gwa", 5*time.Second)
	a1 := stacktest.Dial(t, gwa.WSURL)
	stacktest.Dial(t, gwa.WSURL)
	stacktest.Dial(t, gwb.WSURL)
	before := time.Now()

	list := func(size int32, token string) *membershipv1.ListGatewaysResponse {
		t.Helper()
		r, err := api.Client.ListGateways(ctx, &membershipv1.ListGatewaysRequest{PageSize: size, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := list(0, "")
	if len(r.Gateways) != 2 || r.NextPageToken != "" || r.Revision == 0 {
		t.Fatalf("ListGateways: %v", r)
	}
	for i, want := range []struct {
		id      string
		sockets int64
	}{{"gwa", 2}, {"gwb", 1}} {
		g := r.Gateways[i]
		if g.Id != want.id || g.SocketCount != want.sockets {
			t.Errorf("gateway %d: %s with %d sockets, want %s with %d", i, g.Id, g.SocketCount, want.id, want.sockets)
		}
		if host, _, err := net.SplitHostPort(g.GrpcAddr); err != nil || host != "127.0.0.1" {
			t.Errorf("%s: grpc_addr %q, want its loopback address", g.Id, g.GrpcAddr)
		}
		// A TTL of 5 s over the default lease shards: each is granted 1 s more.
		if g.LeaseId == 0 || g.LeaseGrantedTtlSeconds != 6 || g.LeaseTtlSeconds < 1 || g.LeaseTtlSeconds > 6 {
			t.Errorf("%s: lease %x with %d s of %d s, want up to 6 s of 6 s", g.Id, g.LeaseId, g.LeaseTtlSeconds, g.LeaseGrantedTtlSeconds)
		}
		if s := g.StartedAt.AsTime(); s.After(before) || time.Since(s) > time.Minute {
			t.Errorf("%s: started_at %v, want shortly before %v", g.Id, s, before)
		}
	}

	first := list(1, "")
	if len(first.Gateways) != 1 || first.Gateways[0].Id != "gwa" || first.NextPageToken == "" {
		t.Fatalf("first page of 1: %v", first)
	}
	second := list(1, first.NextPageToken)
	if len(second.Gateways) != 1 || second.Gateways[0].Id != "gwb" || second.NextPageToken != "" {
		t.Fatalf("second page of 1: %v", second)
	}

	a1.Close()
	stacktest.WaitFor(t, 10*time.Second, "gwa's count to drop", func() bool {
		return list(0, "").Gateways[0].SocketCount == 1
	})

	_, err := api.Client.ListGateways(ctx, &membershipv1.ListGatewaysRequest{PageSize: 1001})
	stacktest.WantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "page_size")
	_, err = api.Client.ListGateways(ctx, &membershipv1.ListGatewaysRequest{PageToken: "!"})
	stacktest.WantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "page_token")
}
