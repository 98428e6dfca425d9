package gateway

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
)

// A token names its issuer and socket and carries the secret; anything
// else is malformed.
func TestResumeToken(t *testing.T) {
	g := &Gateway{cfg: Config{ID: "gw-1"}, resumes: newResumes()}
	sid := store.NewSocketID("gw-1", 0x1234)
	r := &resumable{sid: sid, secret: newSecret()}
	tok := g.tokenLocked(r)
	p, err := parseToken(tok)
	if err != nil || p.issuer != "gw-1" || p.incarnation != g.resumes.incarnation || p.socket != sid.String() || string(p.secret) != string(r.secret) {
		t.Fatalf("parseToken(%q) = %+v, %v", tok, p, err)
	}
	parts := strings.SplitN(tok, ".", 5)
	for _, bad := range []string{"", "r1", "r2" + tok[2:], strings.Join(append([]string{"r1", "gw-1", "x", "short"}, parts[4]), "."), strings.Join(parts[:4], ".")} {
		if _, err := parseToken(bad); err == nil {
			t.Errorf("parseToken(%q) accepted", bad)
		}
	}
}

// The writer lays out a message frame queued with a seq as that frame with
// "seq":N first after its type, byte for byte, its length in the WebSocket
// header counting the seq (across the 125/126-byte header boundary too), and
// leaves the shared frame untouched; a frame without a seq goes out as it is.
func TestSeqSplicedByWriter(t *testing.T) {
	small := messageFrame("fun", "chat", json.RawMessage(`{"a":[1,2]}`))
	// 125 bytes with a one-digit seq in (a 2-byte length), 126 with two digits
	// (a 4-byte one).
	pad := 125 - len(messageFrame("r", "e", json.RawMessage(`""`))) - len(`"seq":1,`)
	border := messageFrame("r", "e", json.RawMessage(`"`+strings.Repeat("x", pad)+`"`))
	control := controlFrame(frameJoined, "fun")
	frames := []outFrame{
		{b: small, seq: 1}, {b: small, seq: 42}, {b: control}, {b: border, seq: 9}, {b: border, seq: 10},
		{b: small, seq: 99}, {b: small, seq: 100}, {b: small, seq: ^uint64(0)},
	}
	keep := string(small) + string(border)
	_, bufs := appendFrames(nil, nil, frames)
	if len(bufs) != 2*len(frames) {
		t.Fatalf("%d buffers for %d frames, want two each", len(bufs), len(frames))
	}
	var wire []byte
	for _, b := range bufs {
		wire = append(wire, b...)
	}
	for i, f := range frames {
		want := string(f.b)
		if f.seq != 0 {
			want = `{"type":"message","seq":` + strconv.FormatUint(f.seq, 10) + `,` + string(f.b[len(messageHead):])
		}
		if len(wire) < 2 || wire[0] != 0x81 {
			t.Fatalf("frame %d: header % x, want a final text frame", i, wire[:min(2, len(wire))])
		}
		n, hl := int(wire[1]&0x7f), 2
		if n == 126 {
			n, hl = int(wire[2])<<8|int(wire[3]), 4
		}
		if n != len(want) || n != f.size() {
			t.Fatalf("frame %d: header says %d bytes, want %d (size %d)", i, n, len(want), f.size())
		}
		if got := string(wire[hl : hl+n]); got != want {
			t.Fatalf("frame %d: wrote %s, want %s", i, got, want)
		}
		var m map[string]any
		if err := json.Unmarshal(wire[hl:hl+n], &m); err != nil {
			t.Fatalf("frame %d: %v: %s", i, err, wire[hl:hl+n])
		}
		wire = wire[hl+n:]
	}
	if len(wire) != 0 {
		t.Fatalf("%d bytes after the last frame", len(wire))
	}
	if string(small)+string(border) != keep {
		t.Fatal("the shared frames were written to")
	}
}

