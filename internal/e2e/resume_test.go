package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
	"github.com/socketrooms/membership/internal/wsauth"
)

// Connection state recovery on one gateway (internal/gateway/resume.go):
// real sockets, a real gateway and membership-server, real etcd.

func startResumeGateway(t *testing.T, e *testutil.Etcd, cfg gateway.Config) *stacktest.Gateway {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "gw1"
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	return stacktest.StartGatewayVia(t, e.Endpoint, cfg)
}

// resumeStack starts etcd, a membership-server and a gateway configured by
// cfg (its id gw1 by default).
func resumeStack(t *testing.T, cfg gateway.Config) (membershipv1.MembershipServiceClient, *stacktest.Gateway) {
	t.Helper()
	e := testutil.StartEtcd(t)
	return startMembershipServer(t, e), startResumeGateway(t, e, cfg)
}

// resumeURL is the URL that resumes s after its last received seq.
func resumeURL(g *stacktest.Gateway, token string, lastSeq uint64) string {
	return g.WSURL + "?resume_token=" + url.QueryEscape(token) + "&last_seq=" + strconv.FormatUint(lastSeq, 10)
}

// cut closes the client's TCP connection without a close frame.
func cut(s *sock) { s.Conn.UnderlyingConn().Close() }

// drain returns the frames s received before its connection ended.
func drain(t *testing.T, s *sock) []stacktest.Frame {
	t.Helper()
	var out []stacktest.Frame
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-s.Frames:
			if !ok {
				return out
			}
			out = append(out, f)
		case <-timeout:
			t.Fatal("the cut connection's reader did not end")
		}
	}
}

func bcast(t *testing.T, api membershipv1.MembershipServiceClient, room, data string) {
	t.Helper()
	if _, err := api.Broadcast(context.Background(), &membershipv1.BroadcastRequest{Rooms: []string{room}, Event: "e", Data: text(data)}); err != nil {
		t.Fatal(err)
	}
}

func joinRoom(t *testing.T, api membershipv1.MembershipServiceClient, id, room string) {
	t.Helper()
	if _, err := api.Join(context.Background(), &membershipv1.JoinRequest{SocketId: id, Room: room}); err != nil {
		t.Fatalf("join %s to %s: %v", id, room, err)
	}
}

// isDetached reports whether GetSocket shows socket id detached.
func isDetached(api membershipv1.MembershipServiceClient, id string) bool {
	resp, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: id})
	return err == nil && resp.Socket.GetDetachedSince() != nil
}

// detachedSocket dials g, joins the socket to room, cuts its connection and
// waits until GetSocket shows it detached.
func detachedSocket(t *testing.T, api membershipv1.MembershipServiceClient, g *stacktest.Gateway, room string) *sock {
	t.Helper()
	s := dial(t, g.WSURL)
	joinRoom(t, api, s.ID, room)
	s.Expect("joined", room)
	cut(s)
	drain(t, s)
	waitFor(t, 10*time.Second, "the socket detached", func() bool { return isDetached(api, s.ID) })
	return s
}

// expectMessage reads the next frame and checks it is message data with seq.
func expectMessage(t *testing.T, s *sock, data string, seq uint64) {
	t.Helper()
	f := s.Next(5 * time.Second)
	if f.Type != "message" || !strings.Contains(string(f.Data), `"`+data+`"`) || f.Seq != seq {
		t.Fatalf("got %+v (data %s), want message %q with seq %d", f, f.Data, data, seq)
	}
}

func wantResumed(t *testing.T, s *sock, id string, rooms ...string) {
	t.Helper()
	c := s.Connected
	if c.Resumed == nil || !*c.Resumed || c.SocketID != id || c.ResumeToken == "" || c.ResumeError != "" {
		t.Fatalf("connected frame %+v, want socket %s resumed with a new token", c, id)
	}
	if fmt.Sprint(c.Rooms) != fmt.Sprint(rooms) {
		t.Fatalf("resumed rooms %v, want %v", c.Rooms, rooms)
	}
}

