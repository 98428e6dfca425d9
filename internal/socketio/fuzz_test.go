package socketio

import (
	"errors"
	"testing"
)

// FuzzDecode: Decode never panics, refuses only with a known kind, and what
// it accepts survives Encode: Decode(v, Encode(v, p)) is p again, for both
// protocol revisions.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		``, `0`, `0{"token":"t"}`, `0/admin,`, `0/admin?x=1,{"sid":"a"}`, `1`, `1/admin,`,
		`2["chat",{"text":"hi"}]`, `212["post",{"url":"/a","data":{}}]`, `2/admin,3["a",[1,{"b":null}]]`,
		`30[]`, `3/admin,13["bar"]`, `4{"message":"Not authorized"}`, `4"Invalid namespace"`, `4null`,
		`51-["a",{"_placeholder":true,"num":0}]`, `2["connect"]`, `2 ["a"]`, `2/,1["a"]`, `2/a["x"]`,
		`29007199254740991["a"]`, "2[\"\\u2028\"]", "2[\"\xff\"]", `2[[[[[[[[[[]]]]]]]]]]`, `2["conn\u0065ct"]`, `2[ "a\"b\\" ,1]`,
	} {
		f.Add(s)
	}
	kinds := []error{ErrMalformed, ErrUnknownType, ErrBinaryUnsupported, ErrNotArray, ErrInvalidPayload, ErrTooDeep, ErrTooLarge}
	f.Fuzz(func(t *testing.T, s string) {
		for _, v := range []Version{V4, V5} {
			p, err := Decode(v, s)
			if err != nil {
				known := false
				for _, k := range kinds {
					known = known || errors.Is(err, k)
				}
				if !known {
					t.Fatalf("Decode(%d, %q): error of no known kind: %v", v, s, err)
				}
				continue
			}
			enc := Encode(v, p)
			p2, err := Decode(v, enc)
			if err != nil {
				t.Fatalf("Decode(%d, %q) = %+v, but its encoding %q does not decode: %v", v, s, p, enc, err)
			}
			if !samePacket(p, p2) {
				t.Fatalf("Decode(%d, %q) = %+v; encoded %q decodes to %+v", v, s, p, enc, p2)
			}
			if enc2 := Encode(v, p2); enc2 != enc {
				t.Fatalf("encoding not stable: %q then %q", enc, enc2)
			}
			if p.Type == Event {
				name, _, err := p.Event()
				if err != nil {
					t.Fatalf("Decode(%d, %q) accepted an EVENT that Event() refuses: %v", v, s, err)
				}
				if scanned, _ := firstString(p.Data); scanned != name {
					t.Fatalf("Decode(%d, %q): scanned event name %q, Event() %q", v, s, scanned, name)
				}
			}
		}
	})
}
