package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/socketrooms/membership/internal/testutil"
)

// A membership-server with an embedded etcd and no --data-dir leaves
// nothing behind: not in the directory it was started from, and not in
// the temporary directory, once it has stopped.
func TestEmbeddedEtcdWithoutDataDirLeavesNothing(t *testing.T) {
	cwd, tmp := t.TempDir(), t.TempDir()
	addr := testutil.FreeAddr(t)
	cmd := exec.Command(binary(t, "membership-server"), "--grpc-addr", addr, "--log-level", "error",
		"--metrics-addr", "", "--embedded-etcd-addr", testutil.FreeAddr(t),
		"--embedded-etcd-peer-addr", testutil.FreeAddr(t))
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	exited := startCmd(t, cmd)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	waitServing(t, healthpb.NewHealthClient(cc))
	if dirs, _ := filepath.Glob(filepath.Join(tmp, "membership-etcd-*")); len(dirs) != 1 {
		t.Errorf("while running, the temporary directory holds %v; want one etcd data directory", dirs)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if !cmd.ProcessState.Success() {
			t.Fatalf("membership-server exited with %v", cmd.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("membership-server did not stop within 30s of SIGTERM")
	}
	for _, dir := range []string{cwd, tmp} {
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("%s holds %v after exit; want nothing", dir, left)
		}
	}
}
