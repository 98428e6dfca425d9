package engineio

import (
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var benchMsg = []byte(`{"rooms":["fun"],"event":"chat","data":{"text":"hello, this is a chat message of some size"}}`)

// BenchmarkAppendPacket: one message packet as a WebSocket frame's bytes.
func BenchmarkAppendPacket(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendPacket(buf[:0], Protocol4, Packet{Type: PacketMessage, Data: benchMsg}, false)
	}
}

// BenchmarkAppendPayload: ten message packets as one polling body.
func BenchmarkAppendPayload(b *testing.B) {
	packets := make([]Packet, 10)
	for i := range packets {
		packets[i] = Packet{Type: PacketMessage, Data: benchMsg}
	}
	for _, proto := range []int{Protocol3, Protocol4} {
		b.Run("EIO"+strconv.Itoa(proto), func(b *testing.B) {
			buf := make([]byte, 0, 2048)
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendPayload(buf[:0], proto, packets)
			}
		})
	}
}

// BenchmarkDecodePayload: a polling body of ten messages.
func BenchmarkDecodePayload(b *testing.B) {
	packets := make([]Packet, 10)
	for i := range packets {
		packets[i] = Packet{Type: PacketMessage, Data: benchMsg}
	}
	for _, proto := range []int{Protocol3, Protocol4} {
		body := AppendPayload(nil, proto, packets)
		b.Run("EIO"+strconv.Itoa(proto), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodePayload(proto, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSessionSend: Send of one message on an open WebSocket session,
// through its writer to a real client that reads it; allocations are the
// server's and the reading client's together.
func BenchmarkSessionSend(b *testing.B) {
	f := newFixture(&testing.T{}, &Server{})
	defer func() {
		f.hs.Close()
		f.srv.Close()
	}()
	c, _, err := websocket.DefaultDialer.Dial("ws"+f.hs.URL[4:]+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s := <-f.sess
	if _, _, err := c.ReadMessage(); err != nil { // open packet
		b.Fatal(err)
	}
	var got atomic.Int64
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			if _, _, err := c.NextReader(); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	sent := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		// Stay within the queue bound: the writer is slower than Send.
		for sent-got.Load() > DefaultMaxQueueFrames/2 {
			runtime.Gosched()
		}
		if err := s.Send(benchMsg); err != nil {
			b.Fatal(err)
		}
		sent++
	}
	b.StopTimer()
	s.Close(nil)
	<-read
}

// BenchmarkIdleSessions: memory held per idle WebSocket session, measured
// as the growth of heap and goroutine stacks across 1000 open sessions. The
// clients run in the same process, so the figure is of both ends (gorilla's
// client side: its buffers and one reader goroutine are not counted here,
// the clients do not read); the allocations per op are of the handshakes.
func BenchmarkIdleSessions(b *testing.B) {
	const n = 1000
	for b.Loop() {
		b.StopTimer()
		f := newFixture(&testing.T{}, &Server{PingInterval: time.Hour, PingTimeout: time.Hour})
		f.sess = make(chan *Session, n)
		conns := make([]*websocket.Conn, 0, n)
		dialer := websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		for range n {
			c, _, err := dialer.Dial("ws"+f.hs.URL[4:]+"/socket.io/?EIO=4&transport=websocket", http.Header{})
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		for range n {
			<-f.sess
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "bytes/session")
		for _, c := range conns {
			c.Close()
		}
		f.hs.Close()
		f.srv.Close()
		b.StartTimer()
	}
}
