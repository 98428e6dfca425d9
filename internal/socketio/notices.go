package socketio

// Notice event names: what the gateway's joined and left notices become on a
// Socket.IO socket. Each is an EVENT whose one argument is the room name:
//
//	socket.on("membership:joined", (room) => …)   // 2["membership:joined","fun"]
//	socket.on("membership:left", (room) => …)     // 2["membership:left","fun"]
const (
	EventJoined = "membership:joined"
	EventLeft   = "membership:left"
)

// ReservedPrefix starts every event name the gateway keeps for its own
// notices, now and later; Broadcast and Blast refuse such names.
const ReservedPrefix = "membership:"

// AppendJoined appends the notice that the socket joined room:
// 2["membership:joined","<room>"] (with nsp's prefix unless it is "/").
func AppendJoined(dst []byte, nsp, room string) []byte {
	return appendNotice(dst, nsp, EventJoined, room)
}

// AppendLeft appends the notice that the socket left room:
// 2["membership:left","<room>"].
func AppendLeft(dst []byte, nsp, room string) []byte {
	return appendNotice(dst, nsp, EventLeft, room)
}

func appendNotice(dst []byte, nsp, event, room string) []byte {
	dst = appendHeader(dst, Event, nsp)
	dst = append(dst, '[')
	dst = appendJSONString(dst, event)
	dst = append(dst, ',')
	dst = appendJSONString(dst, room)
	return append(dst, ']')
}
