package engineio

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// nodeDir holds the pinned npm packages (package-lock.json) and the case
// scripts driving them.
const nodeDir = "testdata/node"

var npmOnce struct {
	sync.Once
	err error
	out []byte
}

// requireNode installs the pinned packages once per test binary, or skips
// when npm is not installed.
func requireNode(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("npm is not installed: the real engine.io-client tests need Node and npm")
	}
	npmOnce.Do(func() {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = nodeDir
		npmOnce.out, npmOnce.err = cmd.CombinedOutput()
	})
	if npmOnce.err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", nodeDir, npmOnce.err, npmOnce.out)
	}
}

// startEchoServer serves the behaviour lib.mjs expects: "welcome" on open,
// "echo:<m>" for each message, close on "close-me".
func startEchoServer(t *testing.T, srv *Server) (*httptest.Server, chan error) {
	t.Helper()
	closed := make(chan error, 16)
	var n int
	var mu sync.Mutex
	srv.NewID = func(*http.Request) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		n++
		return "sock-" + time.Now().Format("150405.000000") + "-" + string(rune('a'+n%26)), nil
	}
	srv.OnSession = func(s *Session, _ *http.Request) {
		s.OnMessage(func(data []byte, binary bool) {
			if string(data) == "close-me" {
				s.Close(nil)
				return
			}
			_ = s.Send(append([]byte("echo:"), data...))
		})
		_ = s.Send([]byte("welcome"))
		go func() {
			<-s.Done()
			closed <- s.Err()
		}()
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return hs, closed
}

func TestNodeClients(t *testing.T) {
	requireNode(t)
	for _, script := range []string{"polling_upgrade.mjs", "websocket_only.mjs", "polling_only.mjs"} {
		for _, proto := range []string{"3", "4"} {
			t.Run(script+"/EIO"+proto, func(t *testing.T) {
				srv := &Server{PingInterval: 200 * time.Millisecond, PingTimeout: 300 * time.Millisecond}
				hs, closed := startEchoServer(t, srv)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, "node", script, hs.URL, proto)
				cmd.Dir = nodeDir
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("node %s %s %s: %v\n%s", script, hs.URL, proto, err, out)
				}
				t.Logf("%s", out)
				select {
				case reason := <-closed:
					if reason != ErrServerClosed {
						t.Fatalf("session closed with %v, want %v", reason, ErrServerClosed)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("the session did not close on the server")
				}
			})
		}
	}
}
