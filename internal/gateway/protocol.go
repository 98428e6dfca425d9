// The client protocol: what a gateway says to a WebSocket client at /ws and
// what it accepts from one. This file is to the WebSocket what proto/ is to
// gRPC: every frame type, its JSON shape, every close code the gateway sends
// and the limits a client can run into are defined here and nowhere else.
//
// Frames are WebSocket text messages, each one JSON object with a "type".
//
// Gateway to client:
//
//	{"type":"connected","socket_id":"gw-1.6a1f…","user":"alice","resume_token":"r1.…"}  first frame of every socket; user only with authentication, resume_token only with a resume window
//	{"type":"joined","room":"fun"}                                  the socket is now a member of room
//	{"type":"left","room":"fun"}                                    the socket is no longer a member of room
//	{"type":"message","seq":7,"room":"fun","event":"chat","data":…} a Broadcast to room; "room" absent for a blast to every socket; data null when none; seq only with a resume window
//	{"type":"response","id":1,"status":200,"body":…}                the answer to a socket request
//
// Client to gateway:
//
//	{"type":"request","id":1,"method":"POST","path":"/leaveFunRoom","body":{…}}
//
// A socket request is forwarded to the upstream app beside the gateway with
// header X-Socket-Id (and X-Socket-User with authentication), and the app's
// answer comes back as a response frame with the same id. Every failure is a
// response with a status, never a dead socket: 400 for a malformed request,
// 413 for an oversized body, 429 past the per-socket limit of requests in
// flight or past the frame rate, 501 without an upstream, 502 when the
// upstream is unreachable or answers too much, 504 when it is too slow; the
// body is then {"error":"…"}. Client frames of any other type are ignored.
//
// No joined, left or message frame precedes connected, and none is sent
// before the socket is registered in etcd (it can be joined). Frames for one
// socket go out in the order the gateway applied them.
//
// Connection state recovery (resume.go), with Config.ResumeWindow > 0
// (--resume-window, 2m by default in the gateway binary; 0 leaves every frame
// as above without resume_token and seq, and ignores resume parameters):
//
//   - Every message frame carries "seq", the socket's message counter: 1 for
//     its first message, one more for each.
//   - A socket whose connection fails (no close frame from the client: end of
//     stream, reset, ping timeout, failed write) stays resumable for the
//     window: a member of its rooms, Join and Leave applying to it, its
//     messages kept. A close frame from the client ends it at once.
//   - GET /ws?resume_token=<the last connected frame's>&last_seq=<the seq of
//     the last message received, 0 for none> resumes it; the first frame is
//     {"type":"connected","socket_id":<the same>,"resumed":true,"rooms":[…],"resume_token":<new>}
//     (rooms sorted, as they are now), then every message with seq > last_seq
//     in order, then live ones. A token resumes once. A connection that the
//     gateway still thinks up is taken over (closed with 1000).
//   - When it cannot be resumed the socket is new, as without a token, and
//     the connected frame has "resumed":false and "resume_error": EXPIRED
//     (the window passed), TOO_FAR_BEHIND (more was missed than
//     --resume-buffer-bytes keeps, or last_seq is older than what is kept),
//     GATEWAY_LOST (the gateway that held it lost its lease or was
//     restarted), or UNKNOWN (a token that is malformed, guessed, spent,
//     another user's, issued by another gateway, for a socket closed by its
//     client or the API, or a last_seq it was never sent).
//   - A last_seq that is not a decimal integer, or one without resume_token,
//     is refused with 400 before the upgrade.
//
// Socket.IO sessions are never resumed: they reconnect as new sockets.
//
// Socket.IO and Sails clients at /socket.io/ get the same frames as
// Socket.IO packets; socketio.go states that mapping.
package gateway

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// Frame types (the "type" member of every frame).
const (
	frameConnected = "connected" // gateway → client
	frameJoined    = "joined"    // gateway → client
	frameLeft      = "left"      // gateway → client
	frameMessage   = "message"   // gateway → client
	frameResponse  = "response"  // gateway → client
	frameRequest   = "request"   // client → gateway
)

