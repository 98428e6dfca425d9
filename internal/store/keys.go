package store

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Limits on names, shared by every caller so that keys stay well formed.
const (
	MaxRoomBytes    = 256
	MaxGatewayBytes = 64
	// MaxSocketIDBytes bounds a socket id: gateway, lease (16 hex digits), nonce.
	MaxSocketIDBytes = MaxGatewayBytes + 1 + 16 + 1 + nonceChars
	nonceBytes       = 16 // 128 random bits
	nonceChars       = 22 // base64url without padding of nonceBytes
)

var (
	// ErrInvalidRoom reports a room name outside 1–256 bytes of UTF-8 without
	// control characters.
	ErrInvalidRoom = errors.New("room must be 1 to 256 bytes of UTF-8 without control characters")
	// ErrInvalidSocketID reports a string that cannot be a socket id.
	ErrInvalidSocketID = errors.New("malformed socket id")
	// ErrInvalidGatewayID reports a gateway id outside [A-Za-z0-9_-]{1,64}.
	ErrInvalidGatewayID = errors.New("gateway id must be 1 to 64 characters of [A-Za-z0-9_-]")
	// ErrRoomLikeSocketID reports a room name with the shape of a socket id.
	ErrRoomLikeSocketID = errors.New("room must not have the shape of a socket id ({gateway}.{16 hex digits}.{22 base64url characters}): such a name is reserved for the socket's own room")
)

// ValidateRoom checks a room name: 1 to 256 bytes of UTF-8 without control
// characters (else ErrInvalidRoom), and not shaped like a socket id (else
// ErrRoomLikeSocketID). As in Socket.IO, where every socket is in a room
// named by its own id, a socket id names that socket wherever a room is
// expected (AddRoomMembersToRooms' source): a room spelled like one would be
// mistaken for it. The shape is the socket id grammar, canonical or not
// (upper-case hex digits, a zero lease), so no room is ever confused with a
// socket id, whatever spellings ParseSocketID accepts.
func ValidateRoom(room string) error {
	if len(room) == 0 || len(room) > MaxRoomBytes || !utf8.ValidString(room) {
		return ErrInvalidRoom
	}
	for _, r := range room {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return ErrInvalidRoom
		}
	}
	if hasSocketIDShape(room) {
		return ErrRoomLikeSocketID
	}
	return nil
}

