package socketio

import (
	"errors"
	"strconv"
)

// Error kinds returned by Decode and the payload readers, wrapped in a
// *DecodeError: test them with errors.Is.
var (
	// ErrMalformed: the text is not a packet (bad namespace or ack id,
	// invalid JSON, invalid UTF-8, an ack id where the type takes none).
	ErrMalformed = errors.New("malformed packet")
	// ErrUnknownType: the first character is not a packet type 0–6.
	ErrUnknownType = errors.New("unknown packet type")
	// ErrBinaryUnsupported: BINARY_EVENT or BINARY_ACK. Binary attachments
	// arrive as separate Engine.IO frames, which this layer does not take.
	ErrBinaryUnsupported = errors.New("binary attachments are not supported")
	// ErrNotArray: an EVENT or ACK whose payload is missing or not a JSON
	// array (the protocol requires one).
	ErrNotArray = errors.New("payload is not an array")
	// ErrInvalidPayload: the payload has the wrong shape for its type (an
	// EVENT without a string event name, a reserved event name, a CONNECT
	// payload that is not an object, a DISCONNECT with a payload).
	ErrInvalidPayload = errors.New("invalid payload")
	// ErrTooDeep: the JSON payload nests deeper than Limits.MaxDepth.
	ErrTooDeep = errors.New("payload nested too deep")
	// ErrTooLarge: the packet is longer than Limits.MaxBytes.
	ErrTooLarge = errors.New("packet too large")
	// ErrInvalidRequest: an EVENT named after a Sails method whose request
	// object is not what sails.io.js sends; answer it with a 400 response.
	ErrInvalidRequest = errors.New("invalid virtual request")
)

// DecodeError is a refused packet: Kind is one of the Err* values above,
// Reason says what was wrong and Offset is the byte offset in the packet
// where it was found (-1 when it concerns the whole packet).
type DecodeError struct {
	Kind   error
	Reason string
	Offset int
}

func (e *DecodeError) Error() string {
	s := "socketio: " + e.Kind.Error()
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Offset >= 0 {
		s += " (at byte " + strconv.Itoa(e.Offset) + ")"
	}
	return s
}

// Unwrap returns the kind, for errors.Is.
func (e *DecodeError) Unwrap() error { return e.Kind }

func decodeErr(kind error, off int, reason string) error {
	return &DecodeError{Kind: kind, Reason: reason, Offset: off}
}
