package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
	"github.com/socketrooms/membership/internal/testutil/nodejs"
)

// nodeClient is a live-client.cjs process: a real socket.io-client 4 or
// sails.io.js client connected to a gateway.
type nodeClient struct {
	t     *testing.T
	name  string
	in    io.WriteCloser
	lines chan map[string]json.RawMessage
	ID    string
	seen  map[string]bool // events read so far, by next's caller
	// transport is the one connected on first (socket.io-client 4 only).
	transport string
}

func startNodeClient(t *testing.T, mode, origin string, env ...string) *nodeClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := nodejs.Command(ctx, t, "live-client.cjs", mode, origin)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &nodeClient{t: t, name: mode, in: in, lines: make(chan map[string]json.RawMessage, 256), seen: map[string]bool{}}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]json.RawMessage
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				c.lines <- m
			}
		}
		close(c.lines)
	}()
	t.Cleanup(func() { in.Close(); cancel(); cmd.Wait() })
	return c
}

// next returns the next line whose ev is one of evs, failing after timeout;
// lines of other events are passed to skip (nil: dropped).
func (c *nodeClient) next(timeout time.Duration, skip func(map[string]json.RawMessage), evs ...string) map[string]json.RawMessage {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("%s: the client exited waiting for %v", c.name, evs)
			}
			var ev string
			json.Unmarshal(m["ev"], &ev)
			c.seen[ev] = true
			for _, want := range evs {
				if ev == want {
					return m
				}
			}
			if skip != nil {
				skip(m)
			}
		case <-deadline:
			c.t.Fatalf("%s: no %v within %v", c.name, evs, timeout)
		}
	}
}

func (c *nodeClient) connect() {
	c.t.Helper()
	m := c.next(20*time.Second, nil, "connect", "connect_error")
	if string(m["ev"]) != `"connect"` {
		c.t.Fatalf("%s: %s", c.name, m["message"])
	}
	json.Unmarshal(m["id"], &c.ID)
	json.Unmarshal(m["transport"], &c.transport)
}

func (c *nodeClient) send(cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		c.t.Fatal(err)
	}
}

// args returns an event line's arguments.
func args(m map[string]json.RawMessage) []json.RawMessage {
	var a []json.RawMessage
	json.Unmarshal(m["args"], &a)
	return a
}

