package socketio

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
)

func TestAppendEvent(t *testing.T) {
	cases := []struct {
		nsp, name string
		data      json.RawMessage
		want      string
	}{
		{"/", "chat", json.RawMessage(`{"text":"hi"}`), `2["chat",{"text":"hi"}]`},
		{"", "chat", nil, `2["chat"]`},
		{"/admin", "a\"b", json.RawMessage(`null`), `2/admin,["a\"b",null]`},
		{"/", "<&>", json.RawMessage(`1`), `2["<&>",1]`},
	}
	for _, c := range cases {
		if got := EncodeEvent(c.nsp, c.name, c.data); got != c.want {
			t.Errorf("EncodeEvent(%q, %q, %s) = %q, want %q", c.nsp, c.name, c.data, got, c.want)
		}
	}
	// The data bytes are appended, not re-encoded: non-canonical JSON stays as it is.
	if got := EncodeEvent("/", "x", json.RawMessage(`{ "b":2,"a":1 }`)); got != `2["x",{ "b":2,"a":1 }]` {
		t.Errorf("data re-encoded: %q", got)
	}
	// Appending into a buffer with room does not allocate.
	buf := make([]byte, 0, 256)
	data := json.RawMessage(`{"text":"hello"}`)
	if n := testing.AllocsPerRun(100, func() { buf = AppendEvent(buf[:0], "/", "chat", data) }); n != 0 {
		t.Errorf("AppendEvent allocates %v times", n)
	}
}

func TestAppendJSONStringRoundTrip(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"\\/", "\x00\x1f\x7f", "é☃😀", "\u2028\u2029", "bad\xffutf8\xc3"} {
		enc := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Errorf("%q encodes to invalid JSON %s: %v", s, enc, err)
			continue
		}
		want := string([]rune(s)) // invalid UTF-8 becomes U+FFFD
		if back != want {
			t.Errorf("%q → %s → %q", s, enc, back)
		}
	}
}

func TestPacketEvent(t *testing.T) {
	p, err := Decode(V5, `25["post",{"url":"/a"},2]`)
	if err != nil {
		t.Fatal(err)
	}
	name, args, err := p.Event()
	if err != nil || name != "post" || len(args) != 2 || string(args[0]) != `{"url":"/a"}` || string(args[1]) != "2" {
		t.Errorf("Event() = %q, %s, %v", name, args, err)
	}
	if _, _, err := (Packet{Type: Ack, Data: []byte(`["x"]`)}).Event(); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("Event() on an ACK: %v", err)
	}
}

func TestNotices(t *testing.T) {
	if got := string(AppendJoined(nil, "/", "fun")); got != `2["membership:joined","fun"]` {
		t.Errorf("joined: %q", got)
	}
	if got := string(AppendLeft(nil, "/", `a"b`)); got != `2["membership:left","a\"b"]` {
		t.Errorf("left: %q", got)
	}
}

func TestReservedEvents(t *testing.T) {
	for _, n := range []string{"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
		"error", "reconnect", "reconnecting", "ping", "pong", "connect_timeout", "connecting",
		"reconnect_attempt", "reconnect_failed", "reconnect_error", EventJoined, EventLeft, "membership:other"} {
		if !IsReservedEvent(n) {
			t.Errorf("%q is not reserved", n)
		}
	}
	for _, n := range []string{"chat", "message", "Connect", "get", "post", "membership", "joined", "left"} {
		if IsReservedEvent(n) {
			t.Errorf("%q is reserved", n)
		}
	}
	for _, n := range ParserReservedEvents {
		if !IsReservedEvent(n) {
			t.Errorf("parser-reserved %q is not in ReservedEvents", n)
		}
	}
}

