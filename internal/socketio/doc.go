// Package socketio is the Socket.IO packet layer: it reads and writes the
// packets that ride, one per Engine.IO message, between a gateway and
// socket.io-client 4 (protocol 5, over Engine.IO 4) or socket.io-client 2 as
// driven by sails.io.js 1.x (protocol 4, over Engine.IO 3). It works on the
// text of Engine.IO message payloads (without the Engine.IO "4" type) and
// knows nothing of transports, sessions or heartbeats.
//
// Sources: the protocol (github.com/socketio/socket.io-protocol, the v4 and
// v5 revisions), the reference parsers socket.io-parser 3.3 (protocol 4,
// bundled by socket.io-client 2.5) and 4.2 (protocol 5, bundled by
// socket.io-client 4.8), and sails.io.js 1.2's SailsSocket.request and JWR.
// The tests check Decode and the encoders against those parsers, run from
// the pinned packages in internal/testutil/nodejs.
//
// # Packets
//
//	<type>[<namespace>,][<ack id>][<JSON payload>]
//
//	0{"sid":"Zx1…"}          CONNECT answer, protocol 5 (0 alone in protocol 4)
//	2["chat",{"text":"hi"}]  EVENT: socket.on("chat", (data) => …)
//	212["post",{…}]          EVENT asking for ack 12
//	312[{…}]                 ACK 12
//	4{"message":"…"}         CONNECT_ERROR (protocol 4: ERROR, 4"…")
//
// Decode refuses, with a *DecodeError whose kind is one of the Err* values:
// malformed text, an unknown type, binary packets (BINARY_EVENT and
// BINARY_ACK: attachments are not supported), an EVENT or ACK without an
// array, other payloads of the wrong shape, JSON nested deeper or packets
// longer than Limits. The protocol says the receiver of an invalid packet
// MUST close the connection: a gateway closes the Engine.IO session on any
// Decode error, and labels the close with the kind.
//
// # Decisions for the gateway
//
// Namespaces. Only the main namespace "/" is served. A CONNECT to another
// namespace is answered with AppendConnectError(v, nsp,
// MessageInvalidNamespace, nil), as socket.io itself answers: in protocol 5
// the client's connect_error fires, in protocol 4 its "error" event. In
// protocol 5 the client sends CONNECT first and the answer is
// AppendConnect(V5, "/", sid) with the membership socket id as sid (the
// client's socket.id). In protocol 4 the connection to "/" is implicit: the
// gateway sends AppendConnect(V4, "/", "") ("0") right after the Engine.IO
// handshake, and socket.id is the Engine.IO session id, which must
// therefore be the membership socket id.
//
// Credentials. Protocol 5: the CONNECT payload is the client's auth option;
// ConnectAuth reads auth.token as the JWT. Protocol 4 has no CONNECT
// payload: the JWT comes from the handshake's "token" query parameter, as
// for native sockets (sails.io.js: io.sails.query = "token=…"). A refused
// token is answered with AppendConnectError(v, "/", MessageUnauthorized,
// nil) and the session is closed.
//
// Room messages. A Broadcast or Blast {event:"chat", data:{…}} becomes the
// EVENT 2["chat",{…}], built once per message with AppendEvent, which copies
// the already-encoded data without re-encoding it. socket.on("chat", fn) and
// sails.io.js's io.socket.on("chat", fn) receive data as their argument; a
// message without data is sent as 2["chat"] and fn gets no argument.
//
// Notices. The native protocol's joined and left frames become the events
// EventJoined ("membership:joined") and EventLeft ("membership:left"), each
// with the room name as its one argument:
//
//	socket.on("membership:joined", (room) => …)
//
// The gateway also sends "membership:disconnected" with {code, reason}
// before the DISCONNECT packet of the API's Disconnect.
//
// The "membership:" prefix (ReservedPrefix) is kept for the gateway's
// notices, so that no application event can be taken for one.
//
// Reserved names. ReservedEvents lists the names socket.io-client 4 and
// socket.io-client 2 keep for their own lifecycle events (a server event of
// that name would fire the client's connect or disconnect handlers, or be
// refused by the client's parser) and the notices. IsReservedEvent also
// covers the prefix; Broadcast and Blast refuse such an event with
// INVALID_ARGUMENT on the field "event".
//
// Sails virtual requests. io.socket.get/post/put/patch/delete(url, data, cb)
// emit an EVENT named after the method in lower case, with one argument
// {method, headers, data, url} and an ack id (SailsMethods;
// ParseVirtualRequest). The gateway forwards it to its upstream as it
// forwards a native request frame (the method; VirtualRequest.Target's path
// and JSON body: data is the body, or the query of a GET or HEAD as Sails
// reads it; X-Socket-Id; the same limits and timeouts) and answers the ack with
// AppendSailsResponse: [{"body":…,"headers":{…},"statusCode":…}], so that
// sails.io.js calls cb(body, jwr) with jwr.statusCode, jwr.headers and, for
// a status outside 200–399, jwr.error. A request object that is not what
// sails.io.js sends (ErrInvalidRequest) and a refusal by the gateway's
// limits are answered the same way with a 4xx status and {"error":"…"}. A
// virtual request without an ack id is still forwarded; its answer is
// dropped. The request object's headers are not forwarded, as native request
// frames carry none: the upstream trusts X-Socket-Id and X-Socket-User,
// which only the gateway sets, and an allowlist of client headers can come
// later without changing this package (VirtualRequest.Headers has them).
//
// Other client events. Any other event a client emits (socket.emit("typing",
// …) from a socket.io-client 4 app) is not forwarded: with an ack id it is
// answered with AppendUnhandledEvent, a JWR-shaped answer with status 404
// (StatusUnhandledEvent) and {"error":"event \"typing\" is not handled: …"};
// without one it is dropped and counted. An application that wants to reach
// its backend from a plain socket.io-client emits the Sails shape itself,
// which needs no Sails library:
//
//	socket.emit("post", {url: "/leaveFunRoom", data: {roomName: "fun"}},
//	  (res) => res.statusCode === 200 && res.body)
//
// Forwarding arbitrary event names would invent a URL scheme for every
// application and turn any emit into upstream traffic without a route; the
// Sails shape already carries method, path and body.
package socketio
