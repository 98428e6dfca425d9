package gateway

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A fan-out starts the writers of its sockets only once it has queued the
// message to every one: the messages concurrent Broadcasts queue to a
// socket meanwhile go out with it in one batch (one writev), rather than
// a writer woken, a lease check and a system call each. Here one socket's
// state is held, as by another Deliver, so that two Deliveries to the room
// stay unfinished; every other socket must hold both messages unwritten
// until they finish, then get both, in order, each once, numbered 1 and 2.
func TestFanoutWritesConcurrentMessagesInOneBatch(t *testing.T) {
	const n = 8
	h, clients := resumableHub(t, n, 1, 1<<20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make([]*bufio.Reader, n)
	for i, c := range clients {
		peer, server := tcpPair(t, ln)
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		c.mu.Lock()
		c.nc, c.queue, c.queuedBytes = server, nil, 0 // their joined notices dropped
		c.mu.Unlock()
		c.release()
		peers[i] = bufio.NewReader(peer)
	}
	held := clients[n-1]
	held.rs.mu.Lock()
	// The second Deliver starts once the first has queued its message to
	// every other socket and waits for the held one alone: two Deliveries
	// meeting at a socket pass each other, and the one put off there could
	// come back to it only after the held socket, leaving it one message.
	done := make(chan struct{}, 2)
	for i := range 2 {
		go func() {
			h.deliver(delivery{rooms: []string{"r0"}, event: "chat", data: json.RawMessage(`{"n":` + string(rune('1'+i)) + `}`)})
			done <- struct{}{}
		}()
		waitQueued(t, clients[:n-1], i+1, func() { held.rs.mu.Unlock() })
	}
	// A writer started early would take its queue away within this pause.
	time.Sleep(50 * time.Millisecond)
	for i, c := range clients[:n-1] {
		if q := queuedFrames(c); q != 2 {
			held.rs.mu.Unlock()
			t.Fatalf("socket %d: %d messages left queued before the Deliveries finished, want 2 (a writer ran early)", i, q)
		}
	}
	held.rs.mu.Unlock()
	for range 2 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Deliver did not return once the held socket was let go")
		}
	}
	for i, r := range peers {
		var seqs []uint64
		for range 2 {
			msg := readTextFrame(t, r)
			var f struct {
				Seq uint64 `json:"seq"`
			}
			if err := json.Unmarshal(msg, &f); err != nil {
				t.Fatalf("socket %d: %v in %s", i, err, msg)
			}
			seqs = append(seqs, f.Seq)
		}
		if seqs[0] != 1 || seqs[1] != 2 {
			t.Fatalf("socket %d got seqs %v, want [1 2]", i, seqs)
		}
	}
	// No writer may outlive the test: closing its connection under it would
	// end it in writeClose, and these clients have no WebSocket to close.
	waitFor(t, 5*time.Second, "every writer done", func() bool {
		for _, c := range clients {
			c.mu.Lock()
			writing := c.writing
			c.mu.Unlock()
			if writing {
				return false
			}
		}
		return true
	})
}

// waitQueued waits for every one of clients to hold want frames unwritten;
// it calls unhold before failing.
func waitQueued(t *testing.T, clients []*client, want int, unhold func()) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		have := 0
		for _, c := range clients {
			if queuedFrames(c) == want {
				have++
			}
		}
		if have == len(clients) {
			return
		}
		if time.Now().After(deadline) {
			unhold()
			t.Fatalf("%d of %d sockets hold %d messages unwritten while the Deliveries are unfinished", have, len(clients), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// readTextFrame reads one unmasked text frame of under 126 bytes.
func readTextFrame(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(r, hdr); err != nil {
		t.Fatal(err)
	}
	if int(hdr[0]&0x0f) != websocket.TextMessage || hdr[1] >= 126 {
		t.Fatalf("unexpected frame header % x", hdr)
	}
	msg := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, msg); err != nil {
		t.Fatal(err)
	}
	return msg
}

// startWriters pools the array that held a fan-out's writers, for the next
// fan-out to reuse, and not the outbound with it.
func TestStartWritersPoolsTheArray(t *testing.T) {
	reused := false
	for range 20 { // sync.Pool may drop what it is given (always under -race, at random)
		o := &outbound{starts: make([]*client, 0, 64)}
		o.startWriters()
		got := startsPool.Get().(*[]*client)
		if got == &o.starts {
			t.Fatal("the pool holds the outbound's own field: it keeps the outbound and its message alive")
		}
		if cap(*got) == 64 {
			reused = true
			break
		}
	}
	if !reused {
		t.Fatal("no fan-out's array came back from the pool")
	}
}
