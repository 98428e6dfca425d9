package engineio

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A WebSocket client that stops reading: the batch the writer is stuck on
// still counts against MaxQueueBytes, so the session holds at most the bound
// (not the bound again on top of the batch), and at the overflow the stuck
// writer gives up at once instead of holding its batch until WriteTimeout.
// Socket buffers are made small on both ends so the kernel absorbs little.
func TestSendQueueBoundCountsTheBatchBeingWritten(t *testing.T) {
	const bound = 1 << 20
	sessions := make(chan *Session, 1)
	srv := &Server{
		NewID:          func(*http.Request) (string, error) { return "s1", nil },
		OnSession:      func(s *Session, _ *http.Request) { sessions <- s },
		MaxQueueBytes:  bound,
		MaxQueueFrames: 100000,
		WriteTimeout:   time.Minute,
		PingInterval:   time.Minute,
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			_ = c.(*net.TCPConn).SetWriteBuffer(4096)
		}
	}
	hs.Start()
	defer hs.Close()
	small := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		_ = c.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return err
	}}
	d := websocket.Dialer{NetDialContext: small.DialContext}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if open := readText(t, conn); !strings.HasPrefix(open, "0{") {
		t.Fatalf("open packet %q", open)
	}
	s := <-sessions
	// From here on the client reads nothing.
	msg := []byte(strings.Repeat("y", 64<<10))
	half := make([][]byte, bound/2/len(msg))
	for i := range half {
		half[i] = msg
	}
	if err := s.Send(half...); err != nil {
		t.Fatal(err)
	}
	// Let the writer take that half and block on the full buffers; the
	// bound must hold whether or not it has.
	time.Sleep(200 * time.Millisecond)
	accepted := len(half) * len(msg)
	for s.Send(msg) == nil {
		accepted += len(msg)
		if accepted > 4*bound {
			break
		}
	}
	if accepted > bound {
		t.Errorf("the session took %d bytes from a client that reads nothing; the bound is %d", accepted, bound)
	}
	if s.Err() != ErrQueueFull {
		t.Fatalf("session reason %v, want %v", s.Err(), ErrQueueFull)
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer stuck on the stalled client still holds its batch 10 s after the overflow (WriteTimeout is a minute)")
	}
}
