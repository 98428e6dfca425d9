package socketio

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits bound what Decode accepts. A zero field means no limit.
type Limits struct {
	// MaxBytes is the longest encoded packet, in bytes; longer is ErrTooLarge.
	MaxBytes int
	// MaxDepth is the deepest JSON nesting of the payload, counting the
	// outer array or object as 1; deeper is ErrTooDeep.
	MaxDepth int
}

// DefaultLimits are the limits of Decode: 1,000,000 bytes (Engine.IO's
// default maxPayload, which a single message cannot exceed anyway) and a
// nesting depth of 32.
var DefaultLimits = Limits{MaxBytes: 1_000_000, MaxDepth: 32}

// Decode parses one Socket.IO packet, the text of one Engine.IO message
// (without the Engine.IO "4" message type), with DefaultLimits.
//
// The grammar is the reference parser's (socket.io-parser 3.x for protocol
// 4, 4.x for protocol 5):
//
//	<type>[<namespace>,][<ack id>][<JSON payload>]
//
// where the namespace starts with "/" and runs to the first "," (or to the
// end), and the ack id is decimal digits. Decode is stricter than the
// reference in ways that only refuse what no conforming client sends (the
// parity tests list each case with the reference's reading): the text must
// not be empty, the payload is required for EVENT, ACK and CONNECT_ERROR,
// an ack id is taken only on EVENT and ACK (and required on ACK), the event
// name must be a string, and no whitespace may stand before the payload. Protocol 5 refuses the event
// names its parser reserves (ParserReservedEvents), as the reference does.
// Errors are *DecodeError; see the Err* kinds.
func Decode(v Version, s string) (Packet, error) {
	return DefaultLimits.Decode(v, s)
}

// Decode is Decode with these limits.
func (l Limits) Decode(v Version, s string) (Packet, error) {
	if !v.valid() {
		return Packet{}, decodeErr(ErrMalformed, -1, "unsupported protocol version "+strconv.Itoa(int(v)))
	}
	if l.MaxBytes > 0 && len(s) > l.MaxBytes {
		return Packet{}, decodeErr(ErrTooLarge, -1, strconv.Itoa(len(s))+" bytes, limit "+strconv.Itoa(l.MaxBytes))
	}
	if s == "" {
		return Packet{}, decodeErr(ErrMalformed, 0, "empty packet")
	}
	if s[0] < '0' || s[0] > '6' {
		return Packet{}, decodeErr(ErrUnknownType, 0, strconv.Quote(s[:1]))
	}
	p := Packet{Type: Type(s[0] - '0'), Namespace: DefaultNamespace}
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		return Packet{}, decodeErr(ErrBinaryUnsupported, 0, p.Type.String())
	}
	if !utf8.ValidString(s) {
		return Packet{}, decodeErr(ErrMalformed, -1, "invalid UTF-8")
	}
	i := 1
	if i < len(s) && s[i] == '/' {
		if j := strings.IndexByte(s[i:], ','); j < 0 {
			p.Namespace, i = s[i:], len(s)
		} else {
			p.Namespace, i = s[i:i+j], i+j+1
		}
	}
	if start := i; i < len(s) && isDigit(s[i]) {
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		id, err := strconv.ParseUint(s[start:i], 10, 64)
		if err != nil || id > MaxAckID {
			return Packet{}, decodeErr(ErrMalformed, start, "ack id out of range")
		}
		if p.Type != Event && p.Type != Ack {
			return Packet{}, decodeErr(ErrMalformed, start, "ack id on a "+p.Type.String()+" packet")
		}
		p.HasID, p.ID = true, id
	}
	if p.Type == Ack && !p.HasID {
		return Packet{}, decodeErr(ErrMalformed, i, "ACK without an ack id")
	}
	if i < len(s) {
		data := s[i:]
		if isSpace(data[0]) {
			return Packet{}, decodeErr(ErrMalformed, i, "whitespace before the payload")
		}
		if err := checkDepth(data, l.MaxDepth, i); err != nil {
			return Packet{}, err
		}
		p.Data = json.RawMessage(data)
		if !json.Valid(p.Data) {
			return Packet{}, decodeErr(ErrMalformed, i, "payload is not valid JSON")
		}
	}
	if err := checkShape(v, p, i); err != nil {
		return Packet{}, err
	}
	return p, nil
}

// checkShape applies the payload rules of each packet type.
func checkShape(v Version, p Packet, off int) error {
	first := byte(0)
	if len(p.Data) > 0 {
		first = p.Data[0]
	}
	switch p.Type {
	case Connect:
		if first != 0 && first != '{' {
			return decodeErr(ErrInvalidPayload, off, "CONNECT payload must be an object")
		}
	case Disconnect:
		if first != 0 {
			return decodeErr(ErrInvalidPayload, off, "DISCONNECT takes no payload")
		}
	case Event:
		if first != '[' {
			return decodeErr(ErrNotArray, off, "EVENT payload must be an array")
		}
		name, err := firstString(p.Data)
		if err != nil {
			return decodeErr(ErrInvalidPayload, off, err.Error())
		}
		if v == V5 && isParserReserved(name) {
			return decodeErr(ErrInvalidPayload, off, "reserved event name "+strconv.Quote(name))
		}
	case Ack:
		if first != '[' {
			return decodeErr(ErrNotArray, off, "ACK payload must be an array")
		}
	case ConnectError:
		ok := first == '{' || first == '"'
		if v == V4 { // typeof payload === "string" || "object" (null, arrays)
			ok = ok || first == '[' || first == 'n'
		}
		if !ok {
			return decodeErr(ErrInvalidPayload, off, p.Type.String()+" payload must be an object or a string")
		}
	}
	return nil
}

type shapeError string

func (e shapeError) Error() string { return string(e) }

// firstString returns the first element of a valid JSON array, which must
// be a string: the event name of an EVENT payload. It scans instead of
// parsing the whole array: the payload is already known to be valid JSON.
func firstString(data []byte) (string, error) {
	i := 1 // past '['
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	if i < len(data) && data[i] == ']' {
		return "", shapeError("EVENT payload must not be empty")
	}
	if i >= len(data) || data[i] != '"' {
		return "", shapeError("event name must be a string")
	}
	escaped := false
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			if !escaped {
				return string(data[i+1 : j]), nil
			}
			var name string
			if err := json.Unmarshal(data[i:j+1], &name); err != nil {
				return "", err
			}
			return name, nil
		}
	}
	return "", shapeError("event name must be a string")
}

// checkDepth refuses JSON nested deeper than max, before any parser recurses
// into it. off is the payload's offset in the packet, for the error.
func checkDepth(data string, max, off int) error {
	if max <= 0 {
		return nil
	}
	depth, inString := 0, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > max {
				return decodeErr(ErrTooDeep, off+i, "depth over "+strconv.Itoa(max))
			}
		case ']', '}':
			depth--
		}
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
