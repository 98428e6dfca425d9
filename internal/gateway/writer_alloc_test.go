package gateway

import (
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/store"
)

// A writer's batch of numbered frames (a resumable socket's) costs no
// allocation once the socket has written a batch that size: the writev's
// headers (each with its seq spliced in) and buffers, and the send queue,
// are reused rather than grown afresh from nothing for every batch. Over
// a real loopback TCP connection, as the fan-out writes them.
func TestWriterBatchReusesItsBuffers(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops pooled items at random under the race detector")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer server.Close()

	c := newClient(store.NewSocketID("gw", 1), nil, 1<<20, 1, 10*time.Second, func() bool { return true })
	c.nc = server
	c.held = false
	frame := messageFrame("room", "chat", json.RawMessage(`{"text":"hello"}`))
	const batch = 32
	seq := uint64(1_000_000) // seven digits: every frame in the runs below is the same size
	size := 0
	for i := range batch {
		size += frameHeaderLen(outFrame{b: frame, seq: seq + uint64(i)}.size()) + outFrame{b: frame, seq: seq + uint64(i)}.size()
	}
	buf := make([]byte, size)
	round := func() {
		// Queue the whole batch before the writer may take any of it.
		c.mu.Lock()
		c.held = true
		c.mu.Unlock()
		for range batch {
			seq++
			if !c.enqueueSeq(frame, seq) {
				t.Fatal("frame not queued")
			}
		}
		c.release()
		if _, err := io.ReadFull(peer, buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		round()
	}
	// The writer may still be between its write and its exit: wait for it,
	// so that no round overlaps another's writer.
	waitIdle := func() {
		for {
			c.mu.Lock()
			w := c.writing
			c.mu.Unlock()
			if !w {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitIdle()
	allocs := testing.AllocsPerRun(50, func() { round(); waitIdle() })
	// Growing the writev's headers, its buffers and the queue from nothing
	// takes about 20 allocations for 32 frames; reusing them, none, and a
	// stray one of the runtime's is allowed for.
	if allocs > 2 {
		t.Fatalf("%.1f allocations per batch of %d numbered frames, want at most 2", allocs, batch)
	}
	if c.pendingBytes() != 0 {
		t.Fatalf("%d bytes still counted as queued", c.pendingBytes())
	}
}