func wantNotResumed(t *testing.T, s *sock, old, resumeErr string) {
	t.Helper()
	c := s.Connected
	if c.Resumed == nil || *c.Resumed || c.ResumeError != resumeErr || c.SocketID == old || c.ResumeToken == "" {
		t.Fatalf("connected frame %+v, want a new socket with resumed false and resume_error %s", c, resumeErr)
	}
}

// The TCP connection is cut (no close frame) while 20 Broadcasts are sent:
// the socket resumes with last_seq and gets exactly the 20 messages, in
// order, each once (those that reached the old connection before the cut
// and the rest replayed), then live ones. Meanwhile GetSocket and
// ListMembers show it detached, and the membership stream says nothing.
func TestResumeReplaysMessagesMissedAcrossACut(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: time.Minute})
	ctx := context.Background()

	s := dial(t, g.WSURL)
	token := s.Connected.ResumeToken
	if token == "" || s.Connected.Resumed != nil {
		t.Fatalf("connected frame %+v, want a resume_token and no resumed", s.Connected)
	}
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	bcast(t, api, "r", "warm")
	expectMessage(t, s, "warm", 1)

	stream, err := api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			if i == 5 {
				cut(s)
			}
			bcast(t, api, "r", fmt.Sprint("m", i))
		}
	}()
	got := drain(t, s)
	wg.Wait()
	last := uint64(1)
	for _, f := range got {
		if f.Type == "message" {
			last = f.Seq
		}
	}

	waitFor(t, 10*time.Second, "GetSocket to show the socket detached", func() bool { return isDetached(api, s.ID) })
	ml, err := api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "r"})
	if err != nil || len(ml.Members) != 1 || ml.Members[0].GetDetachedSince() == nil {
		t.Fatalf("ListMembers = %v, %v; want the one socket, detached", ml, err)
	}

	if n := metric(t, g, "gateway_detached_sockets"); n != 1 {
		t.Errorf("gateway_detached_sockets %v while detached, want 1", n)
	}
	if n := metric(t, g, "gateway_resume_buffered_bytes"); n <= 0 {
		t.Errorf("gateway_resume_buffered_bytes %v while detached, want > 0", n)
	}
	r := dial(t, resumeURL(g, token, last))
	wantResumed(t, r, s.ID, "r")
	if n := metric(t, g, `gateway_resumes_total{outcome="resumed"}`); n != 1 {
		t.Errorf(`gateway_resumes_total{outcome="resumed"} %v, want 1`, n)
	}
	if n := metric(t, g, "gateway_detached_sockets"); n != 0 {
		t.Errorf("gateway_detached_sockets %v after the resume, want 0", n)
	}
	for seq := last + 1; seq <= 21; seq++ {
		expectMessage(t, r, fmt.Sprint("m", seq-2), seq)
	}
	bcast(t, api, "r", "live")
	expectMessage(t, r, "live", 22)
	r.ExpectNothing(200 * time.Millisecond)
	waitFor(t, 10*time.Second, "GetSocket to show the socket attached", func() bool {
		resp, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
		return err == nil && resp.Socket.GetDetachedSince() == nil
	})

	// Detaching and resuming emitted nothing: the first event the stream
	// has for the socket is the join that follows.
	joinRoom(t, api, s.ID, "r2")
	r.Expect("joined", "r2")
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range m.GetEvents().GetEvents() {
			if ev.GetSocketId() != s.ID {
				continue
			}
			if ev.GetType() != membershipv1.EventType_EVENT_TYPE_JOINED || ev.GetRoom() != "r2" {
				t.Fatalf("membership stream event %v for the socket, want nothing before its join to r2", ev)
			}
			return
		}
	}
}

