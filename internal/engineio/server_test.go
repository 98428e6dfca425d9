package engineio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is a Server on a real listener with sessions named s1, s2, ...
// and every inbound message recorded.
type fixture struct {
	t    *testing.T
	srv  *Server
	hs   *httptest.Server
	mu   sync.Mutex
	msgs map[string][]string
	sess chan *Session
	n    atomic.Int64
}

func newFixture(t *testing.T, srv *Server) *fixture {
	t.Helper()
	f := &fixture{t: t, srv: srv, msgs: map[string][]string{}, sess: make(chan *Session, 16)}
	if srv.NewID == nil {
		srv.NewID = func(*http.Request) (string, error) { return fmt.Sprintf("s%d", f.n.Add(1)), nil }
	}
	srv.OnSession = func(s *Session, _ *http.Request) {
		s.OnMessage(func(data []byte, binary bool) {
			f.mu.Lock()
			if binary {
				data = append([]byte("binary:"), data...)
			}
			f.msgs[s.ID()] = append(f.msgs[s.ID()], string(data))
			f.mu.Unlock()
		})
		f.sess <- s
	}
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	f.hs = httptest.NewServer(mux)
	t.Cleanup(func() {
		f.hs.Close()
		srv.Close()
	})
	return f
}

func (f *fixture) url(query string) string { return f.hs.URL + "/socket.io/?" + query }

func (f *fixture) messages(id string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.msgs[id]...)
}

func (f *fixture) session() *Session {
	f.t.Helper()
	select {
	case s := <-f.sess:
		return s
	case <-time.After(5 * time.Second):
		f.t.Fatal("no session opened")
		return nil
	}
}

