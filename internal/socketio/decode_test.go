package socketio

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeErrorKinds(t *testing.T) {
	deep := "2[\"d\"," + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "]"
	cases := []struct {
		v    Version
		in   string
		kind error
	}{
		{V5, "", ErrMalformed},
		{V5, "7", ErrUnknownType},
		{V5, "a[]", ErrUnknownType},
		{V4, "51-[\"a\",{\"_placeholder\":true,\"num\":0}]", ErrBinaryUnsupported},
		{V5, "61-3[{\"_placeholder\":true,\"num\":0}]", ErrBinaryUnsupported},
		{V5, `2{"a":1}`, ErrNotArray},
		{V5, `2"chat"`, ErrNotArray},
		{V5, `2`, ErrNotArray},
		{V5, `31{}`, ErrNotArray},
		{V5, `2[]`, ErrInvalidPayload},
		{V5, `2[1]`, ErrInvalidPayload},
		{V5, `2["connect"]`, ErrInvalidPayload},
		{V5, `2["conn\u0065ct",1]`, ErrInvalidPayload}, // escaped, still reserved
		{V5, `0[]`, ErrInvalidPayload},
		{V5, `1{}`, ErrInvalidPayload},
		{V5, `4[]`, ErrInvalidPayload},
		{V4, `4 "x"`, ErrMalformed},
		{V5, `2["a"`, ErrMalformed},
		{V5, `2["a"]]`, ErrMalformed},
		{V5, "2[\"\xff\"]", ErrMalformed},
		{V5, `3[]`, ErrMalformed},                    // ACK without id
		{V5, `01{}`, ErrMalformed},                   // id on CONNECT
		{V5, `29007199254740992["a"]`, ErrMalformed}, // id over 2^53-1
		{V5, `2999999999999999999999["a"]`, ErrMalformed},
		{V5, deep, ErrTooDeep},
		{V5, `2["x","` + strings.Repeat("a", 1_000_000) + `"]`, ErrTooLarge},
		{Version(3), `2["a"]`, ErrMalformed},
	}
	for _, c := range cases {
		p, err := Decode(c.v, c.in)
		if !errors.Is(err, c.kind) {
			in := c.in
			if len(in) > 60 {
				in = in[:60] + "…"
			}
			t.Errorf("Decode(%d, %q) = %+v, %v; want %v", c.v, in, p, err, c.kind)
		}
		var de *DecodeError
		if err != nil && !errors.As(err, &de) {
			t.Errorf("error %v is not a *DecodeError", err)
		}
	}
}

func TestDecodeAccepts(t *testing.T) {
	cases := []struct {
		v    Version
		in   string
		want Packet
	}{
		{V5, `0`, Packet{Type: Connect, Namespace: "/"}},
		{V5, `0{"token":"t"}`, Packet{Type: Connect, Namespace: "/", Data: []byte(`{"token":"t"}`)}},
		{V4, `0/admin?x=1,`, Packet{Type: Connect, Namespace: "/admin?x=1"}},
		{V5, `1/admin`, Packet{Type: Disconnect, Namespace: "/admin"}},
		{V5, `2/admin,12["a",1]`, Packet{Type: Event, Namespace: "/admin", HasID: true, ID: 12, Data: []byte(`["a",1]`)}},
		{V5, `2[ "a" ]`, Packet{Type: Event, Namespace: "/", Data: []byte(`[ "a" ]`)}},
		{V4, `2["connect"]`, Packet{Type: Event, Namespace: "/", Data: []byte(`["connect"]`)}}, // protocol 4's parser reserves nothing
		{V5, `30[]`, Packet{Type: Ack, Namespace: "/", HasID: true, ID: 0, Data: []byte(`[]`)}},
		{V5, `4{"message":"m"}`, Packet{Type: ConnectError, Namespace: "/", Data: []byte(`{"message":"m"}`)}},
		{V4, `4null`, Packet{Type: ConnectError, Namespace: "/", Data: []byte(`null`)}},
	}
	for _, c := range cases {
		p, err := Decode(c.v, c.in)
		if err != nil || !samePacket(p, c.want) {
			t.Errorf("Decode(%d, %q) = %+v, %v; want %+v", c.v, c.in, p, err, c.want)
		}
	}
}

func TestLimits(t *testing.T) {
	l := Limits{MaxBytes: 10, MaxDepth: 2}
	if _, err := l.Decode(V5, `2["a",[1]]`); err != nil {
		t.Errorf("10 bytes, depth 2: %v", err)
	}
	if _, err := l.Decode(V5, `2["a",[1]] `); !errors.Is(err, ErrTooLarge) {
		t.Errorf("11 bytes: %v", err)
	}
	if _, err := (Limits{MaxDepth: 2}).Decode(V5, `2["a",[[]]]`); !errors.Is(err, ErrTooDeep) {
		t.Errorf("depth 3: %v", err)
	}
	if _, err := (Limits{MaxDepth: 1}).Decode(V5, `2["[{\"]"]`); err != nil {
		t.Errorf("brackets inside a string count: %v", err)
	}
	if _, err := (Limits{}).Decode(V5, "2[\"x\","+strings.Repeat("[", 200)+strings.Repeat("]", 200)+"]"); err != nil {
		t.Errorf("zero Limits: %v", err)
	}
}

func samePacket(a, b Packet) bool {
	return a.Type == b.Type && a.Namespace == b.Namespace && a.HasID == b.HasID && a.ID == b.ID && string(a.Data) == string(b.Data) && (a.Data == nil) == (b.Data == nil)
}

func TestForEngineIO(t *testing.T) {
	for eio, want := range map[int]Version{3: V4, 4: V5} {
		if v, ok := ForEngineIO(eio); !ok || v != want {
			t.Errorf("ForEngineIO(%d) = %d, %v", eio, v, ok)
		}
	}
	for _, eio := range []int{0, 2, 5} {
		if _, ok := ForEngineIO(eio); ok {
			t.Errorf("ForEngineIO(%d) ok", eio)
		}
	}
}