// Resume parameters: none, or a token with an optional decimal last_seq.
func TestParseResumeQuery(t *testing.T) {
	for q, want := range map[string]string{
		"":                           "none",
		"resume_token=t":             "t 0",
		"resume_token=t&last_seq=7":  "t 7",
		"last_seq=7":                 "error",
		"resume_token=t&last_seq=-1": "error",
		"resume_token=t&last_seq=x":  "error",
	} {
		v, _ := url.ParseQuery(q)
		r, err := parseResumeQuery(v)
		got := "none"
		switch {
		case err != nil:
			got = "error"
		case r != nil:
			got = r.token + " " + strconv.FormatUint(r.lastSeq, 10)
		}
		if got != want {
			t.Errorf("%q: %s, want %s", q, got, want)
		}
	}
}

// Numbering a message costs a resumable socket no allocation of its own: the
// room's one frame is queued and logged by reference, its seq put in by the
// writer, and a log kept at its bound trims without reallocating. So a
// message to 200 resumable sockets of a room allocates a few objects in all
// (its frame, the hub's outbound), as for sockets that are not resumable;
// the gateway's count of logged bytes stays the sum of the logs'.
func TestDeliverResumableAllocatesPerMessage(t *testing.T) {
	const n = 200
	h, clients := resumableHub(t, n, 1, 4<<10)
	d := delivery{rooms: []string{"r0"}, event: "chat", data: json.RawMessage(`{"text":"hello"}`)}
	drain := func() {
		for _, c := range clients {
			c.mu.Lock()
			c.queue, c.queuedBytes = c.queue[:0], 0
			c.mu.Unlock()
		}
	}
	// Fill every log to its bound, so that its ring has its steady size.
	for i := range 200 {
		if i%32 == 0 {
			drain()
		}
		h.deliver(d)
	}
	allocs := testing.AllocsPerRun(100, func() {
		drain()
		if got, _ := h.deliver(d); got != n {
			t.Fatalf("delivered to %d sockets, want %d", got, n)
		}
	})
	if allocs > n/20 {
		t.Fatalf("a message to %d resumable sockets allocated %.0f times, want a few (not one or more per socket)", n, allocs)
	}
	var sum int64
	for _, c := range clients {
		if l := c.rs.log.len(); l < 2 || c.rs.logBytes > 4<<10 {
			t.Fatalf("socket %s logs %d frames in %d bytes, want several, within 4 KiB", c.id, l, c.rs.logBytes)
		}
		sum += c.rs.logBytes
	}
	// gateway_resume_buffered_bytes, changed by each delivery's net change.
	if got := clients[0].rs.g.resumes.bytes.Load(); got != sum {
		t.Fatalf("the gateway counts %d logged bytes, its sockets' logs %d", got, sum)
	}
}

// resumableHub is an open hub of a gateway with resumable sockets (window a
// minute, logs bounded at bound bytes), n attached sockets whose writers
// are held (as before registration, so no connection is needed), socket i
// a member of room "r{i%rooms}". No etcd is reached: only delivery is used.
func resumableHub(tb testing.TB, n, rooms int, bound int64) (*hub, []*client) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	g, err := New(Config{ID: "bench", AdvertiseAddr: "127.0.0.1:1", ResumeWindow: time.Minute, ResumeBufferBytes: bound}, cli)
	if err != nil {
		tb.Fatal(err)
	}
	h := g.hub
	h.setOpen(true)
	clients := make([]*client, n)
	for i := range clients {
		sid := store.NewSocketID("bench", 1)
		c := newClient(sid, nil, 1<<30, 1, time.Second, func() bool { return true })
		c.rs = g.newResumable(nil, sid, store.SocketRecord{})
		c.rs.conn, c.rs.member = c, c
		clients[i] = c
		h.add(c)
		h.apply(c.id, "r"+strconv.Itoa(i%rooms), true, 1)
	}
	return h, clients
}

// BenchmarkHubDeliverNativeResumable is BenchmarkHubDeliverNative with
// resumable sockets: each message also gets a seq and an entry in the
// socket's log, which is kept at its bound (64 KiB here, to keep the
// benchmark's memory small) by trimming. The seq costs no copy of the frame
// (the writer splices it in), so this should stay close to the native
// benchmark, in time and in allocations per message.
func BenchmarkHubDeliverNativeResumable(b *testing.B) {
	h, clients := resumableHub(b, 1000, 2, 64<<10)
	benchDeliver(b, h, clients)
}
