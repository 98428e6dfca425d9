package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// -h says what the command does with stdin, and exits 0.
func TestHelpSaysStdinLinesAreFrames(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"-h"}, strings.NewReader(""), &out, &out); code != 0 {
		t.Fatalf("-h exits %d:\n%s", code, out.String())
	}
	for _, want := range []string{"Usage: socket-client", "stdin", "text frame", "-token"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-h does not say %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "malformed") {
		t.Errorf("-h reads its argument as a URL:\n%s", out.String())
	}
}

// lockedBuffer is a bytes.Buffer safe for the command and the test at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Against a real gateway: the first line printed is the connected frame; a
// line on stdin goes out as a frame (a socket request, answered 501 by a
// gateway without an upstream); the end of stdin closes with 1000, exit 0.
func TestLinesOnStdinAreSentAsFrames(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := stacktest.StartGateway(t, e, "gw1", 10*time.Second)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var errOut lockedBuffer
	done := make(chan int, 1)
	go func() { done <- run([]string{g.WSURL}, inR, outW, &errOut); outW.Close() }()
	lines := bufio.NewScanner(outR)
	next := func() map[string]any {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("no more output; stderr: %s", errOut.String())
		}
		var f map[string]any
		if err := json.Unmarshal(lines.Bytes(), &f); err != nil {
			t.Fatalf("printed %q: %v", lines.Text(), err)
		}
		return f
	}
	if f := next(); f["type"] != "connected" || f["socket_id"] == "" {
		t.Fatalf("first frame %v, want connected", f)
	}
	if _, err := io.WriteString(inW, `{"type":"request","id":7,"method":"GET","path":"/x"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	if f := next(); f["type"] != "response" || f["id"] != float64(7) || f["status"] != float64(501) {
		t.Fatalf("answer %v, want the 501 response to request 7", f)
	}
	inW.Close()
	go io.Copy(io.Discard, outR)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after the end of stdin; stderr: %s", code, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("socket-client did not exit after the end of stdin")
	}
	if !strings.Contains(errOut.String(), "closed with 1000") {
		t.Errorf("stderr %q does not report the close", errOut.String())
	}
}

// A line of stdin too long to be a frame is an error (exit 1, said on
// stderr), not a quiet end of input.
func TestOverlongStdinLineIsAnError(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := stacktest.StartGateway(t, e, "gw1", 10*time.Second)
	var errOut lockedBuffer
	in := strings.NewReader(strings.Repeat("x", maxLineBytes+1) + "\n")
	code := run([]string{g.WSURL}, in, io.Discard, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "a line over") {
		t.Errorf("exit %d, stderr %q; want 1 and the line named", code, errOut.String())
	}
}
