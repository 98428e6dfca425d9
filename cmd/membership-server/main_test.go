package main

import (
	"errors"
	"net"
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

// Every listener's address in use is reported with the flag and the
// environment variable that set it.
func TestAddressInUseNamesItsFlag(t *testing.T) {
	for _, flag := range []string{"grpc-addr", "metrics-addr", "embedded-etcd-addr", "embedded-etcd-peer-addr", "pprof-addr"} {
		t.Run(flag, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			addrs := map[string]string{}
			for _, f := range []string{"grpc-addr", "metrics-addr", "embedded-etcd-addr", "embedded-etcd-peer-addr"} {
				addrs[f] = testutil.FreeAddr(t)
			}
			addrs[flag] = taken.Addr().String()
			args := []string{"--data-dir", t.TempDir(), "--log-level", "error"}
			for f, a := range addrs {
				args = append(args, "--"+f, a)
			}
			err = run(args)
			env := "MEMBERSHIP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
			if want := taken.Addr().String() + " is in use: set --" + flag + " (" + env + ") to a free address"; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("run = %v; want an error containing %q", err, want)
			}
		})
	}
}

// The server's own listeners open before the embedded etcd starts (or an
// external one is dialled), so an address in use among them is reported at
// once: with the embedded etcd's address taken too, the error names the
// server's own.
func TestOwnAddressInUseReportedBeforeEtcdStarts(t *testing.T) {
	for _, flag := range []string{"grpc-addr", "metrics-addr"} {
		t.Run(flag, func(t *testing.T) {
			own, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer own.Close()
			etcd, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer etcd.Close()
			addrs := map[string]string{"grpc-addr": testutil.FreeAddr(t), "metrics-addr": testutil.FreeAddr(t),
				"embedded-etcd-addr": etcd.Addr().String(), "embedded-etcd-peer-addr": testutil.FreeAddr(t)}
			addrs[flag] = own.Addr().String()
			args := []string{"--data-dir", t.TempDir(), "--log-level", "error"}
			for f, a := range addrs {
				args = append(args, "--"+f, a)
			}
			err = run(args)
			if want := own.Addr().String() + " is in use: set --" + flag; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("run = %v; want an error containing %q", err, want)
			}
		})
	}
}

// The console rides on the HTTP API: asking for it without one is an error
// at once, not a console that silently is nowhere.
func TestConsoleNeedsHTTPAddr(t *testing.T) {
	err := run([]string{"--console", "--grpc-addr", testutil.FreeAddr(t), "--metrics-addr", "", "--log-level", "error"})
	if err == nil || err.Error() != "--console needs --http-addr" {
		t.Fatalf("run = %v; want --console needs --http-addr", err)
	}
}