// Join and Leave of a detached socket succeed and apply to its rooms: the
// resumed connected frame lists its rooms as they are, and Broadcasts to the
// room it joined while detached were kept for it.
func TestResumeAppliesJoinAndLeaveWhileDetached(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: time.Minute})
	ctx := context.Background()

	s := detachedSocket(t, api, g, "a")
	joinRoom(t, api, s.ID, "b")
	if _, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: "a"}); err != nil {
		t.Fatal(err)
	}
	bcast(t, api, "a", "to-a") // left: not for it
	bcast(t, api, "b", "to-b")

	r := dial(t, resumeURL(g, s.Connected.ResumeToken, 0))
	wantResumed(t, r, s.ID, "b")
	expectMessage(t, r, "to-b", 1)
	bcast(t, api, "b", "live")
	expectMessage(t, r, "live", 2)
	resp, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
	if err != nil || fmt.Sprint(resp.Socket.Rooms) != "[b]" {
		t.Fatalf("GetSocket = %v, %v; want rooms [b]", resp, err)
	}
}

// A socket not resumed within the window ends as a closed one: its keys go,
// and a late resume gets EXPIRED and a new socket.
func TestResumeWindowExpires(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: 500 * time.Millisecond})
	ctx := context.Background()

	s := dial(t, g.WSURL)
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	cut(s)
	drain(t, s)
	waitFor(t, 10*time.Second, "the socket's keys to go", func() bool {
		_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
		return err != nil && len(members(t, api, "r")) == 0
	})
	_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
	r := dial(t, resumeURL(g, s.Connected.ResumeToken, 0))
	wantNotResumed(t, r, s.ID, "EXPIRED")
}

// A detached socket whose missed messages pass --resume-buffer-bytes ends
// at once, its keys gone: a resume gets TOO_FAR_BEHIND.
func TestResumeBufferOverflow(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: time.Minute, ResumeBufferBytes: 1000})

	s := detachedSocket(t, api, g, "r")
	for i := range 20 {
		bcast(t, api, "r", fmt.Sprint(strings.Repeat("x", 100), i)) // ~150 bytes a frame
	}
	waitFor(t, 10*time.Second, "the socket's keys to go", func() bool {
		return len(members(t, api, "r")) == 0
	})
	r := dial(t, resumeURL(g, s.Connected.ResumeToken, 0))
	wantNotResumed(t, r, s.ID, "TOO_FAR_BEHIND")
}

// Tokens that are forged, already used, or presented by another user
// resume nothing: UNKNOWN, and a new socket. The socket they named is left
// as it was, and its own token still resumes it.
func TestResumeRefusesForgedReusedAndCrossUserTokens(t *testing.T) {
	key, keyFile := jwtKey(t)
	v, err := wsauth.Load("", keyFile, "", "chat")
	if err != nil {
		t.Fatal(err)
	}
	api, g := resumeStack(t, gateway.Config{ResumeWindow: time.Minute, Authenticate: v.Authenticate})
	as := func(user string) http.Header {
		return http.Header{"Authorization": {"Bearer " + signToken(t, key, user, time.Now().Add(time.Hour))}}
	}
	dialAs := func(user, u string) *sock { return stacktest.DialWith(t, u, as(user)) }

	s := dialAs("alice", g.WSURL)
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	token := s.Connected.ResumeToken
	cut(s)
	drain(t, s)

	// Forged: the right shape and socket id, another secret; or garbage.
	parts := strings.SplitN(token, ".", 5)
	forged := strings.Join([]string{parts[0], parts[1], parts[2], strings.Repeat("A", len(parts[3])), parts[4]}, ".")
	// A token naming a gateway that is not registered: whatever socket it
	// named went with that gateway's lease.
	for name, tc := range map[string]struct{ tok, want string }{
		"forged secret":   {forged, "UNKNOWN"},
		"garbage":         {"r1.nope", "UNKNOWN"},
		"unknown gateway": {strings.Replace(token, ".gw1.", ".gw9.", 1), "GATEWAY_LOST"},
	} {
		f := dialAs("alice", resumeURL(g, tc.tok, 0))
		if f.Connected.ResumeError != tc.want {
			t.Errorf("%s: connected frame %+v, want resume_error %s", name, f.Connected, tc.want)
		}
	}
	// Another user's connection with alice's token.
	b := dialAs("bob", resumeURL(g, token, 0))
	wantNotResumed(t, b, s.ID, "UNKNOWN")

	// Alice resumes once; the token is then spent.
	r := dialAs("alice", resumeURL(g, token, 0))
	wantResumed(t, r, s.ID, "r")
	again := dialAs("alice", resumeURL(g, token, 0))
	wantNotResumed(t, again, s.ID, "UNKNOWN")
	// The resumed socket was not disturbed: it still gets its messages.
	r.ExpectNothing(100 * time.Millisecond)
	bcast(t, api, "r", "still")
	expectMessage(t, r, "still", 1)
}

