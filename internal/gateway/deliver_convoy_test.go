package gateway

import (
	"encoding/json"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/store"
)

// A Deliver that comes to a resumable socket whose state another Deliver
// holds goes on to the room's other sockets and comes back to it, rather
// than waiting there: two broadcasts to one room otherwise fall into step,
// the second waiting at every socket for the first (a lock convoy). Two
// sockets' states are held here, as by concurrent Delivers; every other
// socket must get the message while they are, and the two once let go,
// each with its next seq, the message counted as delivered to all.
func TestDeliverPassesSocketsAnotherDeliverHolds(t *testing.T) {
	const n = 50
	h, clients := resumableHub(t, n, 1, 1<<20)
	for _, c := range clients { // their joined notices
		c.mu.Lock()
		c.queue, c.queuedBytes = c.queue[:0], 0
		c.mu.Unlock()
	}
	held := map[*client]bool{clients[7]: true, clients[31]: true}
	for c := range held {
		c.rs.mu.Lock()
	}
	type result struct{ delivered, dropped int64 }
	done := make(chan result, 1)
	go func() {
		delivered, dropped := h.deliver(delivery{rooms: []string{"r0"}, event: "chat", data: json.RawMessage(`{"n":1}`)})
		done <- result{delivered, dropped}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		missing := 0
		for _, c := range clients {
			if !held[c] && queuedFrames(c) != 1 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			for c := range held {
				c.rs.mu.Unlock()
			}
			<-done
			t.Fatalf("%d of the %d sockets not held got no message while 2 were held by another Deliver", missing, n-len(held))
		}
		time.Sleep(time.Millisecond)
	}
	for c := range held {
		if queuedFrames(c) != 0 {
			t.Fatalf("socket %s got the message while its state was held", c.id)
		}
		c.rs.mu.Unlock()
	}
	select {
	case r := <-done:
		if r.delivered != n || r.dropped != 0 {
			t.Fatalf("delivered %d, dropped %d; want %d, 0", r.delivered, r.dropped, n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Deliver did not return once the held sockets were let go")
	}
	for _, c := range clients {
		c.mu.Lock()
		q := c.queue
		c.mu.Unlock()
		if len(q) != 1 || q[0].seq != 1 {
			t.Fatalf("socket %s queued %v, want its message with seq 1", c.id, q)
		}
	}
	var sum int64
	for _, c := range clients {
		sum += c.rs.logBytes
	}
	if got := clients[0].rs.g.resumes.bytes.Load(); got != sum {
		t.Fatalf("the gateway counts %d logged bytes, its sockets' logs %d", got, sum)
	}
}

// BenchmarkHubDeliverConcurrent is 16 Delivers in flight at once to one
// room of 1,000 sockets (writers held), as the fan-out scenario's 16
// broadcasters make them: time per message to the room. Native sockets
// share only their queues' locks; resumable ones also their states'
// (resumable.mu), which a Deliver that waited for one held in step with
// another ever after (a lock convoy).
func BenchmarkHubDeliverConcurrent(b *testing.B) {
	b.Run("native", func(b *testing.B) {
		h := newHub()
		h.setOpen(true)
		clients := make([]*client, 1000)
		for i := range clients {
			c := newClient(store.NewSocketID("bench", 1), nil, 1<<30, 1, time.Second, func() bool { return true })
			clients[i] = c
			h.add(c)
			h.apply(c.id, "r0", true, 1)
		}
		benchDeliverConcurrent(b, h)
	})
	b.Run("resumable", func(b *testing.B) {
		h, _ := resumableHub(b, 1000, 1, 64<<10)
		benchDeliverConcurrent(b, h)
	})
}

// benchDeliverConcurrent delivers b.N messages to room r0 of h from 16
// goroutines. The queues are not emptied: 32 bytes a frame, held.
func benchDeliverConcurrent(b *testing.B, h *hub) {
	d := delivery{rooms: []string{"r0"}, event: "chat", data: json.RawMessage(`{"text":"hello"}`)}
	b.ReportAllocs()
	b.SetParallelism(16 / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.deliver(d)
		}
	})
}

// queuedFrames is how many frames c holds queued, not yet taken by a writer.
func queuedFrames(c *client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// tcpPair connects to ln and returns both ends, closed when tb ends.
func tcpPair(tb testing.TB, ln net.Listener) (peer, server net.Conn) {
	tb.Helper()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		peer.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { peer.Close(); server.Close() })
	return peer, server
}
