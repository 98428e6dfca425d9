package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/testutil"
	"github.com/socketrooms/membership/internal/testutil/nodejs"
)

// repoDir is the repository's root directory.
func repoDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	nodeBuildOnce sync.Once
	nodeBuildOut  []byte
	nodeBuildErr  error
)

// nodeClientPackage installs clients/node's pinned packages and compiles it (and
// its tests) into clients/node/dist with the pinned tsc; returns its path.
func nodeClientPackage(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoDir(), "clients", "node")
	nodejs.InstallAt(t, dir)
	nodeBuildOnce.Do(func() {
		cmd := exec.Command("npm", "run", "build")
		cmd.Dir = dir
		nodeBuildOut, nodeBuildErr = cmd.CombinedOutput()
	})
	if nodeBuildErr != nil {
		t.Fatalf("npm run build in %s: %v\n%s", dir, nodeBuildErr, nodeBuildOut)
	}
	return dir
}

// nodeStack is etcd, a membership-server with a token (gRPC and HTTP) and a
// gateway process, with the environment a Node test finds them by.
func nodeStack(t *testing.T, gatewayFlags ...string) []string {
	t.Helper()
	const token = "node-client-secret"
	e := testutil.StartEtcd(t)
	httpAddr := testutil.FreeAddr(t)
	_, _, grpcAddr := startServerProcessAt(t, e.Endpoint, "--http-addr", httpAddr,
		"--auth-token-file", tokenFile(t, token))
	g := startGatewayProcess(t, e, "node", 30*time.Second, gatewayFlags...)
	return []string{
		"MEMBERSHIP_GRPC_URL=http://" + grpcAddr,
		"MEMBERSHIP_HTTP_URL=http://" + httpAddr,
		"MEMBERSHIP_TOKEN=" + token,
		"GATEWAY_WS_URL=" + g.WSURL,
	}
}

// runNodeTests runs `node --test` on paths in dir with env added; a failing
// Node test fails t, with the runner's report.
func runNodeTests(t *testing.T, dir string, env []string, paths ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{"--test", "--test-concurrency=1", "--test-reporter=spec"}, paths...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test %v: %v\n%s", paths, err, out)
	}
	t.Logf("node --test %v:\n%s", paths, out)
}

// clients/node's integration tests (test/integration) against the binaries:
// every sails.sockets call of the facade over gRPC, Connect and gRPC-Web,
// errors with their code, reason and field, UNAUTHENTICATED without the
// token, the callback form, and a request without X-Socket-Id refused.
func TestNodeClient(t *testing.T) {
	dir := nodeClientPackage(t)
	env := append(nodeStack(t), tlsServer(t)...)
	runNodeTests(t, dir, env, "dist/test/unit/", "dist/test/integration/")
}

// tlsServer starts a membership-server with TLS on both listeners (its own
// etcd, no token) and returns MEMBERSHIP_TLS_GRPC_URL, MEMBERSHIP_TLS_HTTP_URL
// and MEMBERSHIP_TLS_CA (the CA certificate's file).
func tlsServer(t *testing.T) []string {
	t.Helper()
	e := testutil.StartEtcd(t)
	ca := testutil.NewCA(t, "node-client")
	cert, key := ca.Issue("server")
	grpcAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	startProcess(t, "membership-server", "--grpc-addr", grpcAddr, "--http-addr", httpAddr,
		"--etcd-endpoints", e.Endpoint, "--log-level", "error", "--metrics-addr", "",
		"--tls-cert-file", cert, "--tls-key-file", key)
	cfg, err := app.ClientTLSConfig(ca.File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	waitFor(t, 30*time.Second, "the TLS membership-server", func() bool {
		resp, err := client.Get("https://" + httpAddr + "/v1/rooms")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return []string{
		"MEMBERSHIP_TLS_GRPC_URL=https://" + grpcAddr,
		"MEMBERSHIP_TLS_HTTP_URL=https://" + httpAddr,
		"MEMBERSHIP_TLS_CA=" + ca.File,
	}
}

// examples/node: the leaveFunRoom action behind the gateway's --upstream-url
// (at an address chosen here, where the Node test starts the app), called
// from a native socket's request and from sails.io.js's io.socket.post
// through the gateway's Socket.IO, and the banUser service.
func TestNodeExamples(t *testing.T) {
	nodeClientPackage(t)
	dir := filepath.Join(repoDir(), "examples", "node")
	nodejs.InstallAt(t, dir)
	appAddr := testutil.FreeAddr(t)
	env := nodeStack(t, "--upstream-url", "http://"+appAddr)
	runNodeTests(t, dir, append(env, "APP_ADDR="+appAddr), "test/")
}
