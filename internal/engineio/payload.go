package engineio

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"unicode/utf8"
)

// recordSeparator separates packets in a protocol 4 polling payload
// (engine.io-parser 5, encodePayload).
const recordSeparator = 0x1e

// maxPayloadPackets bounds the packets decoded from one payload, so a body
// of separators cannot make a huge slice.
const maxPayloadPackets = 4096

// DecodePayload splits an HTTP long-polling body into its packets.
//
// Protocol 4: packets joined by the record separator 0x1e, binary messages in
// base64. Protocol 3 (engine.io-parser 2, string payloads): each packet is
// "<length>:<packet>", the length counted in UTF-16 code units of the packet
// as JavaScript counts String.length; empty packets are skipped.
// The packets' Data alias body.
func DecodePayload(proto int, body []byte) ([]Packet, error) {
	if len(body) == 0 {
		return nil, parseErr("empty payload")
	}
	var out []Packet
	if proto == Protocol4 {
		for len(body) > 0 || out == nil {
			var part []byte
			if i := bytes.IndexByte(body, recordSeparator); i >= 0 {
				part, body = body[:i], body[i+1:]
				if len(body) == 0 {
					return nil, parseErr("payload ends with a separator")
				}
			} else {
				part, body = body, nil
			}
			if len(out) == maxPayloadPackets {
				return nil, parseErr("more than %d packets in a payload", maxPayloadPackets)
			}
			p, err := DecodePacket(proto, part, false)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}
	if !utf8.Valid(body) {
		return nil, parseErr("payload is not UTF-8")
	}
	for len(body) > 0 {
		colon := bytes.IndexByte(body, ':')
		if colon <= 0 || colon > 10 {
			return nil, parseErr("bad length prefix")
		}
		n, err := strconv.Atoi(string(body[:colon]))
		if err != nil || n < 0 || body[0] == '+' || body[0] == '-' {
			return nil, parseErr("bad length prefix %q", body[:colon])
		}
		body = body[colon+1:]
		end, ok := utf16Prefix(body, n)
		if !ok {
			return nil, parseErr("packet length %d exceeds the payload", n)
		}
		part := body[:end]
		body = body[end:]
		if len(part) == 0 {
			continue
		}
		if len(out) == maxPayloadPackets {
			return nil, parseErr("more than %d packets in a payload", maxPayloadPackets)
		}
		p, err := DecodePacket(proto, part, false)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if out == nil {
		return nil, parseErr("payload holds no packet")
	}
	return out, nil
}

// utf16Prefix returns the byte length of the first n UTF-16 code units of the
// valid UTF-8 text s; false if s is shorter or n ends inside a surrogate pair.
func utf16Prefix(s []byte, n int) (int, bool) {
	i := 0
	for n > 0 {
		if i >= len(s) {
			return 0, false
		}
		if s[i] < utf8.RuneSelf {
			i++
			n--
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		units := 1
		if r >= 0x10000 {
			units = 2
		}
		if units > n {
			return 0, false
		}
		i += size
		n -= units
	}
	return i, true
}

// utf16Len is the length JavaScript's String.length gives the valid UTF-8
// text s.
func utf16Len(s []byte) int {
	// A rune is one unit, two from U+10000 on: count the bytes that start a
	// rune, and once more those that start a four-byte one.
	n := 0
	for _, c := range s {
		if c&0xC0 != 0x80 {
			n++
		}
		if c >= 0xF0 {
			n++
		}
	}
	return n
}

// AppendPayload appends packets as one polling body, binary messages in
// base64 (the form DecodePayload reads). Text data must be UTF-8.
func AppendPayload(dst []byte, proto int, packets []Packet) []byte {
	for i, p := range packets {
		if proto == Protocol4 {
			if i > 0 {
				dst = append(dst, recordSeparator)
			}
			dst, _ = AppendPacket(dst, proto, p, true)
			continue
		}
		var n int
		if p.Binary {
			n = 2 + base64.StdEncoding.EncodedLen(len(p.Data))
		} else {
			n = 1 + utf16Len(p.Data)
		}
		dst = strconv.AppendInt(dst, int64(n), 10)
		dst = append(dst, ':')
		dst, _ = AppendPacket(dst, proto, p, true)
	}
	return dst
}
