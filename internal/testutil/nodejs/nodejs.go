// Package nodejs runs the pinned Node.js Socket.IO clients for tests.
//
// testdata/package.json and testdata/package-lock.json pin socket.io-client
// 4.8.4 (Socket.IO protocol 5), socket.io-client 2.5.0 installed under the
// alias socket.io-client-v2 (protocol 4, the client sails.io.js 1.x drives)
// and sails.io.js 1.2.1. Install runs `npm ci` there; Run runs a Node script
// from testdata/scripts with the installed packages resolvable. Tests that
// use these helpers need node and npm on PATH and the npm registry (or an
// npm cache holding the pinned tarballs); without them they fail, they do not
// skip.
package nodejs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Dir is the absolute path of the harness: package.json, package-lock.json,
// node_modules and scripts/.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata")
}

// installs holds one *installation per package directory.
var installs sync.Map

type installation struct {
	once sync.Once
	out  []byte
	err  error
}

// stampFile records the digest of the manifest and lockfile that the
// installed node_modules came from.
const stampFile = "node_modules/.socketrooms-install"

// Install runs `npm ci` in Dir once per test binary and returns Dir. Test
// binaries of several packages may run at once: an exclusive lock on
// Dir/.install.lock serialises them, and a binary that finds node_modules
// already installed from the same package.json and package-lock.json (and
// the same node version) by another binary does not install again.
func Install(t testing.TB) string {
	t.Helper()
	InstallAt(t, Dir())
	return Dir()
}

// InstallAt is Install for the Node package in dir (its package.json and
// package-lock.json): `npm ci` there, once per test binary and only when
// its node_modules did not come from the same manifest, lockfile and node.
func InstallAt(t testing.TB, dir string) {
	t.Helper()
	v, _ := installs.LoadOrStore(dir, &installation{})
	in := v.(*installation)
	in.once.Do(func() { in.out, in.err = install(dir) })
	if in.err != nil {
		t.Fatalf("nodejs: npm ci in %s: %v\n%s", dir, in.err, in.out)
	}
}

func install(dir string) ([]byte, error) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, err
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	want, err := digest(dir)
	if err != nil {
		return nil, err
	}
	if got, err := os.ReadFile(filepath.Join(dir, stampFile)); err == nil && string(got) == want {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, err
	}
	return out, os.WriteFile(filepath.Join(dir, stampFile), []byte(want), 0o644)
}

// digest identifies an installation: the manifest, the lockfile and the
// node version.
func digest(dir string) (string, error) {
	h := sha256.New()
	for _, name := range []string{"package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	v, err := exec.Command("node", "--version").Output()
	if err != nil {
		return "", err
	}
	h.Write(v)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Command returns a command that runs testdata/scripts/<script> with args,
// in Dir, after Install; for scripts that run alongside a test (clients of
// a server under test). The caller starts and stops it.
func Command(ctx context.Context, t testing.TB, script string, args ...string) *exec.Cmd {
	t.Helper()
	dir := Install(t)
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(dir, "scripts", script)}, args...)...)
	cmd.Dir = dir
	return cmd
}

// Run runs testdata/scripts/<script> with args and stdin, waits for it (at
// most a minute) and returns its standard output. A non-zero exit fails the
// test with the script's standard error.
func Run(t testing.TB, stdin []byte, script string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := Command(ctx, t, script, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("nodejs: %s %v: %v\nstderr:\n%s", script, args, err, stderr.String())
	}
	return stdout.Bytes()
}
