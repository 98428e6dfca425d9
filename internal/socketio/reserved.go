package socketio

import "strings"

// ParserReservedEvents are the names socket.io-parser 4.x (protocol 5)
// refuses in a decoded EVENT (its RESERVED_EVENTS), the same list
// socket.io-client 4's Socket refuses to emit.
var ParserReservedEvents = []string{
	"connect",        // client side
	"connect_error",  // client side
	"disconnect",     // both sides
	"disconnecting",  // server side
	"newListener",    // Node.js EventEmitter
	"removeListener", // Node.js EventEmitter
}

// ReservedEvents are the event names a server must never send as a message
// event: a client would take them for its own lifecycle events. It is the
// union of socket.io-client 4.x's RESERVED_EVENTS (lib/socket.ts), of
// socket.io-client 2.x's reserved events (lib/socket.js `events`, which
// sails.io.js 1.x drives), and of this package's notices. Names starting
// with ReservedPrefix are reserved as well; use IsReservedEvent.
var ReservedEvents = []string{
	// socket.io-client 4.x
	"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
	// socket.io-client 2.x, beyond the above
	"connect_timeout", "connecting", "error", "reconnect", "reconnect_attempt",
	"reconnect_failed", "reconnect_error", "reconnecting", "ping", "pong",
	// the gateway's notices
	EventJoined, EventLeft,
}

var reservedSet = func() map[string]bool {
	m := make(map[string]bool, len(ReservedEvents))
	for _, n := range ReservedEvents {
		m[n] = true
	}
	return m
}()

// IsReservedEvent reports whether name is in ReservedEvents or starts with
// ReservedPrefix: such a name is refused as a Broadcast or Blast event.
func IsReservedEvent(name string) bool {
	return reservedSet[name] || strings.HasPrefix(name, ReservedPrefix)
}

func isParserReserved(name string) bool {
	for _, n := range ParserReservedEvents {
		if n == name {
			return true
		}
	}
	return false
}