// A client's close frame ends its socket at once, resume window or not.
func TestResumeNotAfterClientClose(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: time.Minute})
	s := dial(t, g.WSURL)
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	s.Close()
	waitFor(t, 10*time.Second, "the socket's keys to go", func() bool { return len(members(t, api, "r")) == 0 })
	r := dial(t, resumeURL(g, s.Connected.ResumeToken, 0))
	wantNotResumed(t, r, s.ID, "UNKNOWN")
}

// With --resume-window 0 (Config.ResumeWindow zero) nothing changes: no
// resume_token, no seq, a cut connection ends its socket at once, and resume
// parameters are ignored.
func TestResumeWindowZeroIsOff(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{})
	s := dial(t, g.WSURL)
	if s.Connected.ResumeToken != "" || s.Connected.Resumed != nil {
		t.Fatalf("connected frame %+v, want no resume fields", s.Connected)
	}
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	bcast(t, api, "r", "x")
	if f := s.Next(5 * time.Second); f.Type != "message" || f.Seq != 0 {
		t.Fatalf("got %+v, want a message without seq", f)
	}
	cut(s)
	drain(t, s)
	waitFor(t, 10*time.Second, "the socket's keys to go", func() bool { return len(members(t, api, "r")) == 0 })
	r := dial(t, g.WSURL+"?resume_token=r1.gw1.x.y.z&last_seq=1")
	if r.Connected.Resumed != nil || r.Connected.ResumeError != "" || r.Connected.ResumeToken != "" {
		t.Fatalf("connected frame %+v, want today's", r.Connected)
	}
}

// A client that resumes before the gateway saw its old connection fail takes
// the socket over: the old connection is closed with 1000, the new one gets
// the socket and its messages.
func TestResumeTakesOverAConnectionStillUp(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: time.Minute})
	s := dial(t, g.WSURL)
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	bcast(t, api, "r", "one")
	expectMessage(t, s, "one", 1)

	r := dial(t, resumeURL(g, s.Connected.ResumeToken, 0))
	wantResumed(t, r, s.ID, "r")
	expectMessage(t, r, "one", 1) // last_seq 0: replayed
	select {
	case ce := <-s.Closed:
		if ce == nil || ce.Code != 1000 {
			t.Fatalf("old connection closed with %v, want 1000", ce)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old connection was not closed")
	}
	bcast(t, api, "r", "two")
	expectMessage(t, r, "two", 2)
	if got := members(t, api, "r"); len(got) != 1 || got[0] != s.ID {
		t.Fatalf("members %v, want just %s", got, s.ID)
	}
}

