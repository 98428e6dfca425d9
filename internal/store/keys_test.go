package store

import (
	"errors"
	"strings"
	"testing"
)

// A room name with the shape of a socket id is refused with its own error,
// whether or not ParseSocketID would take it; names that only resemble the
// shape are rooms.
func TestValidateRoomRefusesSocketIDShape(t *testing.T) {
	id := NewSocketID("gw-a", 0xabcdef).String()
	for room, want := range map[string]error{
		id:                               ErrRoomLikeSocketID,
		strings.ToUpper(id[:5]) + id[5:]: ErrRoomLikeSocketID, // another gateway
		"gw-a.0000000000ABCDEF." + id[len(id)-nonceChars:]:                   ErrRoomLikeSocketID, // upper-case hex
		"gw-a.0000000000000000.AAAAAAAAAAAAAAAAAAAAAA":                       ErrRoomLikeSocketID, // lease 0
		"gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA":                       ErrRoomLikeSocketID,
		"g.0000000000000001.__________--------____":                          ErrRoomLikeSocketID,
		strings.Repeat("g", 64) + ".0000000000000001.AAAAAAAAAAAAAAAAAAAAAA": ErrRoomLikeSocketID,
		strings.Repeat("g", 65) + ".0000000000000001.AAAAAAAAAAAAAAAAAAAAAA": nil, // gateway too long
		"gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAA":                        nil, // 21-character nonce
		"gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAAA":                      nil, // 23
		"gw-a.000000000000001.AAAAAAAAAAAAAAAAAAAAAA":                        nil, // 15 hex digits
		"gw-a.000000000000000g.AAAAAAAAAAAAAAAAAAAAAA":                       nil,
		"gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAA=":                       nil,
		"gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAA+":                       nil,
		"gw a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA":                       nil,
		".0000000000000001.AAAAAAAAAAAAAAAAAAAAAA":                           nil,
		"gw-a.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA.x":                     nil,
		"gw-a.0000000000000001":                                              nil,
		"fun":                                                                nil,
		"":                                                                   ErrInvalidRoom,
	} {
		if err := ValidateRoom(room); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("ValidateRoom(%q) = %v, want %v", room, err, want)
		}
	}
}
