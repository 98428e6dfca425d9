// Package testutil starts real dependencies (an embedded etcd) for tests.
package testutil

import (
	"net"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/etcdembed"
)

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Etcd is an embedded etcd for one test, with a client to it.
type Etcd struct {
	Server   *etcdembed.Server
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