func (f *fixture) get(query string) (int, string) {
	f.t.Helper()
	resp, err := http.Get(f.url(query))
	if err != nil {
		f.t.Fatalf("GET %s: %v", query, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (f *fixture) post(query, body string) (int, string) {
	f.t.Helper()
	resp, err := http.Post(f.url(query), "text/plain;charset=UTF-8", strings.NewReader(body))
	if err != nil {
		f.t.Fatalf("POST %s: %v", query, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (f *fixture) dial(query string) *websocket.Conn {
	f.t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(f.url(query), "http"), nil)
	if err != nil {
		f.t.Fatalf("dial %s: %v", query, err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if mt != websocket.TextMessage {
		t.Fatalf("frame type %d, want text", mt)
	}
	return string(data)
}

func waitClosed(t *testing.T, s *Session, within time.Duration) error {
	t.Helper()
	select {
	case <-s.Done():
		return s.Err()
	case <-time.After(within):
		t.Fatalf("session %s still open after %v", s.ID(), within)
		return nil
	}
}

func TestRefusals(t *testing.T) {
	errNoID := errors.New("no id")
	for _, tc := range []struct {
		name      string
		method    string
		query     string
		authorize func(*http.Request) error
		newID     func(*http.Request) (string, error)
		status    int
		code      int
		message   string
	}{
		{"no EIO", "GET", "transport=polling", nil, nil, 400, 5, "Unsupported protocol version"},
		{"EIO 5", "GET", "EIO=5&transport=polling", nil, nil, 400, 5, "Unsupported protocol version"},
		{"unknown transport", "GET", "EIO=4&transport=flash", nil, nil, 400, 0, "Transport unknown"},
		{"unknown sid", "GET", "EIO=4&transport=polling&sid=nope", nil, nil, 400, 1, "Session ID unknown"},
		{"POST handshake", "POST", "EIO=4&transport=polling", nil, nil, 400, 2, "Bad handshake method"},
		{"websocket without upgrade", "GET", "EIO=4&transport=websocket", nil, nil, 400, 3, "Bad request"},
		{"JSONP", "GET", "EIO=3&transport=polling&j=0", nil, nil, 400, 3, "JSONP polling is not supported"},
		{"authorize refuses", "GET", "EIO=4&transport=polling", func(*http.Request) error { return errors.New("bad origin") }, nil, 403, 4, "Forbidden"},
		{"authorize chooses status", "GET", "EIO=3&transport=polling", func(*http.Request) error {
			return &HandshakeError{Status: 401, Code: CodeForbidden, Message: "token expired"}
		}, nil, 401, 4, "token expired"},
		{"NewID fails", "GET", "EIO=4&transport=polling", nil, func(*http.Request) (string, error) { return "", errNoID }, 500, 3, "Bad request"},
		{"NewID chooses status", "GET", "EIO=4&transport=polling", nil, func(*http.Request) (string, error) {
			return "", &HandshakeError{Status: 503, Code: CodeBadRequest, Message: "too many sockets"}
		}, 503, 3, "too many sockets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, &Server{Authorize: tc.authorize, NewID: tc.newID})
			req, _ := http.NewRequest(tc.method, f.url(tc.query), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body: %v", err)
			}
			if resp.StatusCode != tc.status || body.Code != tc.code || body.Message != tc.message {
				t.Fatalf("got %d %+v, want %d {%d %q}", resp.StatusCode, body, tc.status, tc.code, tc.message)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if f.srv.Len() != 0 {
				t.Fatalf("%d sessions left", f.srv.Len())
			}
		})
	}
}

func TestPollingHandshakeAndMessages(t *testing.T) {
	for _, tc := range []struct {
		proto    string
		open     string
		post     string
		wantMsgs []string
	}{
		{"4", `0{"sid":"s1","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}` + "\x1e4welcome 😀",
			"4hello\x1e4ü😀\x1e4", []string{"hello", "ü😀", ""}},
		// Protocol 3 lengths count UTF-16 code units: "4welcome 😀" is 11.
		{"3", `79:0{"sid":"s1","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}11:4welcome 😀`,
			"6:4hello4:4ü😀1:4", []string{"hello", "ü😀", ""}},
	} {
		t.Run("EIO"+tc.proto, func(t *testing.T) {
			f := newFixture(t, &Server{})
			srvOnSession := f.srv.OnSession
			f.srv.OnSession = func(s *Session, r *http.Request) {
				srvOnSession(s, r)
				_ = s.Send([]byte("welcome 😀"))
			}
			// b64=1 (a client that cannot take binary) changes nothing: the
			// server sends text only.
			status, body := f.get("EIO=" + tc.proto + "&transport=polling&b64=1")
			if status != 200 || body != tc.open {
				t.Fatalf("handshake: %d %q\nwant %q", status, body, tc.open)
			}
			s := f.session()
			status, body = f.post("EIO="+tc.proto+"&transport=polling&sid=s1", tc.post)
			if status != 200 || body != "ok" {
				t.Fatalf("POST: %d %q", status, body)
			}
			if got := f.messages("s1"); fmt.Sprint(got) != fmt.Sprint(tc.wantMsgs) {
				t.Fatalf("messages %q, want %q", got, tc.wantMsgs)
			}
			// A held GET is answered by the next Send.
			go func() {
				time.Sleep(50 * time.Millisecond)
				_ = s.Send([]byte("later"))
			}()
			status, body = f.get("EIO=" + tc.proto + "&transport=polling&sid=s1")
			want := "4later"
			if tc.proto == "3" {
				want = "6:4later"
			}
			if status != 200 || body != want {
				t.Fatalf("held GET: %d %q, want %q", status, body, want)
			}
			// A server close reaches the polling client as a close packet.
			s.Close(nil)
			status, body = f.get("EIO=" + tc.proto + "&transport=polling&sid=s1")
			want = "1"
			if tc.proto == "3" {
				want = "1:1"
			}
			if status != 200 || body != want {
				t.Fatalf("GET after close: %d %q, want %q", status, body, want)
			}
			if f.srv.Len() != 0 {
				t.Fatal("closed session still registered after its close was delivered")
			}
		})
	}
}

func TestPollingBadInput(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   string
		status int
		reason error
	}{
		{"malformed payload", "4a\x1e", 400, ErrParse},
		{"unknown packet type", "9", 400, ErrParse},
		{"oversize body", strings.Repeat("4", 101), 413, ErrPayloadTooLarge},
		{"client close", "1", 200, ErrClientClosed},
		{"ping from an EIO4 client", "2", 200, ErrHeartbeat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, &Server{MaxPayload: 100})
			f.get("EIO=4&transport=polling")
			s := f.session()
			status, _ := f.post("EIO=4&transport=polling&sid=s1", tc.body)
			if status != tc.status {
				t.Fatalf("POST: %d, want %d", status, tc.status)
			}
			if err := waitClosed(t, s, time.Second); !errors.Is(err, tc.reason) {
				t.Fatalf("closed with %v, want %v", err, tc.reason)
			}
		})
	}
}

func TestPollingOverlap(t *testing.T) {
	f := newFixture(t, &Server{})
	f.get("EIO=4&transport=polling")
	s := f.session()
	held := make(chan string, 1)
	go func() {
		_, body := f.get("EIO=4&transport=polling&sid=s1")
		held <- body
	}()
	time.Sleep(100 * time.Millisecond) // let the first GET be held
	status, _ := f.get("EIO=4&transport=polling&sid=s1")
	if status != 400 {
		t.Fatalf("overlapping GET: %d, want 400", status)
	}
	if err := waitClosed(t, s, time.Second); err != ErrOverlap {
		t.Fatalf("closed with %v, want %v", err, ErrOverlap)
	}
	if body := <-held; body != "1" {
		t.Fatalf("held GET got %q, want the close packet", body)
	}
}

func TestSendQueueBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		srv  *Server
		msg  []byte
		ok   int // Sends accepted before the overflow
	}{
		{"frames", &Server{MaxQueueFrames: 4}, []byte("x"), 4},
		{"bytes", &Server{MaxQueueBytes: 1000}, make([]byte, 300), 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.srv)
			// The handshake GET drains the open packet; send to an idle
			// polling session, which nothing drains.
			f.get("EIO=4&transport=polling")
			s := f.session()
			for i := range tc.ok {
				if err := s.Send(tc.msg); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			if err := s.Send(tc.msg); err != ErrQueueFull {
				t.Fatalf("send past the bound: %v, want %v", err, ErrQueueFull)
			}
			if s.Err() != ErrQueueFull {
				t.Fatalf("session reason %v", s.Err())
			}
			if err := s.Send(tc.msg); err != ErrClosed {
				t.Fatalf("send after close: %v", err)
			}
		})
	}
	f := newFixture(t, &Server{})
	f.get("EIO=4&transport=polling")
	if err := f.session().Send([]byte{0xff}); err != ErrNotText {
		t.Fatalf("non-UTF-8 send: %v", err)
	}
}

func TestWebSocketSession(t *testing.T) {
	for _, proto := range []string{"3", "4"} {
		t.Run("EIO"+proto, func(t *testing.T) {
			f := newFixture(t, &Server{PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond, MaxPayload: 1000})
			c := f.dial("EIO=" + proto + "&transport=websocket")
			open := readText(t, c)
			if !strings.HasPrefix(open, `0{"sid":"s1","upgrades":[],"pingInterval":100,"pingTimeout":200`) {
				t.Fatalf("open packet %q", open)
			}
			s := f.session()
			if err := c.WriteMessage(websocket.TextMessage, []byte("4hi")); err != nil {
				t.Fatal(err)
			}
			if err := s.Send([]byte("a"), []byte("b")); err != nil {
				t.Fatal(err)
			}
			// Heartbeats for 5 intervals: the server pings (EIO4) or
			// answers pings (EIO3), and the session stays.
			var got []string
			for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
				if proto == "3" {
					_ = c.WriteMessage(websocket.TextMessage, []byte("2"))
				}
				m := readText(t, c)
				switch m {
				case "2":
					_ = c.WriteMessage(websocket.TextMessage, []byte("3"))
				case "3":
				default:
					got = append(got, m)
				}
				if proto == "3" {
					time.Sleep(50 * time.Millisecond)
				}
			}
			if fmt.Sprint(got) != "[4a 4b]" {
				t.Fatalf("messages %q", got)
			}
			if s.Err() != nil {
				t.Fatalf("session closed: %v", s.Err())
			}
			if m := f.messages("s1"); len(m) != 1 || m[0] != "hi" {
				t.Fatalf("inbound %q", m)
			}
			// Oversize message: closed with the reason, close frame seen.
			_ = c.WriteMessage(websocket.TextMessage, append([]byte("4"), make([]byte, 1000)...))
			if err := waitClosed(t, s, time.Second); err != ErrPayloadTooLarge {
				t.Fatalf("closed with %v", err)
			}
			for {
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, _, err := c.ReadMessage(); err != nil {
					if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseMessageTooBig) {
						t.Fatalf("read after close: %v", err)
					}
					break
				}
			}
		})
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	for _, proto := range []string{"3", "4"} {
		t.Run("EIO"+proto, func(t *testing.T) {
			f := newFixture(t, &Server{PingInterval: 100 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
			c := f.dial("EIO=" + proto + "&transport=websocket")
			readText(t, c)
			s := f.session()
			// The client reads (so it sees pings) but never answers or pings.
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
			if err := waitClosed(t, s, 2*time.Second); err != ErrPingTimeout {
				t.Fatalf("closed with %v, want %v", err, ErrPingTimeout)
			}
		})
	}
}

func TestUpgrade(t *testing.T) {
	for _, proto := range []string{"3", "4"} {
		t.Run("EIO"+proto, func(t *testing.T) {
			f := newFixture(t, &Server{})
			q := "EIO=" + proto + "&transport=polling"
			f.get(q)
			s := f.session()
			q += "&sid=s1"
			held := make(chan string, 1)
			go func() {
				_, body := f.get(q)
				held <- body
			}()
			time.Sleep(50 * time.Millisecond)
			c := f.dial("EIO=" + proto + "&transport=websocket&sid=s1")
			_ = c.WriteMessage(websocket.TextMessage, []byte("2probe"))
			if m := readText(t, c); m != "3probe" {
				t.Fatalf("probe answer %q", m)
			}
			noop := "6"
			if proto == "3" {
				noop = "1:6"
			}
			if body := <-held; body != noop {
				t.Fatalf("held GET during the upgrade got %q, want a noop", body)
			}
			_ = c.WriteMessage(websocket.TextMessage, []byte("5"))
			_ = c.WriteMessage(websocket.TextMessage, []byte("4over ws"))
			_ = s.Send([]byte("to ws"))
			if m := readText(t, c); m != "4to ws" {
				t.Fatalf("after upgrade got %q", m)
			}
			if s.Transport() != "websocket" {
				t.Fatalf("transport %s", s.Transport())
			}
			if status, _ := f.get(q); status != 400 {
				t.Fatalf("polling GET after the upgrade: %d, want 400", status)
			}
			if status, _ := f.post(q, "4x"); status != 400 {
				t.Fatalf("polling POST after the upgrade: %d, want 400", status)
			}
			if m := f.messages("s1"); len(m) != 1 || m[0] != "over ws" {
				t.Fatalf("inbound %q", m)
			}
		})
	}
}

func TestUpgradeAbandoned(t *testing.T) {
	f := newFixture(t, &Server{UpgradeTimeout: 200 * time.Millisecond})
	f.get("EIO=4&transport=polling")
	s := f.session()
	c := f.dial("EIO=4&transport=websocket&sid=s1")
	_ = c.WriteMessage(websocket.TextMessage, []byte("2probe"))
	readText(t, c)
	// No upgrade packet: the probe WebSocket is closed, polling goes on.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("probe WebSocket still open")
	}
	_ = s.Send([]byte("still polling"))
	if _, body := f.get("EIO=4&transport=polling&sid=s1"); body != "4still polling" {
		t.Fatalf("GET after the abandoned upgrade: %q", body)
	}
	if !bytes.Equal([]byte(s.Transport()), []byte("polling")) || s.Err() != nil {
		t.Fatalf("transport %s, err %v", s.Transport(), s.Err())
	}
}

func TestBinaryInbound(t *testing.T) {
	f := newFixture(t, &Server{})
	f.get("EIO=3&transport=polling")
	f.session()
	// Protocol 3 base64 form in a payload: "b4" and base64 of "\x01\x02".
	if status, body := f.post("EIO=3&transport=polling&sid=s1", "6:b4AQI=2:4a"); status != 200 {
		t.Fatalf("POST: %d %s", status, body)
	}
	c := f.dial("EIO=4&transport=websocket")
	readText(t, c)
	f.session()
	_ = c.WriteMessage(websocket.BinaryMessage, []byte{1, 2})
	_ = c.WriteMessage(websocket.TextMessage, []byte("4b"))
	deadline := time.Now().Add(2 * time.Second)
	for len(f.messages("s2")) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := fmt.Sprint(f.messages("s1"), f.messages("s2")); got != "[binary:\x01\x02 a] [binary:\x01\x02 b]" {
		t.Fatalf("messages %q", got)
	}
}

func TestServerClose(t *testing.T) {
	f := newFixture(t, &Server{})
	f.get("EIO=4&transport=polling")
	poll := f.session()
	c := f.dial("EIO=3&transport=websocket")
	readText(t, c)
	ws := f.session()
	held := make(chan string, 1)
	go func() {
		_, body := f.get("EIO=4&transport=polling&sid=s1")
		held <- body
	}()
	time.Sleep(50 * time.Millisecond)
	_ = ws.Send([]byte("last"))
	f.srv.Close()
	if poll.Err() != ErrServerClosed || ws.Err() != ErrServerClosed {
		t.Fatalf("reasons %v, %v", poll.Err(), ws.Err())
	}
	if body := <-held; body != "1" {
		t.Fatalf("held GET got %q, want the close packet", body)
	}
	if m := readText(t, c); m != "4last" {
		t.Fatalf("queued message before the close: %q", m)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("want a normal close frame, got %v", err)
	}
	if status, body := f.get("EIO=4&transport=polling"); status != 503 || body != `{"code":3,"message":"Server closing"}` {
		t.Fatalf("handshake after Close: %d %s", status, body)
	}
}

func TestCloseDuringProbe(t *testing.T) {
	f := newFixture(t, &Server{UpgradeTimeout: time.Minute})
	f.get("EIO=4&transport=polling")
	s := f.session()
	c := f.dial("EIO=4&transport=websocket&sid=s1")
	_ = c.WriteMessage(websocket.TextMessage, []byte("2probe"))
	readText(t, c)
	s.Close(nil)
	// The probe WebSocket goes with the session, not after UpgradeTimeout.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _, err := c.ReadMessage()
	if ne, ok := errors.AsType[net.Error](err); err == nil || ok && ne.Timeout() {
		t.Fatalf("probe WebSocket not closed with the session: %v", err)
	}
}

// A session the layer above closes in OnSession still sends its open packet,
// then the close, and leaves nothing registered.
func TestCloseInOnSession(t *testing.T) {
	f := newFixture(t, &Server{})
	onSession := f.srv.OnSession
	f.srv.OnSession = func(s *Session, r *http.Request) {
		onSession(s, r)
		_ = s.Send([]byte("bye"))
		s.Close(errors.New("refused by the layer above"))
	}
	status, body := f.get("EIO=4&transport=polling")
	if status != 200 || !strings.HasPrefix(body, `0{"sid":"s1"`) || !strings.HasSuffix(body, "\x1e4bye\x1e1") {
		t.Fatalf("handshake: %d %q", status, body)
	}
	if err := f.session().Err(); err == nil || err.Error() != "refused by the layer above" {
		t.Fatalf("reason %v", err)
	}
	c := f.dial("EIO=3&transport=websocket")
	if m := readText(t, c); !strings.HasPrefix(m, `0{"sid":"s2"`) {
		t.Fatalf("open packet %q", m)
	}
	if m := readText(t, c); m != "4bye" {
		t.Fatalf("message %q", m)
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("want a normal close, got %v", err)
	}
	f.session()
	deadline := time.Now().Add(2 * time.Second)
	for f.srv.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := f.srv.Len(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

// A write gate that fails closes the session with its error, and the
// messages queued are not written, on a WebSocket and to a polling GET.
func TestWriteGate(t *testing.T) {
	errGate := errors.New("lease lost")
	for _, transport := range []string{"websocket", "polling"} {
		t.Run(transport, func(t *testing.T) {
			f := newFixture(t, &Server{})
			var open atomic.Bool
			open.Store(true)
			var c *websocket.Conn
			if transport == "websocket" {
				c = f.dial("EIO=4&transport=websocket")
				readText(t, c)
			} else {
				f.get("EIO=4&transport=polling")
			}
			s := f.session()
			s.SetWriteGate(func() error {
				if open.Load() {
					return nil
				}
				return errGate
			})
			if err := s.Send([]byte("before")); err != nil {
				t.Fatal(err)
			}
			if transport == "websocket" {
				if got := readText(t, c); got != "4before" {
					t.Fatalf("got %q", got)
				}
			} else if _, body := f.get("EIO=4&transport=polling&sid=" + s.ID()); body != "4before" {
				t.Fatalf("got %q", body)
			}
			open.Store(false)
			_ = s.Send([]byte("after"))
			if transport == "websocket" {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for {
					_, data, err := c.ReadMessage()
					if err != nil {
						break
					}
					if string(data) == "4after" {
						t.Fatal("a message went out past the gate")
					}
				}
			} else if _, body := f.get("EIO=4&transport=polling&sid=" + s.ID()); body != "1" {
				t.Fatalf("polling answer %q, want the close packet alone", body)
			}
			if err := waitClosed(t, s, 5*time.Second); err != errGate {
				t.Fatalf("closed with %v, want the gate's error", err)
			}
		})
	}
}
