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
// else is malformed. withSeq numbers a message frame without changing the
// rest of it.
func TestResumeTokenAndSeqFrame(t *testing.T) {
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

	frame := messageFrame("fun", "chat", json.RawMessage(`{"a":[1,2]}`))
	var got map[string]any
	if err := json.Unmarshal(withSeq(frame, 42), &got); err != nil {
		t.Fatalf("withSeq: %v: %s", err, withSeq(frame, 42))
	}
	if got["seq"] != 42.0 || got["type"] != "message" || got["room"] != "fun" || got["event"] != "chat" {
		t.Fatalf("withSeq gave %v", got)
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

// BenchmarkHubDeliverNativeResumable is BenchmarkHubDeliverNative with
// resumable sockets: each message also gets its seq spliced in (a copy of
// the frame per socket) and an entry in the socket's log, which is kept at
// its bound (64 KiB here, to keep the benchmark's memory small) by trimming.
func BenchmarkHubDeliverNativeResumable(b *testing.B) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	g, err := New(Config{ID: "bench", AdvertiseAddr: "127.0.0.1:1", ResumeWindow: time.Minute, ResumeBufferBytes: 64 << 10}, cli)
	if err != nil {
		b.Fatal(err)
	}
	h := g.hub
	h.setOpen(true)
	const n = 1000
	clients := make([]*client, n)
	for i := range clients {
		sid := store.NewSocketID("bench", 1)
		c := newClient(sid, nil, 1<<30, 1, time.Second, func() bool { return true })
		c.rs = g.newResumable(nil, sid, store.SocketRecord{})
		c.rs.conn, c.rs.member = c, c
		clients[i] = c
		h.add(c)
		h.apply(c.id, "r"+strconv.Itoa(i%2), true)
	}
	benchDeliver(b, h, clients)
}
