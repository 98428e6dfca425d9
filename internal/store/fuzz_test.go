package store

import (
	"errors"
	"strings"
	"testing"
)

// FuzzRoomKey: every valid room name maps to one key segment without "/"
// and back to itself, distinct names never share a segment, and no valid
// room name is a socket id, in any spelling.
func FuzzRoomKey(f *testing.F) {
	id := NewSocketID("gw-a", 1).String()
	for _, seed := range []string{"fun", "a/b", "100%", "%2F", "%25", "/", "ünï/cødé %", " ", strings.Repeat("é", 128),
		id, strings.ToUpper(id), "gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA", "gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAA"} {
		f.Add(seed, seed+"/")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, room := range []string{a, b} {
			if ValidateRoom(room) != nil {
				return
			}
			if _, err := ParseSocketID(room); err == nil {
				t.Fatalf("valid room %q parses as a socket id", room)
			}
			if _, err := ParseSocketID(strings.ToLower(room)); err == nil && hasSocketIDShape(room) {
				t.Fatalf("valid room %q is a socket id spelled otherwise", room)
			}
			seg := escapeRoom(room)
			if strings.Contains(seg, "/") {
				t.Fatalf("escaped %q contains a slash: %q", room, seg)
			}
			back, err := unescapeRoom(seg)
			if err != nil || back != room {
				t.Fatalf("%q → %q → %q (%v)", room, seg, back, err)
			}
		}
		if a != b && escapeRoom(a) == escapeRoom(b) {
			t.Fatalf("%q and %q share the segment %q", a, b, escapeRoom(a))
		}
	})
}

// FuzzSocketID: parsing never panics, and whatever parses is the canonical
// spelling of an id, one key segment.
func FuzzSocketID(f *testing.F) {
	id := NewSocketID("gw-1", 0x1234)
	for _, seed := range []string{id.String(), "", "x", "gw.0000000000001234.short", "g/w.00000000000abcde." + id.Nonce, "gw.00000000000ABCDE." + id.Nonce, "gw.8000000000000000." + id.Nonce, "gw.ffffffffffffffff." + id.Nonce, "gw.0000000000000000." + id.Nonce} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sid, err := ParseSocketID(s)
		if err != nil {
			return
		}
		if sid.String() != s {
			t.Fatalf("%q parsed but prints as %q", s, sid.String())
		}
		if strings.ContainsAny(s, "/%") || len(s) > MaxSocketIDBytes {
			t.Fatalf("%q is not one safe key segment", s)
		}
		if !errors.Is(ValidateRoom(s), ErrRoomLikeSocketID) {
			t.Fatalf("socket id %q is accepted as a room name: %v", s, ValidateRoom(s))
		}
	})
}
