package app_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestCheckEtcdServerVersion(t *testing.T) {
	for v, ok := range map[string]bool{
		"3.7.3": true, "3.7.0": true, "3.7.1-rc.0": true, "3.8.1": true, "3.8.0-alpha.0": true, "4.0.0": true,
		"3.7.0-alpha.0": false, "3.7.0-rc.0": false,
		"3.6.2": true, "3.6.3": true, "3.6.15": true, "3.6.2+build.7": true,
		"3.6.1": false, "3.6.0": false, "3.6.0-rc.5": false, "3.6.2-rc.0": false,
		"3.5.22": true, "3.5.33": true, "3.5.23-rc.1": true,
		"3.5.21": false, "3.5.13": false, "3.5.8": false, "3.5.0": false, "3.5.22-rc.0": false,
		"3.4.37": false, "3.4.99": false, "3.3.27": false, "2.3.8": false,
		"": false, "3.5": false, "3.6.x": false, "v3.6.2": false, "3.6.02": false,
		"3.6.2-": false, "3..2": false, "3.6.2.1": false, "not a version": false, "3.6.+2": false,
	} {
		err := app.CheckEtcdServerVersion(v)
		if ok != (err == nil) {
			t.Errorf("CheckEtcdServerVersion(%q) = %v; want accepted=%v", v, err, ok)
		}
		if err != nil && !errors.Is(err, app.ErrEtcdVersion) {
			t.Errorf("CheckEtcdServerVersion(%q) = %v; not ErrEtcdVersion", v, err)
		}
	}
	// The message names what was found, the minimum of its series and why.
	err := app.CheckEtcdServerVersion("3.5.21")
	for _, want := range []string{"3.5.21", "3.5.22", "watch progress notifications", "#20229"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// A real etcd (the embedded v3.7.3) passes, also when another configured
// endpoint does not answer.
func TestCheckEtcdVersionAcceptsEmbeddedEtcd(t *testing.T) {
	e := testutil.StartEtcd(t)
	if err := app.CheckEtcdVersion(context.Background(), e.Client, false, 10*time.Second, quiet); err != nil {
		t.Fatal(err)
	}
	cli := testutil.NewClient(t, e.Endpoint, testutil.FreeAddr(t))
	if err := app.CheckEtcdVersion(context.Background(), cli, false, 10*time.Second, quiet); err != nil {
		t.Fatalf("one endpoint down: %v", err)
	}
}

// An etcd that reports an old version is refused, even next to a new one.
// No old etcd release can run here: the old member is StartEtcdStatusOnly,
// a server answering only Maintenance.Status, which is all the check reads.
func TestCheckEtcdVersionRefusesOldEtcd(t *testing.T) {
	e := testutil.StartEtcd(t)
	old := testutil.StartEtcdStatusOnly(t, "3.5.21")
	cli := testutil.NewClient(t, e.Endpoint, old)
	err := app.CheckEtcdVersion(context.Background(), cli, false, 10*time.Second, quiet)
	if !errors.Is(err, app.ErrEtcdVersion) || !strings.Contains(err.Error(), old) || !strings.Contains(err.Error(), "3.5.22") {
		t.Fatalf("CheckEtcdVersion = %v; want a refusal naming %s and 3.5.22", err, old)
	}
	if err := app.CheckEtcdVersion(context.Background(), cli, true, 10*time.Second, quiet); err != nil {
		t.Fatalf("with the check skipped: %v", err)
	}
}

// With no endpoint answering, the check fails once its wait is over.
func TestCheckEtcdVersionNeedsOneAnswer(t *testing.T) {
	cli := testutil.NewClient(t, testutil.FreeAddr(t))
	err := app.CheckEtcdVersion(context.Background(), cli, false, 1500*time.Millisecond, quiet)
	if err == nil || errors.Is(err, app.ErrEtcdVersion) || !strings.Contains(err.Error(), "no endpoint answered") {
		t.Fatalf("CheckEtcdVersion = %v; want no endpoint answered", err)
	}
}