func TestConnect(t *testing.T) {
	cases := map[string]string{
		EncodeConnect(V5, "/", "Zx1"):                                          `0{"sid":"Zx1"}`,
		EncodeConnect(V5, "/admin", "Zx1"):                                     `0/admin,{"sid":"Zx1"}`,
		EncodeConnect(V4, "/", "Zx1"):                                          `0`,
		EncodeConnectError(V5, "/x", MessageInvalidNamespace, nil):             `4/x,{"message":"Invalid namespace"}`,
		EncodeConnectError(V5, "/", "no", json.RawMessage(`{"code":1}`)):       `4{"message":"no","data":{"code":1}}`,
		EncodeConnectError(V4, "/x", MessageInvalidNamespace, nil):             `4/x,"Invalid namespace"`,
		EncodeConnectError(V4, "/", MessageUnauthorized, json.RawMessage(`1`)): `4"Not authorized"`,
		string(AppendDisconnect(nil, "/")):                                     `1`,
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestConnectAuth(t *testing.T) {
	cases := []struct {
		in    string
		token string
		kind  error
	}{
		{`0`, "", nil},
		{`0{}`, "", nil},
		{`0{"token":"eyJ.x.y","other":1}`, "eyJ.x.y", nil},
		{`0{"token":null}`, "", nil},
		{`0{"token":5}`, "", ErrInvalidPayload},
		{`0{"token":{"a":1}}`, "", ErrInvalidPayload},
	}
	for _, c := range cases {
		p, err := Decode(V5, c.in)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ConnectAuth(p)
		if !errors.Is(err, c.kind) || (c.kind == nil && err != nil) || a.Token != c.token {
			t.Errorf("ConnectAuth(%q) = %+v, %v", c.in, a, err)
		}
	}
	if _, err := ConnectAuth(Packet{Type: Event}); !errors.Is(err, ErrInvalidPayload) {
		t.Errorf("ConnectAuth of an EVENT: %v", err)
	}
}

func TestParseVirtualRequest(t *testing.T) {
	// What sails.io.js 1.2.1 sends for io.socket.post('/leaveFunRoom', {roomName:'fun'}, cb)
	// as its first request (ack id 0), with io.sails.headers {"x-app": "a"}.
	p, err := Decode(V4, `20["post",{"method":"post","headers":{"x-app":"a","x-n":3,"x-null":null},"data":{"roomName":"fun"},"url":"/leaveFunRoom"}]`)
	if err != nil {
		t.Fatal(err)
	}
	req, ok, err := ParseVirtualRequest(p)
	want := VirtualRequest{Method: "POST", URL: "/leaveFunRoom", Headers: http.Header{"X-App": {"a"}, "X-N": {"3"}},
		Data: json.RawMessage(`{"roomName":"fun"}`), HasAck: true, AckID: 0}
	if !ok || err != nil || !reflect.DeepEqual(req, want) {
		t.Errorf("got %+v, %v, %v\nwant %+v", req, ok, err, want)
	}

	p, _ = Decode(V5, `27["get",{"url":"/things?x=1"}]`)
	req, ok, err = ParseVirtualRequest(p)
	if !ok || err != nil || req.Method != "GET" || req.URL != "/things?x=1" || string(req.Data) != "{}" || req.AckID != 7 {
		t.Errorf("get without data: %+v, %v, %v", req, ok, err)
	}

	for _, in := range []string{`2["chat",{}]`, `2["POST",{"url":"/"}]`, `2["message"]`} {
		p, _ := Decode(V5, in)
		if _, ok, err := ParseVirtualRequest(p); ok || err != nil {
			t.Errorf("%s: ok=%v err=%v, want not a virtual request", in, ok, err)
		}
	}
	for _, in := range []string{`21["post"]`, `21["post","/x"]`, `21["post",{}]`, `21["post",{"url":5}]`,
		`21["post",{"url":"x"}]`, `21["put",{"url":"/x","headers":[]}]`, `21["put",{"url":"/x","headers":{"a":{}}}]`} {
		p, err := Decode(V5, in)
		if err != nil {
			t.Fatal(in, err)
		}
		req, ok, err := ParseVirtualRequest(p)
		if !ok || !errors.Is(err, ErrInvalidRequest) || !req.HasAck || req.AckID != 1 {
			t.Errorf("%s: %+v ok=%v err=%v, want ErrInvalidRequest with the ack", in, req, ok, err)
		}
	}
}

func TestAppendSailsResponse(t *testing.T) {
	h := http.Header{"Content-Type": {"application/json"}, "Empty": nil, "X-Multi": {"1", "2"}}
	got := string(AppendSailsResponse(nil, "/", 4, 201, h, json.RawMessage(`{"message":"ok"}`)))
	want := `34[{"body":{"message":"ok"},"headers":{"content-type":"application/json","x-multi":"1"},"statusCode":201}]`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	p, err := Decode(V4, got)
	if err != nil {
		t.Fatal(err)
	}
	var res []SailsResponse
	if err := json.Unmarshal(p.Data, &res); err != nil || len(res) != 1 || res[0].StatusCode != 201 || res[0].Headers["content-type"] != "application/json" {
		t.Errorf("decoded %+v, %v", res, err)
	}
}

func TestSailsSDKFromQuery(t *testing.T) {
	q := map[string][]string{"__sails_io_sdk_version": {"1.2.1"}, "__sails_io_sdk_platform": {"node"}, "__sails_io_sdk_language": {"javascript"}}
	sdk, ok := SailsSDKFromQuery(q)
	if !ok || sdk != (SailsSDK{"1.2.1", "node", "javascript"}) {
		t.Errorf("got %+v, %v", sdk, ok)
	}
	if _, ok := SailsSDKFromQuery(nil); ok {
		t.Error("no query: ok")
	}
}

func TestVirtualRequestTarget(t *testing.T) {
	cases := []struct {
		method, url, data string
		path, body        string
		bad               bool
	}{
		{"POST", "/leaveFunRoom", `{"roomName":"fun"}`, "/leaveFunRoom", `{"roomName":"fun"}`, false},
		{"DELETE", "/things/1", `{}`, "/things/1", `{}`, false},
		{"GET", "/things", `{}`, "/things", "", false},
		{"GET", "/things", `{"limit":10,"q":"a b&c","on":true,"f":{"x":1}}`, `/things?f=%7B%22x%22%3A1%7D&limit=10&on=true&q=a+b%26c`, "", false},
		{"HEAD", "/things?sort=asc#top", `{"limit":10}`, "/things?sort=asc&limit=10", "", false},
		{"GET", "/things", `null`, "/things", "", false},
		{"GET", "/things", `[1]`, "", "", true},
	}
	for _, c := range cases {
		r := VirtualRequest{Method: c.method, URL: c.url, Data: json.RawMessage(c.data)}
		path, body, err := r.Target()
		if c.bad {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%s %s %s: %v, want ErrInvalidRequest", c.method, c.url, c.data, err)
			}
			continue
		}
		if err != nil || path != c.path || string(body) != c.body {
			t.Errorf("%s %s %s = %q, %s, %v; want %q, %s", c.method, c.url, c.data, path, body, err, c.path, c.body)
		}
	}
}