func broadcast(t *testing.T, api membershipv1.MembershipServiceClient, event string, data map[string]any, rooms ...string) {
	t.Helper()
	v, err := structpb.NewValue(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Broadcast(context.Background(), &membershipv1.BroadcastRequest{Rooms: rooms, Event: event, Data: v}); err != nil {
		t.Fatal(err)
	}
}

func joinApplied(t *testing.T, api membershipv1.MembershipServiceClient, socket, room string) {
	t.Helper()
	if _, err := api.Join(context.Background(), &membershipv1.JoinRequest{SocketId: socket, Room: room, WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
}

// buildExample builds examples/<name> and returns the binary's path.
func buildExample(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "github.com/socketrooms/membership/examples/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// socket.io-client 4 (WebSocket only, and the default polling then upgrade)
// and sails.io.js 1.2 on socket.io-client 2, against two gateway processes
// and two membership-server processes: socket.id is the membership socket
// id, Broadcast events and the membership notices arrive with their data,
// Leave stops them, a socket in two target rooms gets one copy, and
// io.socket.post reaches the leavefunroom example behind --upstream-url.
func TestSocketIOClientsThroughGatewayProcesses(t *testing.T) {
	nodejs.Install(t)
	e := testutil.StartEtcd(t)
	api1, _, addr1 := startServerProcessAt(t, e.Endpoint)
	api2, _ := startServerProcess(t, e.Endpoint)

	appAddr := testutil.FreeAddr(t)
	app := exec.Command(buildExample(t, "leavefunroom"), "--listen", appAddr, "--membership-addr", addr1)
	app.Stderr = os.Stderr
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Process.Kill(); app.Wait() })

	gw1 := startGatewayProcess(t, e, "gw1", 5*time.Second)
	gw2 := startGatewayProcess(t, e, "gw2", 5*time.Second, "--upstream-url", "http://"+appAddr)
	origin := func(p *proc) string { return "http" + strings.TrimSuffix(strings.TrimPrefix(p.WSURL, "ws"), "/ws") }

	for _, mode := range []string{"v5-websocket", "v5-polling"} {
		t.Run(mode, func(t *testing.T) {
			c := startNodeClient(t, mode, origin(gw1))
			c.connect()
			if !strings.HasPrefix(c.ID, "gw1.") {
				t.Fatalf("socket.id %q is not a membership socket id of gw1", c.ID)
			}
			joinApplied(t, api1, c.ID, "fun")
			m := c.next(10*time.Second, nil, "membership:joined")
			if a := args(m); len(a) != 1 || string(a[0]) != `"fun"` {
				t.Fatalf("joined notice %s", m["args"])
			}
			joinApplied(t, api2, c.ID, "other")
			c.next(10*time.Second, nil, "membership:joined")

			// One copy for a socket in both target rooms; through the other server.
			broadcast(t, api2, "chat", map[string]any{"text": "hi", "n": 1}, "fun", "other")
			broadcast(t, api2, "chat", map[string]any{"n": 2}, "other")
			m = c.next(10*time.Second, nil, "chat")
			if a := args(m); len(a) != 1 || string(a[0]) != `{"n":1,"text":"hi"}` {
				t.Fatalf("chat %s", m["args"])
			}
			m = c.next(10*time.Second, nil, "chat")
			if a := args(m); len(a) != 1 || string(a[0]) != `{"n":2}` {
				t.Fatalf("second chat %s: the first came twice?", m["args"])
			}

			if _, err := api1.Leave(context.Background(), &membershipv1.LeaveRequest{SocketId: c.ID, Room: "fun", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
				t.Fatal(err)
			}
			if m := c.next(10*time.Second, nil, "membership:left"); string(args(m)[0]) != `"fun"` {
				t.Fatalf("left notice %s", m["args"])
			}
			broadcast(t, api1, "chat", map[string]any{"n": 3}, "fun")
			broadcast(t, api1, "chat", map[string]any{"n": 4}, "other") // a marker: the socket gets it, in order
			if m := c.next(10*time.Second, nil, "chat"); string(args(m)[0]) != `{"n":4}` {
				t.Fatalf("after Leave the socket got %s", m["args"])
			}
			if mode == "v5-websocket" && c.transport != "websocket" {
				t.Fatalf("connected on %q", c.transport)
			}
			if mode == "v5-polling" {
				// The default transports: polling first, then the upgrade
				// (which can complete before the CONNECT answer arrives).
				if !c.seen["upgrade"] {
					c.next(10*time.Second, nil, "upgrade")
				}
			}
			c.send(`{"cmd":"emit","seq":1,"event":"typing","data":{}}`)
			if m := c.next(10*time.Second, nil, "ack"); !strings.Contains(string(m["res"]), `"statusCode":404`) {
				t.Fatalf("ack of an unhandled event: %s", m["res"])
			}
		})
	}

	for _, mode := range []string{"sails", "sails-polling"} {
		t.Run(mode, func(t *testing.T) { testSailsClient(t, mode, origin(gw2), api1, api2) })
	}
}

// testSailsClient is the seed page's first example from a sails.io.js front
// end on gateway gw2, whose upstream is examples/leavefunroom.
func testSailsClient(t *testing.T, mode, origin string, api1, api2 membershipv1.MembershipServiceClient) {
	{
		c := startNodeClient(t, mode, origin)
		c.connect()
		if !strings.HasPrefix(c.ID, "gw2.") {
			t.Fatalf("socket.id %q is not a membership socket id of gw2", c.ID)
		}
		joinApplied(t, api1, c.ID, "fun")
		joinApplied(t, api1, c.ID, "other")
		c.next(10*time.Second, nil, "membership:joined")
		broadcast(t, api2, "chat", map[string]any{"n": 1}, "fun")
		if m := c.next(10*time.Second, nil, "chat"); string(args(m)[0]) != `{"n":1}` {
			t.Fatalf("chat %s", m["args"])
		}

		c.send(`{"cmd":"post","seq":1,"url":"/leaveFunRoom","data":{"roomName":"fun"}}`)
		m := c.next(10*time.Second, nil, "cb")
		var body struct{ Message string }
		json.Unmarshal(m["body"], &body)
		if string(m["status"]) != "200" || body.Message != "Left a room called fun." {
			t.Fatalf("cb(%s, status %s)", m["body"], m["status"])
		}
		if ms := members(t, api1, "fun"); hasMember(ms, c.ID) {
			t.Fatalf("still in fun: %v", ms)
		}
		broadcast(t, api1, "chat", map[string]any{"n": 2}, "fun")
		broadcast(t, api1, "chat", map[string]any{"n": 3}, "other")
		if m := c.next(10*time.Second, nil, "chat"); string(args(m)[0]) != `{"n":3}` {
			t.Fatalf("after leaving fun the socket got %s", m["args"])
		}

		c.send(`{"cmd":"post","seq":2,"url":"/leaveFunRoom","data":{}}`)
		m = c.next(10*time.Second, nil, "cb")
		if string(m["status"]) != "400" || !strings.Contains(string(m["body"]), "roomName is required") {
			t.Fatalf("cb(%s, status %s)", m["body"], m["status"])
		}
		if mode == "sails-polling" && !c.seen["upgrade"] {
			c.next(10*time.Second, nil, "upgrade") // polling first, then the upgrade
		}
		c.send(`{"cmd":"close"}`)
		waitFor(t, 15*time.Second, "the closed socket gone from etcd", func() bool {
			_, err := api1.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: c.ID})
			return err != nil
		})
	}
}

// sioRaw is a hand-driven Socket.IO connection over a WebSocket, for input
// no real client sends.
type sioRaw struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialSIO(t *testing.T, g *stacktest.Gateway, eio string) (*sioRaw, string) {
	t.Helper()
	u := strings.Replace(g.WSURL, "/ws", "/socket.io/?EIO="+eio+"&transport=websocket", 1)
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &sioRaw{t: t, conn: conn}
	open := s.read()
	var hs struct{ Sid string }
	if !strings.HasPrefix(open, "0") || json.Unmarshal([]byte(open[1:]), &hs) != nil {
		t.Fatalf("open packet %q", open)
	}
	return s, hs.Sid
}

// read returns the next message that is not an Engine.IO ping, or fails;
// "closed" when the gateway closed the connection.
func (s *sioRaw) read() string {
	s.t.Helper()
	for {
		s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := s.conn.ReadMessage()
		if err != nil {
			if strings.Contains(err.Error(), "timeout") {
				s.t.Fatal(err)
			}
			return "closed"
		}
		if string(b) != "2" && string(b) != "3" {
			return string(b)
		}
	}
}

func (s *sioRaw) write(typ int, msg string) {
	s.t.Helper()
	if err := s.conn.WriteMessage(typ, []byte(msg)); err != nil {
		s.t.Fatal(err)
	}
}

// Bad input at /socket.io/: another namespace gets CONNECT_ERROR "Invalid
// namespace" and the session stays; a malformed packet, a binary
// attachment, a binary frame and an oversize packet each close the session;
// a closed session's socket leaves the hub and etcd.
func TestSocketIOBadInputClosesOrAnswers(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, MaxFrameBytes: 4096})

	s, sid := dialSIO(t, g, "4")
	s.write(websocket.TextMessage, `40/admin,`)
	if got := s.read(); got != `44/admin,{"message":"Invalid namespace"}` {
		t.Fatalf("CONNECT to /admin answered %q", got)
	}
	s.write(websocket.TextMessage, `40`)
	if got := s.read(); got != `40{"sid":"`+sid+`"}` {
		t.Fatalf("CONNECT answered %q, want the Engine.IO sid %s", got, sid)
	}
	if _, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: sid}); err != nil {
		t.Fatalf("connected socket not in etcd: %v", err)
	}

	for name, msg := range map[string]struct {
		typ  int
		text string
	}{
		"malformed":         {websocket.TextMessage, `42["chat"`},
		"binary attachment": {websocket.TextMessage, `451-["chat",{"_placeholder":true,"num":0}]`},
		"binary frame":      {websocket.BinaryMessage, "\x04abc"},
		"unknown type":      {websocket.TextMessage, `49`},
		"oversize":          {websocket.TextMessage, `42["chat","` + strings.Repeat("x", 5000) + `"]`},
	} {
		s, sid := dialSIO(t, g, "4")
		s.write(websocket.TextMessage, `40`)
		s.read()
		s.write(msg.typ, msg.text)
		for got := s.read(); got != "closed"; got = s.read() {
			if got != "1" { // Engine.IO close packet
				t.Fatalf("%s: got %q, want the session closed", name, got)
			}
		}
		waitFor(t, 10*time.Second, name+": socket gone from etcd", func() bool {
			_, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: sid})
			return err != nil
		})
	}
	waitFor(t, 10*time.Second, "only the first socket left in the hub", func() bool { return g.G.Sockets() == 1 })

	// Protocol 4 (Engine.IO 3): the connection to "/" is implicit.
	s3, sid3 := dialSIO(t, g, "3")
	if got := s3.read(); got != "40" {
		t.Fatalf("protocol 4 CONNECT %q", got)
	}
	if _, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: sid3}); err != nil {
		t.Fatalf("protocol 4 socket not in etcd: %v", err)
	}

	// Gateway shutdown closes the Socket.IO sessions.
	g.Stop()
	for got := s.read(); got != "closed"; got = s.read() {
	}
	for got := s3.read(); got != "closed"; got = s3.read() {
	}
}