// hasSocketIDShape tells whether s is "{gateway}.{lease}.{nonce}" with a
// gateway of [A-Za-z0-9_-]{1,64}, a lease of 16 hex digits of either case
// and a nonce of 22 base64url characters: every string ParseSocketID
// accepts, and the other spellings of the same shape.
func hasSocketIDShape(s string) bool {
	if len(s) > MaxSocketIDBytes {
		return false
	}
	gw, rest, ok := strings.Cut(s, ".")
	if !ok || ValidateGatewayID(gw) != nil {
		return false
	}
	lease, nonce, ok := strings.Cut(rest, ".")
	if !ok || len(lease) != 16 || len(nonce) != nonceChars {
		return false
	}
	for i := 0; i < len(lease); i++ {
		if c := lease[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	for i := 0; i < len(nonce); i++ {
		if !isIDChar(nonce[i]) { // base64url's alphabet is [A-Za-z0-9_-]
			return false
		}
	}
	return true
}

// ValidateGatewayID checks a gateway id. The charset keeps ids free of the
// separators used in keys and socket ids.
func ValidateGatewayID(id string) error {
	if len(id) == 0 || len(id) > MaxGatewayBytes {
		return ErrInvalidGatewayID
	}
	for i := 0; i < len(id); i++ {
		if !isIDChar(id[i]) {
			return ErrInvalidGatewayID
		}
	}
	return nil
}

func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// SocketID is a parsed socket id. The gateway and its lease are embedded in the
// id so that a membership change needs no read before its transaction; 128
// random bits make ids unguessable. They name the socket's origin: a socket
// moved to another gateway (move.go) keeps its id, and its record names the
// gateway and lease holding it now (SocketRecord.Home).
type SocketID struct {
	Gateway string
	Lease   clientv3.LeaseID
	Nonce   string
}

// Home is where a socket lives: the gateway holding it, under whose gwm/
// prefix its memberships are, and that gateway's lease, which all its keys
// are on.
type Home struct {
	Gateway string           `json:"gateway"`
	Lease   clientv3.LeaseID `json:"lease"`
}

// Origin is the home the id names: the socket's home until it moves.
func (s SocketID) Origin() Home { return Home{Gateway: s.Gateway, Lease: s.Lease} }

// NewSocketID makes a fresh socket id for a socket held by gateway under lease.
func NewSocketID(gateway string, lease clientv3.LeaseID) SocketID {
	var b [nonceBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return SocketID{Gateway: gateway, Lease: lease, Nonce: base64.RawURLEncoding.EncodeToString(b[:])}
}

// String encodes the id as "{gateway}.{lease hex}.{nonce}", the lease as 16
// lower-case hex digits (fmt's %016x of the int64).
//
// A Join or Leave encodes each of its ids several times (keys, guards), so
// this builds the string in one allocation; through fmt it cost 5 % of the
// membership-server's CPU under Join/Leave (BENCHMARKS.md, section 1).
func (s SocketID) String() string {
	lease := int64(s.Lease)
	if lease < 0 { // etcd grants positive ids; fmt writes a sign
		return s.Gateway + "." + fmt.Sprintf("%016x", lease) + "." + s.Nonce
	}
	const hexDigits = "0123456789abcdef"
	var h [16]byte
	for i := len(h) - 1; i >= 0; i-- {
		h[i] = hexDigits[lease&0xf]
		lease >>= 4
	}
	var b strings.Builder
	b.Grow(len(s.Gateway) + 1 + len(h) + 1 + len(s.Nonce))
	b.WriteString(s.Gateway)
	b.WriteByte('.')
	b.Write(h[:])
	b.WriteByte('.')
	b.WriteString(s.Nonce)
	return b.String()
}

// ParseSocketID decodes a socket id made by NewSocketID.
func ParseSocketID(id string) (SocketID, error) {
	// The shape checks the length and every character: the base64 decoder
	// below skips '\r' and '\n', so it alone would take an id with line
	// breaks in it.
	if !hasSocketIDShape(id) {
		return SocketID{}, ErrInvalidSocketID
	}
	gw, rest, _ := strings.Cut(id, ".")
	leaseHex, nonce, _ := strings.Cut(rest, ".")
	lease, err := strconv.ParseUint(leaseHex, 16, 64)
	if err != nil || lease == 0 || lease > math.MaxInt64 {
		return SocketID{}, ErrInvalidSocketID
	}
	// Only the canonical spelling is an id (String's: 16 lower-case hex
	// digits of a positive lease): "ABC" and "abc" as lease digits would
	// name the same socket with two different keys. Checked here rather
	// than by encoding the id again, which every Join and Leave would pay.
	if strings.ContainsAny(leaseHex, "ABCDEF") {
		return SocketID{}, ErrInvalidSocketID
	}
	var b [nonceBytes + 1]byte
	if _, err := base64.RawURLEncoding.Decode(b[:], []byte(nonce)); err != nil {
		return SocketID{}, ErrInvalidSocketID
	}
	return SocketID{Gateway: gw, Lease: clientv3.LeaseID(lease), Nonce: nonce}, nil
}

// escapeRoom makes a room name safe as one key segment: "%" and "/" are
// percent-encoded, nothing else changes, so the mapping is reversible.
func escapeRoom(room string) string {
	if !strings.ContainsAny(room, "%/") {
		return room
	}
	var b strings.Builder
	b.Grow(len(room) + 8)
	for i := 0; i < len(room); i++ {
		switch c := room[i]; c {
		case '%':
			b.WriteString("%25")
		case '/':
			b.WriteString("%2F")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescapeRoom inverts escapeRoom.
func unescapeRoom(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "%25"):
			b.WriteByte('%')
		case strings.HasPrefix(s[i:], "%2F"):
			b.WriteByte('/')
		default:
			return "", fmt.Errorf("%w: bad escape in room key segment %q", ErrCorruptRecord, s)
		}
		i += 2
	}
	return b.String(), nil
}

// keys names every key of the keyspace under one prefix.
type keys struct{ prefix string }

// Each key is built by one concatenation, the segments spelled out rather
// than taken from the prefix methods: a concatenation of a concatenation
// allocates both, and a Join or Leave builds several keys per socket.
func (k keys) gatewaysPrefix() string        { return k.prefix + "gateways/" }
func (k keys) gateway(gw string) string      { return k.prefix + "gateways/" + gw }
func (k keys) socketsPrefix() string         { return k.prefix + "sockets/" }
func (k keys) socket(id string) string       { return k.prefix + "sockets/" + id }
func (k keys) gwmRoot() string               { return k.prefix + "gwm/" }
func (k keys) gwmPrefix(gw string) string    { return k.prefix + "gwm/" + gw + "/" }
func (k keys) roomsPrefix() string           { return k.prefix + "rooms/" }
func (k keys) roomPrefix(room string) string { return k.prefix + "rooms/" + escapeRoom(room) + "/" }
func (k keys) room(room, socket string) string {
	return k.prefix + "rooms/" + escapeRoom(room) + "/" + socket
}

// socketRoomsPrefix is where the memberships of socket s live while gateway
// gw holds it: its current gateway (SocketRecord.Home), not necessarily the
// one its id names.
func (k keys) socketRoomsPrefix(gw string, s SocketID) string {
	return k.prefix + "gwm/" + gw + "/" + s.String() + "/"
}
func (k keys) gwm(gw string, s SocketID, room string) string {
	return k.gwmOf(gw, s.String(), room)
}

// gwmOf is gwm for the socket whose id encodes (SocketID.String) as id.
func (k keys) gwmOf(gw, id, room string) string {
	return k.prefix + "gwm/" + gw + "/" + id + "/" + escapeRoom(room)
}

// socketRange is the socket record's key and the end of the range
// [record, marker] (socketRangeEnd) of the socket whose id encodes as id, as
// a request carries them: both in one allocation, the key a prefix of the
// end and capped so that an append to it copies.
func (k keys) socketRange(id string) (rec, end []byte) {
	end = make([]byte, 0, len(k.prefix)+len("sockets/")+len(id)+1)
	end = append(append(append(end, k.prefix...), "sockets/"...), id...)
	n := len(end)
	end = append(end, '0') // as socketRangeEnd
	return end[:n:n], end
}

// moveMarker is the key of a move of socket id in progress (move.go). It
// sorts right after the record, so that one range, [socket(id),
// socketRangeEnd(id)), holds both: the single compare of a Join's fast path
// covers them together.
func (k keys) moveMarker(id string) string { return k.socket(id) + "/move" }

// socketRangeEnd ends the range of a socket's record and move marker: no
// other socket's record lies in it, since socket ids have one length per
// gateway and no id is a prefix of another.
func (k keys) socketRangeEnd(id string) string { return k.socket(id) + "0" } // '0' follows '/'