// Socket.IO sessions are not resumable: with a resume window, one whose
// connection is cut is removed at once, as without.
func TestResumeWindowLeavesSocketIOAlone(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: time.Minute})
	sio, _ := dialSIO(t, g, "4")
	sio.write(1, "40")
	connect := sio.read()
	var hs struct{ Sid string }
	if !strings.HasPrefix(connect, "40") || json.Unmarshal([]byte(connect[2:]), &hs) != nil || hs.Sid == "" {
		t.Fatalf("CONNECT answer %q", connect)
	}
	joinRoom(t, api, hs.Sid, "r")
	sio.conn.UnderlyingConn().Close()
	waitFor(t, 10*time.Second, "the Socket.IO socket's keys to go", func() bool { return len(members(t, api, "r")) == 0 })
	if _, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: hs.Sid}); err == nil {
		t.Fatal("GetSocket still finds the Socket.IO socket")
	}
}

// metric reads one sample of the gateway's /metrics: the line that starts
// with name (labels included); -1 when absent.
func metric(t *testing.T, g *stacktest.Gateway, name string) float64 {
	t.Helper()
	resp, err := http.Get(strings.Replace(strings.Replace(g.WSURL, "ws://", "http://", 1), "/ws", "/metrics", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// The API's Disconnect of a detached socket ends it: its keys go, the hub
// forgets it, and its token resumes nothing (UNKNOWN). A socket that
// detaches, resumes and detaches again keeps a whole window the second time.
func TestResumeDisconnectedWhileDetached(t *testing.T) {
	api, g := resumeStack(t, gateway.Config{ResumeWindow: 2 * time.Second})
	ctx := context.Background()

	s := detachedSocket(t, api, g, "r")
	if _, err := api.Disconnect(ctx, &membershipv1.DisconnectRequest{SocketIds: []string{s.ID}, Code: 4000, Reason: "bye"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the socket's keys to go", func() bool { return len(members(t, api, "r")) == 0 })
	waitFor(t, 10*time.Second, "the hub to forget the socket", func() bool { return g.G.Sockets() == 0 })
	r := dial(t, resumeURL(g, s.Connected.ResumeToken, 0))
	wantNotResumed(t, r, s.ID, "UNKNOWN")

	// Detach, resume, detach again: the second detach has a whole window.
	a := detachedSocket(t, api, g, "q")
	time.Sleep(time.Second)
	b := dial(t, resumeURL(g, a.Connected.ResumeToken, 0))
	wantResumed(t, b, a.ID, "q")
	cut(b)
	drain(t, b)
	time.Sleep(1500 * time.Millisecond) // past the first window, within the second
	c := dial(t, resumeURL(g, b.Connected.ResumeToken, 0))
	wantResumed(t, c, a.ID, "q")
}

// etcd away while a socket detaches and while it resumes: neither needs
// etcd, and the record's detached_since, whose writes fail meanwhile, is
// written once etcd is back: set after the detach, cleared after the resume.
func TestResumeWhileEtcdIsAway(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	proxy := testutil.StartProxy(t, e.Endpoint)
	g := stacktest.StartGatewayVia(t, proxy.Endpoint(), gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, EtcdTimeout: 500 * time.Millisecond, ResumeWindow: time.Minute})
	ctx := context.Background()
	s := dial(t, g.WSURL)
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")

	proxy.Pause()
	cut(s)
	drain(t, s)
	time.Sleep(time.Second) // the detached mark's writes fail meanwhile
	if isDetached(api, s.ID) {
		t.Fatal("the record was marked detached through a paused proxy")
	}
	proxy.Resume()
	waitFor(t, 10*time.Second, "the record marked detached once etcd is back", func() bool { return isDetached(api, s.ID) })

	proxy.Pause()
	r := dial(t, resumeURL(g, s.Connected.ResumeToken, 0))
	wantResumed(t, r, s.ID, "r")
	time.Sleep(time.Second) // the clearing writes fail meanwhile
	if !isDetached(api, s.ID) {
		t.Fatal("the record was cleared through a paused proxy")
	}
	proxy.Resume()
	waitFor(t, 10*time.Second, "the record cleared once etcd is back", func() bool {
		resp, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
		return err == nil && resp.Socket.GetDetachedSince() == nil
	})
	bcast(t, api, "r", "back")
	expectMessage(t, r, "back", 1)
}
