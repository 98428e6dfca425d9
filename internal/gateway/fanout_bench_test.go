package gateway

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
)

// BenchmarkFanoutLoopback is the gateway's side of a fan-out, end to end
// but for etcd: concurrent Broadcasts (fanoutPublishers of them) to one room
// of sockets on real loopback TCP connections, through the hub, the send
// queues and the writers (which check a session's lease proof before each
// batch, as a gateway's do), at most fanoutBacklog messages per socket
// published and not yet read, as membership-bench's peer scenario runs it.
// Besides ns/op (one op: one message to every socket of the room) it
// reports cpu-ns/msg: the process's CPU (user + system, getrusage) per
// message delivered to one socket, the peer readers' included; on a shared
// machine that figure holds better than a rate.
func BenchmarkFanoutLoopback(b *testing.B) {
	for _, n := range []int{200, 2000} {
		b.Run("sockets="+strconv.Itoa(n), func(b *testing.B) { benchFanoutLoopback(b, n) })
	}
}

const (
	fanoutPublishers = 16
	fanoutBacklog    = 32
)

func benchFanoutLoopback(b *testing.B, n int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	sess := newSession(context.Background(), []clientv3.LeaseID{1})
	defer sess.cancel()
	sess.renewed(0, monoNow(), time.Hour)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	// Resumable sockets, as the gateway binary makes them (--resume-window
	// 2m): each message is numbered and logged.
	g, err := New(Config{ID: "bench", AdvertiseAddr: "127.0.0.1:1", ResumeWindow: time.Minute, ResumeBufferBytes: 64 << 10}, cli)
	if err != nil {
		b.Fatal(err)
	}
	h := g.hub
	h.setOpen(true)
	d := delivery{rooms: []string{"r"}, event: "chat", data: json.RawMessage(`{"text":"hello, room"}`)}

	var received atomic.Int64 // frames read by the peers
	var readers sync.WaitGroup
	var conns []net.Conn
	var clients []*client
	defer func() {
		// Writers gone first: one failing on a closed connection would
		// write a close frame through a websocket.Conn these have not.
		for _, c := range clients {
			for {
				c.mu.Lock()
				w := c.writing
				c.mu.Unlock()
				if !w {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		for _, c := range conns {
			c.Close()
		}
		readers.Wait()
	}()
	for i := 0; i < n; i++ {
		peer, server := tcpPair(b, ln)
		conns = append(conns, peer, server)
		sid := store.NewSocketID("bench", 1)
		c := newClient(sid, nil, 256, 1, 10*time.Second, sess.alive)
		c.rs = g.newResumable(sess, sid, store.SocketRecord{})
		c.rs.conn, c.rs.member = c, c
		c.nc = server
		c.held = false
		clients = append(clients, c)
		h.add(c)
		h.apply(c.id, "r", true, 1)
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 32<<10)
			var fr frameCounter
			for {
				k, err := peer.Read(buf)
				received.Add(fr.count(buf[:k]))
				if err != nil {
					return
				}
			}
		}()
	}
	// The joined frames, off the clock.
	for received.Load() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	received.Store(0)

	var sent atomic.Int64
	var next atomic.Int64
	cpu0 := cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range fanoutPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				for sent.Load()*int64(n)-received.Load() > fanoutBacklog*int64(n) {
					time.Sleep(50 * time.Microsecond)
				}
				if _, dropped := h.deliver(d); dropped != 0 {
					b.Errorf("%d sockets dropped a message", dropped)
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	want := int64(b.N) * int64(n)
	for received.Load() < want {
		time.Sleep(100 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(int64(b.N)*int64(n)), "cpu-ns/msg")
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// frameCounter counts the unmasked frames of a server's stream, read in
// pieces of any size.
type frameCounter struct {
	hdr  []byte // a header begun in the last piece
	left int    // payload bytes of the current frame still to come
}

func (f *frameCounter) count(p []byte) (frames int64) {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(f.left, len(p))
			f.left -= k
			p = p[k:]
			continue
		}
		f.hdr = append(f.hdr, p[0])
		p = p[1:]
		if len(f.hdr) < 2 {
			continue
		}
		need := 2
		switch f.hdr[1] & 0x7f {
		case 126:
			need = 4
		case 127:
			need = 10
		}
		if len(f.hdr) < need {
			continue
		}
		switch need {
		case 2:
			f.left = int(f.hdr[1] & 0x7f)
		case 4:
			f.left = int(binary.BigEndian.Uint16(f.hdr[2:]))
		default:
			f.left = int(binary.BigEndian.Uint64(f.hdr[2:]))
		}
		f.hdr = f.hdr[:0]
		frames++
	}
	return frames
}