// frame is every frame the gateway sends; fields a type does not use are
// left out.
type frame struct {
	Type     string          `json:"type"`
	SocketID string          `json:"socket_id,omitempty"`
	User     string          `json:"user,omitempty"`
	Room     string          `json:"room,omitempty"`
	Event    string          `json:"event,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	ID       json.RawMessage `json:"id,omitempty"`
	Status   int             `json:"status,omitempty"`
	Body     json.RawMessage `json:"body,omitempty"`
}

func encode(f frame) []byte {
	b, err := json.Marshal(f)
	if err != nil {
		panic(err) // only RawMessage fields can fail, and callers pass valid JSON
	}
	return b
}

// connected is the connected frame: frame's fields that only it has.
type connected struct {
	Type        string    `json:"type"`
	SocketID    string    `json:"socket_id"`
	User        string    `json:"user,omitempty"`
	Resumed     *bool     `json:"resumed,omitempty"`
	Rooms       *[]string `json:"rooms,omitempty"`
	ResumeToken string    `json:"resume_token,omitempty"`
	ResumeError string    `json:"resume_error,omitempty"`
}

func encodeConnected(f connected) []byte {
	f.Type = frameConnected
	b, err := json.Marshal(f)
	if err != nil {
		panic(err)
	}
	return b
}

// connectedFrame is a new socket's first frame: token is its resume token
// ("" when sockets are not resumable); triedResume says the client asked to
// resume, which failed with resumeErr.
func connectedFrame(socketID, user, token string, triedResume bool, resumeErr string) []byte {
	f := connected{SocketID: socketID, User: user, ResumeToken: token, ResumeError: resumeErr}
	if triedResume {
		f.Resumed = new(bool)
	}
	return encodeConnected(f)
}

// resumedFrame is a resumed socket's first frame, with its rooms now and its
// new resume token.
func resumedFrame(socketID, user string, rooms []string, token string) []byte {
	yes := true
	return encodeConnected(connected{SocketID: socketID, User: user, Resumed: &yes, Rooms: &rooms, ResumeToken: token})
}

// controlFrame is a joined or left frame.
func controlFrame(typ, room string) []byte { return encode(frame{Type: typ, Room: room}) }

func messageFrame(room, event string, data json.RawMessage) []byte {
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	return encode(frame{Type: frameMessage, Room: room, Event: event, Data: data})
}

// responseFrame answers the request with id (JSON null when the request had
// no usable id).
func responseFrame(id json.RawMessage, status int, body json.RawMessage) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	return encode(frame{Type: frameResponse, ID: id, Status: status, Body: body})
}

// requestFrame is a client's socket request. id is a JSON string or number.
// method is one of allowedMethods ("" means GET, case does not matter); path
// is an absolute path with an optional query, resolved against the upstream
// URL; body, any JSON, is sent as the request body.
type requestFrame struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body"`
}

var allowedMethods = map[string]bool{
	http.MethodGet: true, http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true,
	http.MethodDelete: true, http.MethodHead: true, http.MethodOptions: true,
}

// errorBody is a JSON body {"error": msg}.
func errorBody(msg string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}

// Close codes the gateway sends (RFC 6455 §7.4). Every close means the socket
// is gone, with its memberships: a client that reconnects gets a new socket
// id, in no room; only a connection that failed without a close leaves a
// resumable socket (resume.go), and 1000 also closes a connection whose
// socket was resumed on another.
const (
	closeNormal          = websocket.CloseNormalClosure           // 1000: the client closed, or its connection failed, or its socket resumed on another connection
	closeGoingAway       = websocket.CloseGoingAway               // 1001: the gateway is shutting down
	closeProtocolError   = websocket.CloseProtocolError           // 1002: a frame broke RFC 6455 (bad opcode, unmasked, RSV bits, …)
	closeUnsupportedData = websocket.CloseUnsupportedData         // 1003: a binary frame; text frames only
	closeBadData         = websocket.CloseInvalidFramePayloadData // 1007: a frame that is not a JSON object
	closePolicyViolation = websocket.ClosePolicyViolation         // 1008: frames far past the rate (maxOverRate)
	closeTooBig          = websocket.CloseMessageTooBig           // 1009: a frame larger than Config.MaxFrameBytes
	closeInternal        = websocket.CloseInternalServerErr       // 1011: the socket could not be registered in etcd
	closeServiceRestart  = websocket.CloseServiceRestart          // 1012: the gateway lost its etcd lease (or is re-registering): reconnect
	closeTryAgainLater   = websocket.CloseTryAgainLater           // 1013: too slow: the socket's send queue passed its frame or byte bound; or, before any frame, a resume to try again (resumeRetry)
	// 4000–4999: the membership API's Disconnect, with its caller's code and
	// reason (disconnect.go); clients do not reconnect on them.
)

// closeAbnormal (1006) is never sent: it marks a socket whose connection
// failed while writing, which is dropped without a close frame because the
// stream may end inside a frame.
const closeAbnormal = websocket.CloseAbnormalClosure

// Limits of the protocol, the defaults of Config fields that set them.
const (
	// defaultMaxFrameBytes bounds a client frame; a larger one closes the
	// socket with 1009.
	defaultMaxFrameBytes = 1 << 20
	// defaultSendQueue bounds the frames queued to a socket, and
	// defaultMaxSocketQueueBytes their bytes (with those being written):
	// a frame that would take a socket past either closes it with 1013,
	// counted in gateway_slow_client_disconnects_total. A socket never holds
	// more, however large the messages; one that cannot keep up is closed
	// rather than slowing anyone else, and reconnects as a new socket.
	defaultSendQueue           = 256
	defaultMaxSocketQueueBytes = 4 << 20
	// defaultPingInterval is how often the gateway pings; a socket silent
	// (no frame, no pong) for two intervals is dropped.
	defaultPingInterval = 25 * time.Second
	// defaultFramesPerSecond is the client frame rate; bursts of
	// burstSeconds worth are allowed, past it requests are answered 429, and
	// maxOverRate seconds' worth of frames in a row past it closes the
	// socket with 1008.
	defaultFramesPerSecond = 50
	burstSeconds           = 2
	maxOverRate            = 4
	// defaultMaxInflight bounds a socket's requests in flight; past it 429.
	defaultMaxInflight = 16
	// defaultMaxRequestBody bounds a request's body; past it 413.
	defaultMaxRequestBody = 64 << 10
	// defaultMaxResponseBody bounds the upstream's answer; past it 502.
	defaultMaxResponseBody = 1 << 20
)
