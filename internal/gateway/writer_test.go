package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/socketrooms/membership/internal/testutil"
)

// startTestGateway runs a registered gateway on a real etcd and serves its
// handler; everything stops with the test.
func startTestGateway(t *testing.T, cfg Config) (*Gateway, string) {
	t.Helper()
	g, srv := startGatewayServer(t, cfg, httptest.NewServer)
	return g, strings.TrimPrefix(srv.URL, "http://")
}

// startGatewayServer runs a gateway "gw" on a fresh etcd until the test
// ends, its Handler served by newServer (httptest.NewServer or
// NewTLSServer), and waits until it has registered.
func startGatewayServer(t testing.TB, cfg Config, newServer func(http.Handler) *httptest.Server) (*Gateway, *httptest.Server) {
	t.Helper()
	e := testutil.StartEtcd(t)
	cfg.ID, cfg.AdvertiseAddr = "gw", "127.0.0.1:1"
	g, err := New(cfg, e.Client)
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(g.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !g.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("gateway never registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return g, srv
}

// rawSocket is a WebSocket client that reads the server's bytes as they
// are, frame by frame (RFC 6455 §5.2), so that it sees what a library would
// hide or fail on.
type rawSocket struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawSocket {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	r := bufio.NewReaderSize(conn, 64<<10)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	return &rawSocket{t: t, conn: conn, r: r}
}

type rawFrame struct {
	fin     bool
	opcode  byte
	payload []byte
}

// next reads one whole frame; a server frame is never masked.
func (s *rawSocket) next() (rawFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(s.r, h[:]); err != nil {
		return rawFrame{}, err
	}
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return rawFrame{}, fmt.Errorf("bad frame header % x (RSV bits or a masked server frame)", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(s.r, b[:]); err != nil {
			return rawFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(s.r, b[:]); err != nil {
			return rawFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 64<<20 {
		return rawFrame{}, fmt.Errorf("frame of %d bytes: the stream is garbled", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(s.r, p); err != nil {
		return rawFrame{}, fmt.Errorf("frame of %d bytes cut short: %w", n, err)
	}
	return rawFrame{fin: h[0]&0x80 != 0, opcode: h[0] & 0x0f, payload: p}, nil
}

// send writes a masked client frame header announcing n payload bytes,
// followed by payload (which may be shorter).
func (s *rawSocket) send(opcode byte, n int, payload []byte) {
	b := []byte{0x80 | opcode}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	b = append(b, 0, 0, 0, 0) // a zero mask key leaves the payload as it is
	b = append(b, payload...)
	if _, err := s.conn.Write(b); err != nil {
		s.t.Fatal(err)
	}
}

// untilClose reads every frame up to the close frame and returns its code.
// Each data frame must be one whole JSON frame of the protocol; the close
// frame must be well-formed (RFC 6455 §5.5.1); nothing may follow it but
// the end of the connection. It returns the number of data frames read.
func (s *rawSocket) untilClose() (code int, frames int, err error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		f, err := s.next()
		if err != nil {
			return 0, frames, fmt.Errorf("after %d data frames, before any close frame: %w", frames, err)
		}
		switch f.opcode {
		case 0x1:
			var fr frame
			if !f.fin {
				return 0, frames, errors.New("fragmented data frame")
			}
			if err := json.Unmarshal(f.payload, &fr); err != nil || fr.Type == "" {
				return 0, frames, fmt.Errorf("data frame %d is not a whole frame of the protocol (%v): %.80q", frames, err, f.payload)
			}
			frames++
		case 0x9, 0xa: // ping, pong
		case 0x8:
			if !f.fin || len(f.payload) < 2 || len(f.payload) > 125 || !utf8.Valid(f.payload[2:]) {
				return 0, frames, fmt.Errorf("malformed close frame % x", f.payload)
			}
			code = int(binary.BigEndian.Uint16(f.payload))
			// Nothing after a close frame (RFC 6455 §5.5.1): the server
			// closes the connection.
			rest, err := io.ReadAll(s.r)
			if len(rest) > 0 {
				return code, frames, fmt.Errorf("%d bytes after the close frame (code %d), starting % x", len(rest), code, rest[:min(len(rest), 16)])
			}
			if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				return code, frames, fmt.Errorf("after the close frame: %w", err)
			}
			return code, frames, nil
		default:
			return 0, frames, fmt.Errorf("data frame %d: unexpected opcode %#x", frames, f.opcode)
		}
	}
}

// A client that sends a frame over the read limit while the gateway is busy
// writing large frames to it gets every data frame whole, then a clean close
// frame with 1009 and nothing after it. The WebSocket library's reader writes
// that close frame itself; it used to do so beside the gateway's writer, which
// writes pre-encoded frames to the connection directly, so the close frame
// could land between data frames still being written, cut one short (the
// library's write deadline is shared with the writer's), or be followed by
// more data.
func TestOversizeFrameGetsACleanCloseWhileFramesAreWritten(t *testing.T) {
	g, addr := startTestGateway(t, Config{MaxFrameBytes: 1 << 10, SendQueue: 1 << 20, MaxSocketQueueBytes: 1 << 30})
	big := json.RawMessage(`"` + strings.Repeat("x", 128<<10) + `"`)
	for round := 0; round < 100; round++ {
		s := dialRaw(t, addr)
		if f, err := s.next(); err != nil || !strings.Contains(string(f.payload), frameConnected) {
			t.Fatalf("first frame: %q, %v", f.payload, err)
		}
		// Keep the socket's queue full of large frames until it closes.
		stop := make(chan struct{})
		flooded := make(chan struct{})
		go func() {
			defer close(flooded)
			for {
				select {
				case <-stop:
					return
				default:
				}
				queued := 0
				for _, m := range g.hub.all() {
					c := m.(*client)
					c.mu.Lock()
					queued = max(queued, len(c.queue))
					c.mu.Unlock()
				}
				if queued > 32 {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				g.hub.deliver(delivery{all: true, event: "e", data: big})
			}
		}()
		// Read a few frames so that the writer is in full flow, then send
		// a frame over the limit.
		for i := 0; i < 8; i++ {
			if _, err := s.next(); err != nil {
				t.Fatal(err)
			}
		}
		s.send(0x1, 4<<10, nil)
		code, frames, err := s.untilClose()
		close(stop)
		<-flooded
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if code != closeTooBig {
			t.Fatalf("round %d: close code %d after %d frames, want %d", round, code, frames, closeTooBig)
		}
		s.conn.Close()
		for deadline := time.Now().Add(5 * time.Second); g.hub.count() > 0; {
			if time.Now().After(deadline) {
				t.Fatal("the socket never left the hub")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// A protocol error (here a frame with a reserved opcode) is answered with a
// clean 1002 close frame written after whole data frames.
func TestProtocolErrorGetsACleanClose(t *testing.T) {
	_, addr := startTestGateway(t, Config{})
	s := dialRaw(t, addr)
	if _, err := s.next(); err != nil {
		t.Fatal(err)
	}
	s.send(0x3, 0, nil) // opcode 3 is reserved
	code, _, err := s.untilClose()
	if err != nil {
		t.Fatal(err)
	}
	if code != closeProtocolError {
		t.Fatalf("close code %d, want %d", code, closeProtocolError)
	}
}

// A socket that does not read is closed once the frames queued to it and not
// yet written would pass Config.MaxSocketQueueBytes, however few they are, and
// what it holds never passes the bound: with large messages a bound in frames
// alone let one stalled client pin hundreds of MiB.
func TestStalledSocketIsClosedAtItsQueueByteBound(t *testing.T) {
	const bound = 4 << 20
	g, addr := startTestGateway(t, Config{MaxSocketQueueBytes: bound})
	s := dialRaw(t, addr)
	if _, err := s.next(); err != nil {
		t.Fatal(err)
	}
	var c *client
	for deadline := time.Now().Add(5 * time.Second); c == nil; {
		if all := g.hub.all(); len(all) == 1 {
			c = all[0].(*client)
		} else if time.Now().After(deadline) {
			t.Fatal("the socket never joined the hub")
		}
		time.Sleep(time.Millisecond)
	}
	big := json.RawMessage(`"` + strings.Repeat("y", 256<<10) + `"`)
	sent := 0
	for ; sent < 400; sent++ {
		if delivered, _ := g.hub.deliver(delivery{all: true, event: "e", data: big}); delivered == 0 {
			break
		}
		if n := c.pendingBytes(); n > bound {
			t.Fatalf("after %d messages of 256 KiB the socket holds %d bytes queued, over its bound of %d", sent+1, n, bound)
		}
	}
	if sent == 400 {
		t.Fatalf("a socket that reads nothing still takes messages after %d MiB", 400/4)
	}
	select {
	case <-c.connClosed:
	case <-time.After(5 * time.Second):
		t.Fatal("the stalled socket was never closed")
	}
	if got := counterValue(t, g, "gateway_slow_client_disconnects_total"); got != 1 {
		t.Fatalf("gateway_slow_client_disconnects_total %v, want 1", got)
	}
	t.Logf("closed after %d messages of 256 KiB", sent)
}

func counterValue(t *testing.T, g *Gateway, name string) float64 {
	t.Helper()
	families, err := g.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == name {
			sum := 0.0 // over its labels (protocol)
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
