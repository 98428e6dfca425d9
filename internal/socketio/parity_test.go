package socketio

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"

	"github.com/socketrooms/membership/internal/testutil/nodejs"
)

// nodePacket is a packet as the reference parsers hold it.
type nodePacket struct {
	Type int     `json:"type"`
	Nsp  string  `json:"nsp"`
	ID   *uint64 `json:"id,omitempty"`
	Data any     `json:"data,omitempty"`
}

type nodeDecoded struct {
	OK     bool       `json:"ok"`
	Binary bool       `json:"binary"`
	Error  string     `json:"error"`
	Packet nodePacket `json:"packet"`
}

type nodeEncoded struct {
	OK    bool              `json:"ok"`
	Error string            `json:"error"`
	Parts []json.RawMessage `json:"parts"`
}

func nodeRun[T any](t *testing.T, in any, args ...string) []T {
	t.Helper()
	stdin, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	if err := json.Unmarshal(nodejs.Run(t, stdin, "parser.cjs", args...), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// asNode gives a Go-decoded packet the reference parsers' shape.
func asNode(t *testing.T, p Packet) nodePacket {
	t.Helper()
	n := nodePacket{Type: int(p.Type), Nsp: p.Namespace}
	if p.HasID {
		id := p.ID
		n.ID = &id
	}
	if p.Data != nil {
		if err := json.Unmarshal(p.Data, &n.Data); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

var versions = []struct {
	v    Version
	name string
}{{V4, "v4"}, {V5, "v5"}}

// TestParityNodeEncodes: what the clients' parsers encode, Decode reads as
// those parsers read it, and Encode writes back byte for byte.
func TestParityNodeEncodes(t *testing.T) {
	id := func(n uint64) *uint64 { return &n }
	common := []nodePacket{
		{Type: 0, Nsp: "/"},
		{Type: 0, Nsp: "/admin"},
		{Type: 1, Nsp: "/"},
		{Type: 1, Nsp: "/admin"},
		{Type: 2, Nsp: "/", Data: []any{"chat", map[string]any{"text": "hi"}}},
		{Type: 2, Nsp: "/", ID: id(0), Data: []any{"post", map[string]any{"url": "/leaveFunRoom", "data": map[string]any{"roomName": "fun"}}}},
		{Type: 2, Nsp: "/admin", ID: id(9007199254740991), Data: []any{"x"}},
		{Type: 2, Nsp: "/", Data: []any{"héllo ☃ \u2028 \"q\" \\ \n", nil, true, false, 1.5e300, -2, "", []any{}, map[string]any{}}},
		{Type: 2, Nsp: "/", Data: []any{"deep", []any{[]any{[]any{map[string]any{"a": []any{1, 2}}}}}}},
		{Type: 3, Nsp: "/", ID: id(12), Data: []any{}},
		{Type: 3, Nsp: "/admin", ID: id(13), Data: []any{"bar", map[string]any{"body": nil}}},
	}
	perVersion := map[Version][]nodePacket{
		V5: {
			{Type: 0, Nsp: "/", Data: map[string]any{"token": "eyJ.a.b"}},
			{Type: 0, Nsp: "/admin", Data: map[string]any{"sid": "oSO0OpakMV_3jnilAAAA"}},
			{Type: 4, Nsp: "/", Data: map[string]any{"message": "Not authorized", "data": map[string]any{"code": 401}}},
			{Type: 4, Nsp: "/admin", Data: map[string]any{"message": "Invalid namespace"}},
		},
		V4: {
			{Type: 4, Nsp: "/", Data: "Not authorized"},
			{Type: 4, Nsp: "/admin", Data: "Invalid namespace"},
		},
	}
	binary := []nodePacket{
		{Type: 2, Nsp: "/", Data: []any{"file", map[string]any{"$binary": "AQID"}}},
		{Type: 3, Nsp: "/admin", ID: id(4), Data: []any{map[string]any{"$binary": "AQID"}}},
	}
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			in := append(append(append([]nodePacket{}, common...), perVersion[ver.v]...), binary...)
			enc := nodeRun[nodeEncoded](t, in, ver.name, "encode")
			var strs []string
			for i, e := range enc {
				if !e.OK {
					t.Fatalf("node could not encode %+v: %s", in[i], e.Error)
				}
				var s string
				if err := json.Unmarshal(e.Parts[0], &s); err != nil {
					t.Fatal(err)
				}
				strs = append(strs, s)
			}
			dec := nodeRun[nodeDecoded](t, strs, ver.name, "decode")
			for i, s := range strs {
				p, err := Decode(ver.v, s)
				if i >= len(strs)-len(binary) {
					if !errors.Is(err, ErrBinaryUnsupported) || !dec[i].Binary {
						t.Errorf("%q: Go err %v (want ErrBinaryUnsupported); node %+v", s, err, dec[i])
					}
					continue
				}
				if err != nil {
					t.Errorf("Decode(%q): %v", s, err)
					continue
				}
				if !dec[i].OK {
					t.Errorf("node cannot decode its own %q: %s", s, dec[i].Error)
					continue
				}
				if got := asNode(t, p); !reflect.DeepEqual(got, dec[i].Packet) {
					t.Errorf("%q: Go decodes %+v, node %+v", s, got, dec[i].Packet)
				}
				if back := Encode(ver.v, p); back != s {
					t.Errorf("Encode(Decode(%q)) = %q", s, back)
				}
			}
		})
	}
}

// TestParityGoEncodes: what this package writes, the clients' parsers read
// as Decode does, with the meaning each helper promises.
func TestParityGoEncodes(t *testing.T) {
	type want struct {
		s    string
		node nodePacket // the expected reference decoding
	}
	id := func(n uint64) *uint64 { return &n }
	hdr := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"r1"}}
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			cases := []want{
				{EncodeEvent("/", "chat", json.RawMessage(`{"text":"hi"}`)),
					nodePacket{Type: 2, Nsp: "/", Data: []any{"chat", map[string]any{"text": "hi"}}}},
				{EncodeEvent("/", "nodata", nil),
					nodePacket{Type: 2, Nsp: "/", Data: []any{"nodata"}}},
				{EncodeEvent("/admin", "q\"\\\n\t\x01\u2028é☃\xff", json.RawMessage(`[1,"two",null]`)),
					nodePacket{Type: 2, Nsp: "/admin", Data: []any{"q\"\\\n\t\x01\u2028é☃\ufffd", []any{1.0, "two", nil}}}},
				{string(AppendJoined(nil, "/", "fun")),
					nodePacket{Type: 2, Nsp: "/", Data: []any{"membership:joined", "fun"}}},
				{string(AppendLeft(nil, "/", "fun")),
					nodePacket{Type: 2, Nsp: "/", Data: []any{"membership:left", "fun"}}},
				{string(AppendAck(nil, "/", 7, json.RawMessage(`"ok"`), json.RawMessage(`{"n":1}`))),
					nodePacket{Type: 3, Nsp: "/", ID: id(7), Data: []any{"ok", map[string]any{"n": 1.0}}}},
				{string(AppendSailsResponse(nil, "/", 0, 200, hdr, json.RawMessage(`{"message":"left fun"}`))),
					nodePacket{Type: 3, Nsp: "/", ID: id(0), Data: []any{map[string]any{
						"body":       map[string]any{"message": "left fun"},
						"headers":    map[string]any{"content-type": "application/json", "x-request-id": "r1"},
						"statusCode": 200.0}}}},
				{string(AppendSailsResponse(nil, "/", 3, 400, nil, nil)),
					nodePacket{Type: 3, Nsp: "/", ID: id(3), Data: []any{map[string]any{"body": nil, "headers": map[string]any{}, "statusCode": 400.0}}}},
				{string(AppendUnhandledEvent(nil, "/", 5, "typing")),
					nodePacket{Type: 3, Nsp: "/", ID: id(5), Data: []any{map[string]any{
						"body":       map[string]any{"error": `event "typing" is not handled: emit get, post, put, patch or delete with {url, headers, data} to send a request to the application`},
						"headers":    map[string]any{},
						"statusCode": 404.0}}}},
				{string(AppendDisconnect(nil, "/")), nodePacket{Type: 1, Nsp: "/"}},
			}
			if ver.v == V5 {
				cases = append(cases,
					want{EncodeConnect(V5, "/", "sid-1"), nodePacket{Type: 0, Nsp: "/", Data: map[string]any{"sid": "sid-1"}}},
					want{EncodeConnectError(V5, "/admin", MessageInvalidNamespace, nil),
						nodePacket{Type: 4, Nsp: "/admin", Data: map[string]any{"message": "Invalid namespace"}}},
					want{EncodeConnectError(V5, "/", MessageUnauthorized, json.RawMessage(`{"reason":"expired"}`)),
						nodePacket{Type: 4, Nsp: "/", Data: map[string]any{"message": "Not authorized", "data": map[string]any{"reason": "expired"}}}},
				)
			} else {
				cases = append(cases,
					want{EncodeConnect(V4, "/", "ignored"), nodePacket{Type: 0, Nsp: "/"}},
					want{EncodeConnectError(V4, "/admin", MessageInvalidNamespace, nil), nodePacket{Type: 4, Nsp: "/admin", Data: "Invalid namespace"}},
					want{EncodeConnectError(V4, "/", MessageUnauthorized, nil), nodePacket{Type: 4, Nsp: "/", Data: "Not authorized"}},
				)
			}
			var strs []string
			for _, c := range cases {
				strs = append(strs, c.s)
			}
			dec := nodeRun[nodeDecoded](t, strs, ver.name, "decode")
			for i, c := range cases {
				if !dec[i].OK {
					t.Errorf("node refuses %q: %s", c.s, dec[i].Error)
					continue
				}
				if !reflect.DeepEqual(dec[i].Packet, c.node) {
					t.Errorf("node decodes %q as %+v, want %+v", c.s, dec[i].Packet, c.node)
				}
				p, err := Decode(ver.v, c.s)
				if err != nil {
					t.Errorf("Decode(%q): %v", c.s, err)
					continue
				}
				if got := asNode(t, p); !reflect.DeepEqual(got, dec[i].Packet) {
					t.Errorf("%q: Go decodes %+v, node %+v", c.s, got, dec[i].Packet)
				}
			}
		})
	}
}

