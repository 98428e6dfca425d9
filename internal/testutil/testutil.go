// Package testutil starts real dependencies (an embedded etcd) for tests.
package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/etcdembed"
)

// FreeAddr returns a loopback host:port that was free a moment ago, for a
// listener the test (or a process it starts) binds next.
//
// The port is below the kernel's ephemeral range (ip_local_port_range),
// chosen at random and not handed out before in this test binary: between
// the pick and the bind, the stacks a test starts open many outgoing
// connections, and each takes an ephemeral port, so a port picked with
// "127.0.0.1:0" could be taken by one of them before the listener binds it
// (or, for an etcd member killed and restarted, while it is down). Where the
// range starts too low to leave room, it falls back to an ephemeral port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	if lo > 11000 {
		for range 100 {
			addr := fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(lo-10000))
			givenMu.Lock()
			seen := given[addr]
			givenMu.Unlock()
			if seen {
				continue
			}
			if l, err := net.Listen("tcp", addr); err == nil {
				l.Close()
				givenMu.Lock()
				given[addr] = true
				givenMu.Unlock()
				return addr
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var (
	givenMu sync.Mutex
	given   = map[string]bool{} // addresses FreeAddr returned
)

// Etcd is an embedded etcd for one test, with a client to it.
type Etcd struct {
	Server   *etcdembed.Server // nil for an etcd run as a process (StartEtcdProcess)
	Endpoint string
	Client   *clientv3.Client
}

// StartEtcd starts an embedded single-member etcd with its data in a temporary
// directory; it is stopped when the test ends.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return StartEtcdWithLimits(t, 0, 0)
}

// StartEtcdWithLimits is StartEtcd with etcd's --max-request-bytes and
// --max-txn-ops set (0: etcd's defaults).
func StartEtcdWithLimits(t testing.TB, maxRequestBytes, maxTxnOps uint) *Etcd {
	t.Helper()
	var srv *etcdembed.Server
	var err error
	for attempt := 0; attempt < 3; attempt++ { // a picked port may be taken meanwhile
		srv, err = etcdembed.Start(etcdembed.Config{
			Dir:             t.TempDir(),
			ClientAddr:      FreeAddr(t),
			PeerAddr:        FreeAddr(t),
			LogLevel:        "panic", // etcd logs expected shutdown noise at error level
			MaxRequestBytes: maxRequestBytes, MaxTxnOps: maxTxnOps,
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cli := NewClient(t, srv.Endpoint)
	return &Etcd{Server: srv, Endpoint: srv.Endpoint, Client: cli}
}

// NewClient returns an etcd client closed when the test ends.
func NewClient(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(app.EtcdConfig(endpoints, zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// EtcdLeakOptions ignores goroutines that etcd's embedded server and client
// libraries leave running past Close by design (package-level loggers and
// caches), so goleak reports only the project's own leaks.
func EtcdLeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		// A member of an in-process cluster that is stopped and restarted
		// leaves its peers' raft HTTP connections to it open on both ends
		// (etcd's peer listener serves them through cmux and never closes
		// them). Both ends live in etcd's own code.
		goleak.IgnoreAnyFunction("github.com/soheilhy/cmux.(*MuxConn).Read"),
		goleak.IgnoreAnyFunction("net/http.(*connReader).abortPendingRead"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	}
}
