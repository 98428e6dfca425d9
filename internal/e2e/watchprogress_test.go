package e2e

import (
	"context"
	"testing"
	"time"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/testutil"
)

// An idle stream gets progress at the configured interval, moving with
// etcd's revision even when nothing it selects changes.
func TestWatchIdleProgress(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _, _ := startAPIWithOptions(t, e.Client, service.Options{Watch: service.WatchOptions{ProgressInterval: 100 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	start := m.GetProgress().GetRevision()
	r, err := e.Client.Put(ctx, "/membership/elsewhere", "x") // outside what the stream watches
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("no progress past revision %d (start %d): %v", r.Header.Revision, start, err)
		}
		if m.GetProgress().GetRevision() >= r.Header.Revision {
			return
		}
	}
}
