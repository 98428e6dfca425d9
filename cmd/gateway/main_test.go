package main

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAdvertiseAddr(t *testing.T) {
	lis := &net.TCPAddr{IP: net.IPv6zero, Port: 50061}
	for flag, want := range map[string]string{
		"":                 "[::]:50061",
		"10.1.2.3":         "10.1.2.3:50061",
		"10.1.2.3:7000":    "10.1.2.3:7000",
		"fd00:10:244::7":   "[fd00:10:244::7]:50061",
		"[fd00::7]:7000":   "[fd00::7]:7000",
		"gw-0.example":     "gw-0.example:50061",
		"gw-0.example:123": "gw-0.example:123",
		"::1":              "[::1]:50061",
		"host:port:extra":  "",
		":7000":            "",
		"10.1.2.3:":        "",
	} {
		got, err := advertiseAddr(flag, lis)
		if want == "" {
			if err == nil {
				t.Errorf("advertiseAddr(%q) = %q, want an error", flag, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("advertiseAddr(%q) = %q, %v; want %q", flag, got, err, want)
		}
	}
}

// The gateway refuses to start against an etcd older than the watch fixes it
// relies on. No old etcd release can run here: StartEtcdStatusOnly answers
// only Maintenance.Status, which is all the check reads.
func TestStartRefusesOldEtcd(t *testing.T) {
	old := testutil.StartEtcdStatusOnly(t, "3.5.21")
	errc := make(chan error, 1)
	go func() {
		errc <- run([]string{"--etcd-endpoints", old, "--grpc-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0", "--log-level", "error"})
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, app.ErrEtcdVersion) || !strings.Contains(err.Error(), "3.5.21") || !strings.Contains(err.Error(), "3.5.22") {
			t.Fatalf("run = %v; want a refusal naming 3.5.21 and 3.5.22", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gateway started against etcd 3.5.21")
	}
}

// Every listener's address in use is reported with the flag and the
// environment variable that set it,
// before etcd is dialled.
func TestAddressInUseNamesItsFlag(t *testing.T) {
	for _, flag := range []string{"grpc-addr", "ws-addr", "metrics-addr", "pprof-addr"} {
		t.Run(flag, func(t *testing.T) {
			taken, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer taken.Close()
			addrs := map[string]string{"grpc-addr": "127.0.0.1:0", "ws-addr": "127.0.0.1:0", "metrics-addr": "127.0.0.1:0"}
			addrs[flag] = taken.Addr().String()
			args := []string{"--etcd-endpoints", testutil.FreeAddr(t), "--log-level", "error"}
			for f, a := range addrs {
				args = append(args, "--"+f, a)
			}
			err = run(args)
			env := "GATEWAY_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
			if want := taken.Addr().String() + " is in use: set --" + flag + " (" + env + ") to a free address"; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("run = %v; want an error containing %q", err, want)
			}
		})
	}
}
