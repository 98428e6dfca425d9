// Package gateway holds client sockets (native WebSockets at /ws, Socket.IO
// sessions at /socket.io/) and applies their room memberships from etcd.
//
// # Where state lives
//
// etcd is the one source of truth: the gateway record, each socket's record
// and its memberships, all on the gateway's leases. The gateway keeps a local
// view of it and nothing else:
//   - the hub (hub.go): open sockets and, per room, the local members. The
//     watch goroutine is its only writer of memberships; socket goroutines
//     add and remove sockets; Deliver reads it.
//   - the applied revision (Gateway.applied): how far the hub has followed
//     etcd. Deliver and WaitApplied wait for it to reach the caller's
//     revision, asking etcd for watch progress so an idle prefix does not
//     stall them.
//   - the current session (Gateway.sess): the leases and their proof of life.
//   - per socket, its send queue (writer.go), and with a resume window its
//     resumable (resume.go): resume token, seq and the log of its messages,
//     which outlives a failed connection for the window.
//
// # Goroutines and their owners
//
// Per socket (socket.go, writer.go):
//   - the reader: reads client frames, answers them, and when the socket
//     goes removes it from the hub and from etcd. Counted in Gateway.wg
//     from the HTTP handler on, so Run returns only after it. It exists
//     only while there is something to read: once nothing is buffered it
//     parks the socket on the gateway's poller (readpoll_linux.go, epoll)
//     and exits, and the poller starts it again when the connection is
//     readable, past its read deadline or closed by the writer. (Elsewhere
//     than Linux it stays, blocked in its read.)
//   - the writer: the only goroutine that writes to the connection, after
//     the upgrade: data frames, pings, pongs and the close frame, including
//     the close the WebSocket library asks for on a read-limit or protocol
//     error (socket.go's netConn hands it over). It exists only while there
//     is something to write, and drains a queue bounded in frames and bytes.
//   - one goroutine per socket request in flight (request.go), waited for by
//     the reader.
//   - with a resume window (resume.go), while a socket is detached a timer
//     that ends it when the window passes, and at most one short-lived
//     goroutine at a time writing its record's detached_since, retrying
//     until the record says what the socket is or the socket or session
//     ends. A detached socket has no reader or writer: its hub entry stays,
//     so the watch and Deliver go on serving it.
//
// Per Socket.IO session (socketio.go; the transport's goroutines are
// internal/engineio's):
//   - one goroutine, counted in Gateway.wg, waits for the CONNECT (protocol
//     5), registers the socket, then waits for the session to end and
//     removes it. Inbound packets are handled on Engine.IO's reading
//     goroutine; Engine.IO's writer checks the lease proof before writing
//     (Session.SetWriteGate), as a native writer does.
//   - one goroutine per virtual request in flight, as for native sockets.
//
// Per gateway, one set per session, all ended by the session's context
// (gateway.go's serveSession starts them, lease.go holds most of them):
//   - keepAlive renews the leases, one renewal loop per lease, and fences
//     the session: once the renewals cannot prove every lease alive, the
//     session ends.
//   - the watch (watch.go, a watchfollow.Follower) follows gwm/{gateway}/
//     from the registration revision and applies it to the hub. A failed
//     watch resumes from the applied revision; only after a compaction does
//     it re-list the prefix at a revision and apply the difference.
//   - the janitor (removals.go) deletes the keys of closed sockets, held in
//     the session's pending set until etcd has them gone (no cap, nothing
//     dropped), and every ReconcileInterval removes socket records of the
//     session's leases that no open socket holds.
//   - the pinger pings every socket once per PingInterval.
//
// Per gateway, for its life: the read poller's goroutine (readpoll_linux.go),
// started by the first socket to park, stopped once Run ends.
//
// # When etcd goes away
//
// A session is a set of etcd leases (Config.LeaseShards, each renewed at its
// own staggered slot; several are each granted 1 s more than
// Config.LeaseTTL and renewed 1 s less often: leasesched.go) with
// everything on them. While renewals fail, the session lives on as long as
// the last successful renewals prove every lease alive (their send time plus
// the TTL, less a margin); sockets stay open and deliveries go on. Once the
// proof runs out, whatever etcd says or fails to say, Run ends the session:
// every socket is closed with 1012 (no frame queued before is written after
// that: the writer checks the proof before each batch), new sockets are
// refused with 503, and Run registers again with new leases. Sockets never
// outlive the session whose lease they live on, so a gateway cut off from
// etcd never serves memberships etcd has already deleted with its lease.
//
// # Files
//
//	protocol.go   the WebSocket contract: frame types and shapes, close codes, limits
//	config.go     Config and its defaults
//	gateway.go    Gateway, New, the HTTP mux, Run and the session loop
//	removals.go   closed sockets' keys: the pending set, the janitor, reconcile
//	resume.go     connection state recovery: detached sockets, seq, resume tokens
//	drain.go      SIGTERM: refuse new sockets, detach the rest (1012) until resumed elsewhere
//	lease.go      sessions: leases, their renewal and fencing, the pinger, ending a session
//	leasesched.go when each lease shard is renewed: at its own slot, spread over the period
//	socket.go     the upgrade and a socket's life: registration, the read loop
//	socketio.go   Socket.IO and Sails clients at /socket.io/: the mapping, sessions as hub members
//	writer.go     a socket's send queue and its writer goroutine
//	ratelimit.go  the token bucket limiting client frames
//	origin.go     browser origin checks
//	request.go    socket requests forwarded to the upstream app
//	hub.go        the local room index and fan-out
//	watch.go      following etcd: the watch, apply waits, resync after compaction
//	disconnect.go the API's Disconnect: closing a socket whose notice the watch brings
//	grpc.go       the internal gRPC API (Deliver, WaitApplied) for membership-servers
//	metrics.go    Prometheus metrics
//	backoff.go    retry backoff
//	clock_*.go    the monotonic clock lease deadlines use
package gateway
