package socketio

import (
	"encoding/json"
	"strconv"
)

// Version is a Socket.IO protocol revision. The revision follows from the
// Engine.IO handshake: EIO=3 carries protocol 4, EIO=4 carries protocol 5.
type Version int

const (
	// V4 is Socket.IO protocol 4: socket.io 1.x and 2.x, over Engine.IO 3
	// (socket.io-client 2, as bundled by sails.io.js 1.x).
	V4 Version = 4
	// V5 is Socket.IO protocol 5: socket.io 3.x and 4.x, over Engine.IO 4.
	V5 Version = 5
)

// ForEngineIO returns the Socket.IO revision that rides on an Engine.IO
// protocol revision (the EIO query parameter), and false for any other.
func ForEngineIO(eio int) (Version, bool) {
	switch eio {
	case 3:
		return V4, true
	case 4:
		return V5, true
	}
	return 0, false
}

func (v Version) valid() bool { return v == V4 || v == V5 }

// Type is a Socket.IO packet type, the first character of an encoded packet.
type Type byte

// Packet types of protocols 4 and 5. Type 4 is ERROR in protocol 4 and
// CONNECT_ERROR in protocol 5: same number, same use (a refused namespace
// connection), different payload rules.
const (
	Connect      Type = 0
	Disconnect   Type = 1
	Event        Type = 2
	Ack          Type = 3
	ConnectError Type = 4
	BinaryEvent  Type = 5
	BinaryAck    Type = 6
)

// String gives the protocol-5 name of the type.
func (t Type) String() string {
	switch t {
	case Connect:
		return "CONNECT"
	case Disconnect:
		return "DISCONNECT"
	case Event:
		return "EVENT"
	case Ack:
		return "ACK"
	case ConnectError:
		return "CONNECT_ERROR"
	case BinaryEvent:
		return "BINARY_EVENT"
	case BinaryAck:
		return "BINARY_ACK"
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// DefaultNamespace is the main namespace, left out of encoded packets.
const DefaultNamespace = "/"

// MaxAckID is the largest acknowledgement id accepted: 2^53-1, the largest
// integer a JavaScript number holds exactly (the reference parser reads ids
// with Number()).
const MaxAckID = 1<<53 - 1

// Packet is one Socket.IO packet, the payload of one Engine.IO message.
//
// Namespace is "/" for the main namespace (Decode never leaves it empty;
// Encode treats "" as "/"). It is kept verbatim, so a protocol-4 CONNECT to
// "/admin?x=1" keeps its query. ID is the acknowledgement id, meaningful only
// when HasID. Data is the JSON payload exactly as it was on the wire (or as
// it will be written), nil when the packet has none: an array for EVENT and
// ACK, an object for CONNECT, an object or string for CONNECT_ERROR.
type Packet struct {
	Type      Type
	Namespace string
	HasID     bool
	ID        uint64
	Data      json.RawMessage
}

// nsp returns the namespace with "" read as the main namespace.
func (p Packet) nsp() string {
	if p.Namespace == "" {
		return DefaultNamespace
	}
	return p.Namespace
}
