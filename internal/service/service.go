// Package service implements membership.v1.MembershipService: each handler
// validates its request, makes one narrow call to the store (and, for
// deliveries, to the gateways), and returns through the one error mapper in
// errors.go. The service keeps no state of its own beyond connections to
// gateways (internal/gatewayconn) and its broadcast target index, so any
// number of replicas can serve the same etcd cluster.
//
// Files: service.go holds the server and the membership changes, read.go
// the listings, deliver.go Broadcast and Blast, users.go the user selector
// of Join/Leave and ListSockets, presence.go GetRoom, listgateways.go
// ListGateways, disconnect.go Disconnect, watch.go the WatchMembership
// streams, validate.go request checks, errors.go the one error mapper,
// metrics.go the metrics.
package service

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gatewayconn"
	"github.com/socketrooms/membership/internal/store"
)

// SocketIDMetadata is the call metadata naming the requesting socket (the
// socket-request form of Join/Leave, and the socket a Broadcast skips).
const SocketIDMetadata = "x-socket-id"

// Limits on requests.
const (
	defaultPageSize  = 100
	maxPageSize      = 1000
	maxRoomsPerCall  = 100
	maxEventBytes    = 256
	maxExceptSockets = 1000
)

// Server serves MembershipService.
type Server struct {
	membershipv1.UnimplementedMembershipServiceServer

	metrics   *metrics
	store     *store.Store
	targets   *store.TargetIndex
	stopIndex func()
	stopBatch func()
	log       *slog.Logger
	gateways  *gatewayconn.Pool
	// maxPayload bounds the JSON of a message's data.
	maxPayload int
	// watches are the WatchMembership streams (watch.go).
	watches *watchStreams
}

// Options tune a Server; the zero value is the default.
type Options struct {
	// BatchCommitters is how many coalesced Join/Leave transactions may be in
	// flight at once (store.StartBatching); 0 means 4, negative turns
	// coalescing off (one etcd transaction per call).
	BatchCommitters int
	// Registry receives the service's metrics; nil: none are kept.
	Registry prometheus.Registerer
	// GatewayDialOptions are added when dialing gateways (credentials).
	GatewayDialOptions []grpc.DialOption
	// MaxRoomsPerSocket limits the rooms a socket may be in; a Join past it
	// fails with FAILED_PRECONDITION/ROOM_LIMIT_EXCEEDED. 0: no limit (a
	// limit costs each Join one more etcd read; see store/limit.go).
	MaxRoomsPerSocket int
	// MaxPayloadBytes limits the JSON encoding of a Broadcast's or Blast's
	// data; 0 means DefaultMaxPayloadBytes.
	MaxPayloadBytes int
	// EtcdLimits are the etcd server's --max-txn-ops and --max-request-bytes
	// (and the client's send limit) that every transaction is sized against;
	// zero fields mean etcd's defaults (store.TxnLimits). They also bound how
	// many sockets one Join or Leave may name.
	EtcdLimits store.TxnLimits
	// Watch bounds WatchMembership streams (watch.go).
	Watch WatchOptions
}

// DefaultMaxPayloadBytes is the default of Options.MaxPayloadBytes: the
// largest frame a gateway accepts from a client, so what a client may send
// is also what it may be sent.
const DefaultMaxPayloadBytes = 1 << 20

// New returns a Server over an etcd client, with keys under prefix.
func New(kv *clientv3.Client, prefix string, log *slog.Logger) *Server {
	return NewWithOptions(kv, prefix, log, Options{})
}

