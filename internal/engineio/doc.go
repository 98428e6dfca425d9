// Package engineio is an Engine.IO server, protocols 3 and 4, the transport
// under Socket.IO: HTTP long-polling, WebSocket, and the upgrade from the
// first to the second. It follows socketio/engine.io-protocol and the
// reference server socketio/engine.io (lib/server.ts, lib/socket.ts,
// lib/transports) where they say what a client sees.
//
// # Shape
//
// A Server is an http.Handler mounted at one path (/socket.io/). A request
// without ?sid= is a handshake: Authorize admits it, NewID names the session
// (the id becomes the Socket.IO socket id, so the caller chooses it), the
// open packet goes out, and OnSession hands the Session to the layer above.
// Later requests find their session by sid.
//
// A Session holds its id and protocol, the transport in use, a send queue of
// packets bounded in frames and bytes (Send never blocks; overflow closes
// the session with ErrQueueFull), two heartbeat timers, and the reason it
// closed. Messages in are given to the function set with OnMessage; messages
// out are text (Send refuses other bytes). Inbound binary messages are
// decoded and handed over marked binary; binary polling bodies are refused.
//
// # Goroutines and their owners
//
//   - WebSocket session: the request's goroutine reads frames and hands them
//     on; one writer goroutine (Session.writeLoop) is the only one that
//     writes to the connection, data, heartbeat packets and the close frame,
//     and closes it, which ends the reader. The request returns after both;
//     Server.Close waits for them, and refuses new handshakes and upgrades
//     from its start.
//   - Polling session: no goroutine of its own. A GET's goroutine waits for
//     queued packets and writes them as one payload (one GET at a time: a
//     second is an overlap and closes the session); a POST's goroutine reads
//     the payload and hands its messages on in order.
//   - Upgrade: the WebSocket request's goroutine runs the probe, writing to
//     its connection alone, then becomes the session's reader and starts its
//     writer.
//   - Heartbeat: two time.AfterFunc timers per session, no goroutine while
//     idle. Protocol 4: the server pings every PingInterval and closes the
//     session if no pong comes within PingTimeout. Protocol 3: the client
//     pings and the server answers; a session that sends nothing for
//     PingInterval+PingTimeout closes.
//
// # Limits
//
//   - MaxPayload: one inbound WebSocket message, or one POST body; past it
//     the session closes with ErrPayloadTooLarge (413 for the POST).
//   - MaxQueueFrames, MaxQueueBytes: outbound packets waiting per session;
//     the bytes a writer has taken and not yet written count too.
//   - WriteTimeout: one WebSocket write; a client that stalls it is closed.
//   - JSONP polling (?j=) is refused with 400.
//
// # Cross-origin
//
// With Server.CheckOrigin set, browser requests are checked by their Origin
// on every request and admitted ones get engine.io's CORS headers (origin
// echoed, credentials allowed, 204 preflights); see Server.CheckOrigin.
//
// # Refusals
//
// Requests are refused as engine.io refuses them: HTTP 400 (403 for a
// refused Authorize or origin) with {"code":N,"message":"…"}, N from the Code
// constants: unknown EIO version (5), transport (0) or sid (1), a handshake
// that is not a GET (2), other bad requests (3).
package engineio
