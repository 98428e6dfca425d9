package socketio

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// AppendEvent appends the EVENT packet ["name", data] for namespace nsp to
// dst, without re-encoding data: the bytes of data are copied as they are,
// which is what a broadcast needs (the payload is encoded once and appended
// to each socket's packet). data must be valid JSON; nil or empty means the
// event has no argument (["name"]), so the handler is called with none.
// The name is written as a JSON string.
//
//	AppendEvent(nil, "/", "chat", []byte(`{"text":"hi"}`)) → 2["chat",{"text":"hi"}]
func AppendEvent(dst []byte, nsp, name string, data json.RawMessage) []byte {
	dst = appendHeader(dst, Event, nsp)
	dst = append(dst, '[')
	dst = appendJSONString(dst, name)
	if len(data) > 0 {
		dst = append(dst, ',')
		dst = append(dst, data...)
	}
	return append(dst, ']')
}

// EncodeEvent is AppendEvent into a new string.
func EncodeEvent(nsp, name string, data json.RawMessage) string {
	return string(AppendEvent(make([]byte, 0, len(name)+len(data)+8), nsp, name, data))
}

// AppendAck appends the ACK packet answering ack id id with args (each valid
// JSON, copied as is) to dst: 3<id>[arg,…].
func AppendAck(dst []byte, nsp string, id uint64, args ...json.RawMessage) []byte {
	dst = appendHeader(dst, Ack, nsp)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '[')
	for i, a := range args {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, a...)
	}
	return append(dst, ']')
}

// Event splits an EVENT packet's payload into its name and arguments
// (each raw JSON). It fails with ErrNotArray or ErrInvalidPayload for a
// payload Decode would refuse, and for a packet that is not an EVENT.
func (p Packet) Event() (name string, args []json.RawMessage, err error) {
	if p.Type != Event {
		return "", nil, decodeErr(ErrInvalidPayload, -1, "not an EVENT packet")
	}
	var all []json.RawMessage
	if len(p.Data) == 0 || p.Data[0] != '[' || json.Unmarshal(p.Data, &all) != nil {
		return "", nil, decodeErr(ErrNotArray, -1, "EVENT payload must be an array")
	}
	if len(all) == 0 || json.Unmarshal(all[0], &name) != nil || all[0][0] != '"' {
		return "", nil, decodeErr(ErrInvalidPayload, -1, "event name must be a string")
	}
	return name, all[1:], nil
}

func appendHeader(dst []byte, t Type, nsp string) []byte {
	dst = append(dst, '0'+byte(t))
	if nsp != "" && nsp != DefaultNamespace {
		dst = append(dst, nsp...)
		dst = append(dst, ',')
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD;
// U+2028 and U+2029 are escaped so the text is also valid JavaScript.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
