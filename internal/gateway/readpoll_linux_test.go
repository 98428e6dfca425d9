package gateway

import (
	"bytes"
	"crypto/tls"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// readers counts the goroutines reading a socket.
func readers() int {
	buf := make([]byte, 4<<20)
	return bytes.Count(buf[:runtime.Stack(buf, true)], []byte("(*Gateway).readSocket("))
}

// waitParked waits until every one of n sockets is parked: no reader
// goroutine, and no read buffer held.
func waitParked(t *testing.T, g *Gateway, n int, after string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := readers()
		parked, buffers := 0, 0
		g.reads.mu.Lock()
		for _, m := range g.hub.all() {
			if c, ok := m.(*client); ok && c.rd.parked {
				parked++
				if c.rd.rbuf != nil {
					buffers++
				}
			}
		}
		g.reads.mu.Unlock()
		if r == 0 && parked == n && buffers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d reader goroutines, %d of %d sockets parked, %d parked with a read buffer; want 0, %d, 0",
				after, r, parked, n, buffers, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An idle socket keeps no goroutine and no read buffer: its reader parks it
// once nothing is left to read, after a data frame and after the control
// frames a live client sends (pongs to the gateway's pings, its own pings),
// whole or cut across writes.
func TestIdleSocketsParkWithoutReaders(t *testing.T) {
	g, addr := startTestGateway(t, Config{PingInterval: time.Hour})
	const n = 20
	socks := make([]*rawSocket, n)
	for i := range socks {
		socks[i] = dialRaw(t, addr)
		if _, err := socks[i].next(); err != nil { // connected
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "every socket registered", func() bool { return g.hub.count() == n })
	waitParked(t, g, n, "connecting")

	for _, s := range socks {
		s.send(0xA, 4, []byte("pong"))
	}
	waitParked(t, g, n, "a pong")

	for _, s := range socks {
		s.send(0x9, 0, nil)
		if f, err := s.next(); err != nil || f.opcode != 0xA {
			t.Fatalf("a ping was answered with %+v, %v; want a pong", f, err)
		}
	}
	waitParked(t, g, n, "a ping")

	frame := []byte(`{"type":"hello"}`)
	for _, s := range socks {
		s.send(0x1, len(frame), frame)
	}
	waitParked(t, g, n, "a data frame")

	// A pong whose payload comes later: the reader waits for the rest of it,
	// then parks.
	for _, s := range socks {
		s.send(0xA, 4, nil)
	}
	time.Sleep(50 * time.Millisecond)
	for _, s := range socks {
		if _, err := s.conn.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
	}
	waitParked(t, g, n, "a pong cut in two")

	// A data frame then a ping in one write.
	for _, s := range socks {
		s.send(0x1, len(frame), frame)
		s.send(0x9, 0, nil)
		if f, err := s.next(); err != nil || f.opcode != 0xA {
			t.Fatalf("a ping was answered with %+v, %v; want a pong", f, err)
		}
	}
	waitParked(t, g, n, "a data frame and a ping")
	if got := g.hub.count(); got != n {
		t.Fatalf("%d sockets left, want %d", got, n)
	}
}

// A parked socket that the client closes, or whose read deadline passes,
// or that the gateway closes, ends as one whose reader was blocked did.
func TestParkedSocketsEnd(t *testing.T) {
	g, addr := startTestGateway(t, Config{PingInterval: 150 * time.Millisecond})
	closed := dialRaw(t, addr)
	silent := dialRaw(t, addr)
	for _, s := range []*rawSocket{closed, silent} {
		if _, err := s.next(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "both sockets registered", func() bool { return g.hub.count() == 2 })
	closed.send(0x8, 2, []byte{0x03, 0xe8}) // 1000
	if code, _, err := closed.untilClose(); err != nil || code != closeNormal {
		t.Fatalf("closed by the client: close %d, %v; want %d", code, err, closeNormal)
	}
	// silent answers no ping: dropped after two intervals, from the poller.
	waitFor(t, 5*time.Second, "both sockets gone", func() bool { return g.hub.count() == 0 })
	if r := readers(); r != 0 {
		t.Fatalf("%d reader goroutines left", r)
	}
}

// A socket served over TLS is not parked (the TLS layer may hold decrypted
// bytes epoll cannot see): its reader blocks in its read, and it is served
// as any other.
func TestTLSSocketIsServedWithoutParking(t *testing.T) {
	g, srv := startGatewayServer(t, Config{PingInterval: time.Hour}, httptest.NewTLSServer)

	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	conn, _, err := d.Dial("wss://"+strings.TrimPrefix(srv.URL, "https://")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, msg, err := conn.ReadMessage(); err != nil || !bytes.Contains(msg, []byte(`"connected"`)) {
		t.Fatalf("first frame %s, %v; want connected", msg, err)
	}
	waitFor(t, 5*time.Second, "the socket registered", func() bool { return g.hub.count() == 1 })
	pong := make(chan struct{}, 1)
	conn.SetPongHandler(func(string) error { pong <- struct{}{}; return nil })
	read := make(chan error, 1)
	go func() { // pongs are seen while reading
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				read <- err
				return
			}
		}
	}()
	for i := range 3 { // each ping after the reader had every chance to park
		if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-pong:
		case err := <-read:
			t.Fatalf("ping %d: connection ended: %v", i, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("ping %d: no pong", i)
		}
		if r := readers(); r != 1 {
			t.Fatalf("ping %d: %d reader goroutines; want 1 (a TLS socket is not parked)", i, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