// TestParityRefused: packets the reference parsers refuse, Decode refuses
// too; and the packets Decode refuses although the reference takes them
// (the documented strictness) are listed with what the reference does.
func TestParityRefused(t *testing.T) {
	both := map[Version][]string{
		V4: {"7", "x", "9[]", `2["a"`, `2{"a":1}`, `2"a"`, `2[]`, "2[\"a\"]\u0000", `3/admin,1{}`, `1"x"`, `51-["a",{"_placeholder":true,"num":0}]`, `5x-[]`, `2[]x`},
		V5: {"7", "x", `2["a"`, `2{"a":1}`, `2[]`, `2[{}]`, `2["connect"]`, `2["conn\u0065ct"]`, `2["disconnect",1]`, `2["newListener"]`, `3/admin,1{}`, `1"x"`, `0[]`, `0"s"`, `4[]`,
			`51-["a",{"_placeholder":true,"num":0}]`, `61-1[{"_placeholder":true,"num":0}]`},
	}
	stricter := map[Version][]string{
		V4: {"", "2", "3", "31", "4", `2[1]`, `0[]`, `0/admin,5`, `2 ["a"]`},
		V5: {"", "2", "3", "31", "4", `2[1]`, `0/admin,5`, `2 ["a"]`, `45"x"`, `4 1`},
	}
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			dec := nodeRun[nodeDecoded](t, both[ver.v], ver.name, "decode")
			for i, s := range both[ver.v] {
				if dec[i].OK {
					t.Errorf("node accepts %q as %+v; move it to the stricter list", s, dec[i].Packet)
				}
				if p, err := Decode(ver.v, s); err == nil {
					t.Errorf("Decode(%q) = %+v, want an error", s, p)
				}
			}
			dec = nodeRun[nodeDecoded](t, stricter[ver.v], ver.name, "decode")
			for i, s := range stricter[ver.v] {
				if p, err := Decode(ver.v, s); err == nil {
					t.Errorf("Decode(%q) = %+v, want an error", s, p)
				}
				ref, _ := json.Marshal(dec[i])
				t.Logf("Decode refuses %q; the reference gives %s", s, ref)
			}
		})
	}
}

// TestReservedEventsMatchClients: ReservedEvents holds every name the
// pinned clients reserve, and ParserReservedEvents is protocol 5's parser
// list, both read from the released sources.
func TestReservedEventsMatchClients(t *testing.T) {
	var info map[string]struct {
		ClientReserved []string `json:"clientReserved"`
		ParserReserved []string `json:"parserReserved"`
	}
	if err := json.Unmarshal(nodejs.Run(t, nil, "parser.cjs", "info"), &info); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v4", "v5"} {
		if len(info[v].ClientReserved) == 0 {
			t.Fatalf("%s: no reserved names read from the client", v)
		}
		for _, n := range info[v].ClientReserved {
			if !IsReservedEvent(n) {
				t.Errorf("socket.io-client %s reserves %q; ReservedEvents lacks it", v, n)
			}
		}
	}
	if !reflect.DeepEqual(info["v5"].ParserReserved, ParserReservedEvents) {
		t.Errorf("socket.io-parser 4 reserves %q; ParserReservedEvents is %q", info["v5"].ParserReserved, ParserReservedEvents)
	}
}
