package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

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

// A membership-server told to stop (SIGTERM) ends its watch streams with
// UNAVAILABLE/SHUTTING_DOWN and exits well within --shutdown-timeout: the
// streams do not hold its gRPC server's GracefulStop.
func TestWatchStreamsEndAtSIGTERM(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, cmd := startServerProcess(t, e.Endpoint, "--shutdown-timeout", "30s")
	stream, err := api.WatchMembership(context.Background(), &membershipv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantStatus(t, err, codes.Unavailable, "SHUTTING_DOWN", "")
	// The process helper reaps it; once reaped, signal 0 finds no process.
	waitFor(t, 10*time.Second, "the membership-server to exit", func() bool { return syscall.Kill(cmd.Process.Pid, 0) != nil })
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}
