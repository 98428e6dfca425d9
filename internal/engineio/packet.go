package engineio

import (
	"encoding/base64"
	"errors"
	"fmt"
	"unicode/utf8"
)

// PacketType is an Engine.IO packet type, the same digit in protocols 3 and 4
// (engine.io-protocol, "Packet encoding").
type PacketType byte

const (
	PacketOpen    PacketType = 0
	PacketClose   PacketType = 1
	PacketPing    PacketType = 2
	PacketPong    PacketType = 3
	PacketMessage PacketType = 4
	PacketUpgrade PacketType = 5
	PacketNoop    PacketType = 6
)

// Protocol revisions served: the EIO query parameter.
const (
	Protocol3 = 3 // engine.io-client 3.x, socket.io-client 2.x
	Protocol4 = 4 // engine.io-client 4+, socket.io-client 3 and 4
)

// Packet is one Engine.IO packet. Data is the payload after the type digit
// (for a message, the message itself). Binary marks a binary message; only a
// message can be binary.
type Packet struct {
	Type   PacketType
	Data   []byte
	Binary bool
}

// ErrParse is the decode error of packets and payloads; the wrapped text
// says what was wrong.
var ErrParse = errors.New("engineio: parse error")

func parseErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrParse, fmt.Sprintf(format, args...))
}

// DecodePacket decodes one packet as carried by a WebSocket frame (binary
// tells a binary frame) or as one element of a polling payload (binary
// false).
//
// Text: a type digit 0-6 and the data, or in both protocols "b" and the
// base64 of a binary message ("b4" and base64 in protocol 3, where the type
// digit follows the "b"). Text must be UTF-8.
// Binary frame: protocol 4 carries the message bytes alone; protocol 3 a
// first byte holding the type number (always 4 for a message) and the data.
func DecodePacket(proto int, data []byte, binary bool) (Packet, error) {
	if binary {
		if proto == Protocol3 {
			if len(data) == 0 {
				return Packet{}, parseErr("empty binary packet")
			}
			if data[0] != byte(PacketMessage) {
				return Packet{}, parseErr("binary packet of type %d", data[0])
			}
			return Packet{Type: PacketMessage, Data: data[1:], Binary: true}, nil
		}
		return Packet{Type: PacketMessage, Data: data, Binary: true}, nil
	}
	if len(data) == 0 {
		return Packet{}, parseErr("empty packet")
	}
	if !utf8.Valid(data) {
		return Packet{}, parseErr("packet is not UTF-8")
	}
	if data[0] == 'b' {
		rest := data[1:]
		if proto == Protocol3 {
			if len(rest) == 0 || rest[0] != '0'+byte(PacketMessage) {
				return Packet{}, parseErr("base64 packet is not a message")
			}
			rest = rest[1:]
		}
		raw := make([]byte, base64.StdEncoding.DecodedLen(len(rest)))
		n, err := base64.StdEncoding.Strict().Decode(raw, rest)
		if err != nil {
			return Packet{}, parseErr("bad base64: %v", err)
		}
		return Packet{Type: PacketMessage, Data: raw[:n], Binary: true}, nil
	}
	t := data[0] - '0'
	if t > byte(PacketNoop) {
		return Packet{}, parseErr("unknown packet type %q", data[0])
	}
	return Packet{Type: PacketType(t), Data: data[1:]}, nil
}

// AppendPacket appends the encoding of p to dst and tells whether it must go
// in a binary WebSocket frame. With base64 set (polling payloads), a binary
// message is written as text instead, as DecodePacket reads it back.
func AppendPacket(dst []byte, proto int, p Packet, base64Binary bool) ([]byte, bool) {
	if !p.Binary {
		dst = append(dst, '0'+byte(p.Type))
		return append(dst, p.Data...), false
	}
	if base64Binary {
		dst = append(dst, 'b')
		if proto == Protocol3 {
			dst = append(dst, '0'+byte(PacketMessage))
		}
		return base64.StdEncoding.AppendEncode(dst, p.Data), false
	}
	if proto == Protocol3 {
		dst = append(dst, byte(PacketMessage))
	}
	return append(dst, p.Data...), true
}
