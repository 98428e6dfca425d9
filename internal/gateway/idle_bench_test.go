package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkClientPing: a ping from each of 100 idle sockets, each answered
// with a pong: what waking an idle socket's reader costs. cpu-ns/ping is
// the process's CPU (user and system) per ping, the client's side included.
func BenchmarkClientPing(b *testing.B) {
	g, srv := startGatewayServer(b, Config{PingInterval: time.Hour}, httptest.NewServer)
	addr := strings.TrimPrefix(srv.URL, "http://")
	const n = 100
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
		r := bufio.NewReader(conn)
		if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			b.Fatalf("upgrade: %v %v", resp, err)
		}
		var h [2]byte // the connected frame
		if _, err := io.ReadFull(r, h[:]); err != nil {
			b.Fatal(err)
		}
		if _, err := r.Discard(int(h[1] & 0x7f)); err != nil {
			b.Fatal(err)
		}
		conns[i], readers[i] = conn, r
	}
	for g.hub.count() < n {
		time.Sleep(10 * time.Millisecond)
	}
	ping := []byte{0x89, 0x80, 0, 0, 0, 0} // masked, empty
	cpu0 := processCPU()
	b.ResetTimer()
	for range b.N {
		for _, c := range conns {
			if _, err := c.Write(ping); err != nil {
				b.Fatal(err)
			}
		}
		for _, r := range readers {
			var h [2]byte
			if _, err := io.ReadFull(r, h[:]); err != nil || h != [2]byte{0x8A, 0} {
				b.Fatalf("got % x, %v; want an empty pong", h, err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N*n), "cpu-ns/ping")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