// With --jwt-public-key-file, socket.io-client 4 sends its token as
// auth.token in the CONNECT packet and sails.io.js as ?token= in the
// handshake: a valid token gives a socket recorded under the token's
// subject (GetSocket, X-Socket-User of a virtual request), a bad one gets
// the client's connect_error ("Not authorized") or error and no socket.
func TestSocketIOClientsWithJWT(t *testing.T) {
	nodejs.Install(t)
	key, keyFile := jwtKey(t)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"user":%q,"socket":%q}`, r.Header.Get("X-Socket-User"), r.Header.Get("X-Socket-Id"))
	}))
	defer upstream.Close()
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, "--jwt-public-key-file", keyFile, "--jwt-audience", "chat", "--upstream-url", upstream.URL)
	origin := "http" + strings.TrimSuffix(strings.TrimPrefix(g.WSURL, "ws"), "/ws")
	hour := time.Now().Add(time.Hour)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	for _, mode := range []string{"v5-websocket", "v5-polling", "sails"} {
		t.Run(mode, func(t *testing.T) {
			c := startNodeClient(t, mode, origin, "SIO_TOKEN="+signToken(t, key, "alice", hour))
			c.connect()
			s, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: c.ID})
			if err != nil || s.GetSocket().GetUser() != "alice" {
				t.Fatalf("GetSocket(%s) = %v, %v; want user alice", c.ID, s, err)
			}
			if mode == "sails" {
				c.send(`{"cmd":"get","seq":1,"url":"/who","data":{}}`)
				m := c.next(10*time.Second, nil, "cb")
				if string(m["status"]) != "200" || string(m["body"]) != fmt.Sprintf(`{"user":"alice","socket":%q}`, c.ID) {
					t.Fatalf("cb(%s, %s)", m["body"], m["status"])
				}
			} else {
				c.send(`{"cmd":"emit","seq":1,"event":"get","data":{"url":"/who"}}`)
				m := c.next(10*time.Second, nil, "ack")
				if want := fmt.Sprintf(`{"body":{"user":"alice","socket":%q},"headers":{},"statusCode":200}`, c.ID); string(m["res"]) != want {
					t.Fatalf("ack %s, want %s", m["res"], want)
				}
			}
			for name, tok := range map[string]string{"stranger": signToken(t, other, "alice", hour), "none": ""} {
				env := []string{}
				if tok != "" {
					env = append(env, "SIO_TOKEN="+tok)
				}
				bad := startNodeClient(t, mode, origin, env...)
				m := bad.next(20*time.Second, nil, "connect", "connect_error")
				if string(m["ev"]) != `"connect_error"` {
					t.Fatalf("%s token: %s", name, m["ev"])
				}
				if mode != "sails" && string(m["message"]) != `"Not authorized"` {
					t.Fatalf("%s token: connect_error %s", name, m["message"])
				}
			}
		})
	}
	if v := metricValue(t, scrape(t, origin+"/metrics"), `gateway_auth_failures_total`); v != 6 {
		t.Errorf("gateway_auth_failures_total = %v after 6 refused tokens", v)
	}
}

// --max-sockets counts Socket.IO sessions with native sockets, the origin
// check refuses a handshake with 403, and --frames-per-second applies to
// inbound packets: past the 2 s burst a virtual request is answered 429, far
// past it the session closes.
func TestSocketIOLimits(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second,
		MaxSockets: 2, FramesPerSecond: 5, AllowedOrigins: []string{"https://app.example"}})
	handshake := strings.Replace(g.WSURL, "ws://", "http://", 1)
	handshake = strings.Replace(handshake, "/ws", "/socket.io/?EIO=4&transport=polling", 1)
	get := func(origin string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, handshake, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("https://evil.example"); code != http.StatusForbidden {
		t.Fatalf("refused origin: %d, want 403", code)
	}
	a, _ := dialSIO(t, g, "4")
	a.write(websocket.TextMessage, `40`)
	a.read()
	dial(t, g.WSURL) // a native socket: two of two
	waitFor(t, 5*time.Second, "two sockets", func() bool { return g.G.Sockets() == 2 })
	if code := get(""); code != http.StatusServiceUnavailable {
		t.Fatalf("third socket on a gateway of 2: %d, want 503", code)
	}
	// A session that has not sent its CONNECT holds its place too.
	a.conn.Close()
	waitFor(t, 5*time.Second, "one socket", func() bool { return g.G.Sockets() == 1 })
	a, _ = dialSIO(t, g, "4")
	if code := get(""); code != http.StatusServiceUnavailable {
		t.Fatalf("a session waiting for CONNECT is not counted: %d, want 503", code)
	}
	connectAt := time.Now() // the CONNECT takes the bucket's first packet
	a.write(websocket.TextMessage, `40`)
	a.read()
	metrics := scrape(t, strings.Replace(strings.Replace(g.WSURL, "ws://", "http://", 1), "/ws", "/metrics", 1))
	if n, s := metricValue(t, metrics, `gateway_protocol_sockets\{protocol="native"\}`), metricValue(t, metrics, `gateway_protocol_sockets\{protocol="socketio"\}`); n != 1 || s != 1 {
		t.Fatalf("gateway_protocol_sockets native %v, socketio %v; want 1 and 1", n, s)
	}

	burst := time.Now()
	for i := 0; i < 20; i++ {
		a.write(websocket.TextMessage, fmt.Sprintf(`42%d["get",{"url":"/x"}]`, i))
	}
	statuses := map[string]int{}
	for i := 0; i < 20; i++ {
		got := a.read()
		_, status, _ := strings.Cut(got, `"statusCode":`)
		statuses[strings.TrimSuffix(status, "}]")]++
	}
	// The burst is 10 packets (2 s at 5/s), the CONNECT one of them; the
	// bucket refills 5 a second from the CONNECT on (the metrics scrape
	// between them takes a while on a loaded machine) until the 20 are in.
	refilled := int(time.Since(connectAt).Seconds() * 5)
	if statuses["501"] < 9 || statuses["501"] > 9+refilled || statuses["501"]+statuses["429"] != 20 {
		t.Fatalf("statuses %v after %v, want 9 (plus up to %d refilled) answered 501 (no upstream) and the rest refused 429",
			statuses, time.Since(burst), refilled)
	}
	for i := 0; i < 40; i++ {
		// The gateway may close the session before the last of them.
		if a.conn.WriteMessage(websocket.TextMessage, []byte(`42["noise"]`)) != nil {
			break
		}
	}
	for got := a.read(); got != "closed"; got = a.read() {
		if got != "1" {
			t.Fatalf("got %q, want the session closed", got)
		}
	}
}

// A gateway frozen past its lease: its Socket.IO sessions are closed when it
// resumes, and deliver nothing queued on the expired memberships.
func TestSocketIOSessionsFencedWithTheLease(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	const ttl = 2 * time.Second
	g := startGatewayProcess(t, e, "frozen", ttl)
	u := strings.Replace(g.WSURL, "/ws", "/socket.io/?EIO=4&transport=websocket", 1)
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := &sioRaw{t: t, conn: conn}
	var hs struct{ Sid string }
	json.Unmarshal([]byte(s.read()[1:]), &hs)
	s.write(websocket.TextMessage, `40`)
	s.read()
	joinApplied(t, api, hs.Sid, "r")
	if got := s.read(); got != `42["membership:joined","r"]` {
		t.Fatalf("joined notice %q", got)
	}
	if err := g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer g.cmd.Process.Signal(syscall.SIGCONT)
	go func() {
		bctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		api.Broadcast(bctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}, Event: "late"})
	}()
	// Its lease shards were each granted 1 s more than the TTL.
	waitFor(t, ttl+3*time.Second, "the frozen gateway's leases to expire", func() bool {
		return len(members(t, api, "r")) == 0
	})
	time.Sleep(200 * time.Millisecond)
	if err := g.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for got := s.read(); got != "closed"; got = s.read() {
		if strings.HasPrefix(got, "42") {
			t.Fatalf("delivered %q on an expired membership", got)
		}
	}
}