// NewWithOptions is New with tuning. opts.EtcdLimits must pass
// store.TxnLimits.Validate (check flags with it first); it panics otherwise.
func NewWithOptions(kv *clientv3.Client, prefix string, log *slog.Logger, opts Options) *Server {
	if log == nil {
		log = slog.Default()
	}
	st := store.New(kv, prefix)
	if err := st.SetTxnLimits(opts.EtcdLimits); err != nil {
		panic("service options: " + err.Error())
	}
	stop := func() {}
	switch {
	case opts.BatchCommitters == 0:
		stop = st.StartBatching(batchCommitters)
	case opts.BatchCommitters > 0:
		stop = st.StartBatching(opts.BatchCommitters)
	}
	st.SetMaxRoomsPerSocket(opts.MaxRoomsPerSocket)
	targets := st.NewTargetIndex(kv, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { targets.Run(ctx); close(done) }()
	srv := &Server{
		store: st, targets: targets, stopIndex: func() { cancel(); <-done },
		stopBatch: stop, log: log,
		gateways:   gatewayconn.New(gatewayconn.Config{Index: targets, Store: st, DialOptions: opts.GatewayDialOptions, Logger: log}),
		maxPayload: cmp.Or(opts.MaxPayloadBytes, DefaultMaxPayloadBytes),
		watches:    newWatchStreams(st, kv, opts.Watch),
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry() // kept, never served
	}
	srv.metrics = newMetrics(reg, srv)
	return srv
}

// batchCommitters is the default of Options.BatchCommitters.
const batchCommitters = 4

// Close stops the target index and coalescing, and closes the connections
// to gateways.
func (s *Server) Close() {
	s.EndWatches()
	s.stopIndex()
	s.stopBatch()
	s.gateways.Close()
}

// Join adds sockets to a room. The response says whether the change was
// sent to etcd again after a lost attempt (JoinResponse.retried).
func (s *Server) Join(ctx context.Context, req *membershipv1.JoinRequest) (*membershipv1.JoinResponse, error) {
	ctx, retried := store.WithRetryNote(ctx)
	resp, err := s.join(ctx, req)
	if resp != nil {
		resp.Retried = retried.Load()
	}
	return resp, err
}

func (s *Server) join(ctx context.Context, req *membershipv1.JoinRequest) (*membershipv1.JoinResponse, error) {
	if byUser, err := selectsUser(req.GetUser(), req.GetSocketId(), req.GetSocketIds()); err != nil {
		return nil, toStatus(ctx, s.log, err)
	} else if byUser {
		return s.joinUser(ctx, req)
	}
	res, socks, err := s.change(ctx, req.GetSocketId(), req.GetSocketIds(), req.GetRoom(), req.GetWaitFor(), true)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.JoinResponse{AlreadyMember: true, Revision: res.Revision}
	for i, sock := range socks {
		resp.AlreadyMember = resp.AlreadyMember && res.WasMember[i]
		resp.Results = append(resp.Results, &membershipv1.SocketResult{SocketId: sock.String(), WasMember: res.WasMember[i]})
	}
	return resp, nil
}

// Leave removes sockets from a room; retried as for Join.
func (s *Server) Leave(ctx context.Context, req *membershipv1.LeaveRequest) (*membershipv1.LeaveResponse, error) {
	ctx, retried := store.WithRetryNote(ctx)
	resp, err := s.leave(ctx, req)
	if resp != nil {
		resp.Retried = retried.Load()
	}
	return resp, err
}

func (s *Server) leave(ctx context.Context, req *membershipv1.LeaveRequest) (*membershipv1.LeaveResponse, error) {
	if byUser, err := selectsUser(req.GetUser(), req.GetSocketId(), req.GetSocketIds()); err != nil {
		return nil, toStatus(ctx, s.log, err)
	} else if byUser {
		return s.leaveUser(ctx, req)
	}
	res, socks, err := s.change(ctx, req.GetSocketId(), req.GetSocketIds(), req.GetRoom(), req.GetWaitFor(), false)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.LeaveResponse{Revision: res.Revision}
	for i, sock := range socks {
		resp.WasMember = resp.WasMember || res.WasMember[i]
		resp.Results = append(resp.Results, &membershipv1.SocketResult{SocketId: sock.String(), WasMember: res.WasMember[i]})
	}
	return resp, nil
}

// change validates and commits a Join or Leave, then waits for the sockets'
// gateways when asked to.
func (s *Server) change(ctx context.Context, one string, many []string, room string, wait membershipv1.WaitFor, join bool) (store.ChangeResult, []store.SocketID, error) {
	socks, err := socketsFromRequest(ctx, one, many, s.store.SocketsPerChange())
	if err == nil {
		err = validateRoom("room", room)
	}
	if err == nil {
		err = validateWaitFor(wait)
	}
	if n := s.store.SocketsPerLimitedJoin(); err == nil && join && s.store.MaxRoomsPerSocket() > 0 && len(socks) > n {
		err = invalid("socket_ids", "at most "+itoa(int64(n))+" sockets per Join while rooms per socket are limited")
	}
	if err != nil {
		return store.ChangeResult{}, nil, err
	}
	var res store.ChangeResult
	if join {
		res, err = s.store.Join(etcdCtx(ctx), socks, room)
	} else {
		res, err = s.store.Leave(etcdCtx(ctx), socks, room)
	}
	if len(socks) > 1 {
		err = tooLarge("socket_ids", err)
	} else {
		err = tooLarge("room", err) // one socket: the room name makes it large
	}
	if err == nil && wait == membershipv1.WaitFor_WAIT_FOR_APPLY {
		err = s.waitApplied(ctx, res.Homes, res.Revision)
	}
	return res, socks, err
}

// LeaveAll makes every member of a room leave every room.
func (s *Server) LeaveAll(ctx context.Context, req *membershipv1.LeaveAllRequest) (*membershipv1.LeaveAllResponse, error) {
	if err := validateRoom("room", req.GetRoom()); err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	res, err := s.store.LeaveAll(etcdCtx(ctx), req.GetRoom())
	if err != nil {
		return nil, toStatus(ctx, s.log, tooLarge("room", err))
	}
	return &membershipv1.LeaveAllResponse{Sockets: res.Sockets, Changed: res.Changed, Revision: res.Revision}, nil
}

// AddRoomMembersToRooms joins the members of a room (or one socket) to rooms.
func (s *Server) AddRoomMembersToRooms(ctx context.Context, req *membershipv1.AddRoomMembersToRoomsRequest) (*membershipv1.AddRoomMembersToRoomsResponse, error) {
	res, err := s.roomWide(ctx, req.GetSourceRoom(), req.GetDestRooms(), true)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &membershipv1.AddRoomMembersToRoomsResponse{Sockets: res.Sockets, Changed: res.Changed, Revision: res.Revision, OverLimit: res.OverLimit}, nil
}

// RemoveRoomMembersFromRooms makes the members of a room (or one socket) leave rooms.
func (s *Server) RemoveRoomMembersFromRooms(ctx context.Context, req *membershipv1.RemoveRoomMembersFromRoomsRequest) (*membershipv1.RemoveRoomMembersFromRoomsResponse, error) {
	res, err := s.roomWide(ctx, req.GetSourceRoom(), req.GetDestRooms(), false)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &membershipv1.RemoveRoomMembersFromRoomsResponse{Sockets: res.Sockets, Changed: res.Changed, Revision: res.Revision}, nil
}

// roomWide validates a room-wide request and applies it to the members of
// source, streamed a page at a time at one revision, or, when source is a
// socket id (as Sails allows), to that socket.
func (s *Server) roomWide(ctx context.Context, source string, dests []string, add bool) (store.RoomWideResult, error) {
	dests, err := validateRooms("dest_rooms", dests)
	if err != nil {
		return store.RoomWideResult{}, err
	}
	var res store.RoomWideResult
	if sid, perr := store.ParseSocketID(source); perr == nil {
		_, rev, err := s.store.GetSocket(etcdCtx(ctx), sid)
		if err != nil {
			return store.RoomWideResult{}, err
		}
		res = store.RoomWideResult{Sockets: 1, Revision: rev}
		if add {
			res.Changed, res.OverLimit, err = s.store.AddToRooms(etcdCtx(ctx), []store.SocketID{sid}, dests)
		} else {
			res.Changed, err = s.store.RemoveFromRooms(etcdCtx(ctx), []store.SocketID{sid}, dests)
		}
		return res, tooLarge("dest_rooms", err)
	}
	if err := validateRoom("source_room", source); err != nil {
		return store.RoomWideResult{}, err
	}
	if add {
		res, err = s.store.AddMembersToRooms(etcdCtx(ctx), source, dests)
	} else {
		res, err = s.store.RemoveMembersFromRooms(etcdCtx(ctx), source, dests)
	}
	return res, tooLarge("dest_rooms", err)
}

// waitApplied waits until the gateways at homes (the sockets' current ones,
// as the store reports them: a socket's id may name another) applied the
// change at rev, all in parallel (gatewayconn.Pool.WaitApplied).
func (s *Server) waitApplied(ctx context.Context, homes []store.Home, rev int64) error {
	// Give up a little before the caller does, so that the caller gets the
	// APPLY_TIMEOUT answer rather than only its own deadline.
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-min(100*time.Millisecond, time.Until(dl)/10)))
		defer cancel()
	}
	regs := make([]gatewayconn.Registration, len(homes))
	for i, h := range homes {
		regs[i] = gatewayconn.Registration{Gateway: h.Gateway, Lease: h.Lease}
	}
	if err := s.gateways.WaitApplied(ctx, rev, regs); err != nil {
		return &applyError{revision: rev, err: err}
	}
	return nil
}

// etcdCtx makes etcd requests fail fast (UNAVAILABLE) when the member they reach
// has no leader, instead of waiting for one.
func etcdCtx(ctx context.Context) context.Context { return clientv3.WithRequireLeader(ctx) }
