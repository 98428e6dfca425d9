package gateway

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/store"
)

// BenchmarkHubDeliverNative is the fan-out of one Broadcast to two rooms of
// 500 native sockets each, up to their queues (writers held, as before
// registration, so no connection is needed): the hub's and enqueue's cost
// per socket per message, which Socket.IO members must not add to.
func BenchmarkHubDeliverNative(b *testing.B) {
	h := newHub()
	h.setOpen(true)
	const n = 1000
	clients := make([]*client, n)
	for i := range clients {
		c := newClient(store.NewSocketID("bench", 1), nil, 1<<30, 1, time.Second, func() bool { return true })
		clients[i] = c
		h.add(c)
		h.apply(c.id, "r"+strconv.Itoa(i%2), true, 1)
	}
	benchDeliver(b, h, clients)
}

// benchDeliver delivers one message to rooms r0 and r1 of h per iteration,
// emptying the clients' queues every 64 messages, off the clock.
func benchDeliver(b *testing.B, h *hub, clients []*client) {
	d := delivery{rooms: []string{"r0", "r1"}, event: "chat", data: json.RawMessage(`{"text":"hello"}`)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%64 == 0 {
			b.StopTimer()
			for _, c := range clients {
				c.mu.Lock()
				c.queue, c.queuedBytes = c.queue[:0], 0
				c.mu.Unlock()
			}
			b.StartTimer()
		}
		h.deliver(d)
	}
}
