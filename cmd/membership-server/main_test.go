package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/testutil"
)

// The server refuses to start against an etcd older than the watch fixes it
// relies on. No old etcd release can run here: StartEtcdStatusOnly answers
// only Maintenance.Status, which is all the check reads.
func TestStartRefusesOldEtcd(t *testing.T) {
	old := testutil.StartEtcdStatusOnly(t, "3.6.1")
	errc := make(chan error, 1)
	go func() {
		errc <- run([]string{"--etcd-endpoints", old, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "", "--log-level", "error"})
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, app.ErrEtcdVersion) || !strings.Contains(err.Error(), "3.6.1") || !strings.Contains(err.Error(), "3.6.2") {
			t.Fatalf("run = %v; want a refusal naming 3.6.1 and 3.6.2", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("membership-server started against etcd 3.6.1")
	}
}
