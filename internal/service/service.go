// Package service implements membership.v1.MembershipService: each handler
// validates its request, makes one narrow call to the store (and, for
// deliveries, to the gateways), and returns through the one error mapper in
// errors.go. The service keeps no state of its own beyond connections to
// gateways, so any number of replicas can serve the same etcd cluster.
package service

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
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
	gateways  *gatewayPool
	// maxPayload bounds the JSON of a message's data.
	maxPayload int
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
		stopBatch: stop, log: log, gateways: newGatewayPool(opts.GatewayDialOptions...),
		maxPayload: cmp.Or(opts.MaxPayloadBytes, DefaultMaxPayloadBytes),
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry() // kept, never served
	}
	srv.metrics = newMetrics(reg, srv)
	return srv
}

// deliverTimeout caps one gateway's part of a Broadcast or Blast.
const deliverTimeout = 5 * time.Second

// batchCommitters is the default of Options.BatchCommitters.
const batchCommitters = 4

// Close stops coalescing and drops the connections to gateways.
func (s *Server) Close() {
	s.stopIndex()
	s.stopBatch()
	s.gateways.close()
}

// Join adds sockets to a room.
func (s *Server) Join(ctx context.Context, req *membershipv1.JoinRequest) (*membershipv1.JoinResponse, error) {
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

// Leave removes sockets from a room.
func (s *Server) Leave(ctx context.Context, req *membershipv1.LeaveRequest) (*membershipv1.LeaveResponse, error) {
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
		err = s.waitApplied(ctx, socks, res.Revision)
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

// ListRooms lists all rooms with their sizes, or one socket's rooms.
func (s *Server) ListRooms(ctx context.Context, req *membershipv1.ListRoomsRequest) (*membershipv1.ListRoomsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if req.GetSocketId() != "" {
		sid, err := parseSocketID("socket_id", req.GetSocketId())
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		info, rev, err := s.store.GetSocket(etcdCtx(ctx), sid)
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		resp := &membershipv1.ListRoomsResponse{Revision: rev}
		for _, room := range info.Rooms {
			if after != "" && room <= after {
				continue
			}
			if len(resp.Rooms) == size {
				resp.NextPageToken = encodePageToken(resp.Rooms[size-1].Name)
				break
			}
			resp.Rooms = append(resp.Rooms, &membershipv1.Room{Name: room})
		}
		return resp, nil
	}
	// A room shaped like a socket id may still be listed (written before such
	// names were refused): its name must page on like any other.
	if verr := store.ValidateRoom(after); after != "" && verr != nil && !errors.Is(verr, store.ErrRoomLikeSocketID) {
		return nil, toStatus(ctx, s.log, invalid("page_token", "not a token from a previous page"))
	}
	// Served from the broadcast target index, which keeps every room's count
	// in name order: after catching up with etcd's current revision, a page
	// costs a B-tree descent and the page itself.
	rooms, next, rev, err := s.targets.ListRooms(ctx, after, size)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.ListRoomsResponse{Revision: rev, NextPageToken: encodePageToken(next)}
	for _, r := range rooms {
		resp.Rooms = append(resp.Rooms, &membershipv1.Room{Name: r.Room, MemberCount: r.Members})
	}
	return resp, nil
}

// ListMembers lists a room's sockets.
func (s *Server) ListMembers(ctx context.Context, req *membershipv1.ListMembersRequest) (*membershipv1.ListMembersResponse, error) {
	err := validateRoom("room", req.GetRoom())
	size, perr := pageSize(req.GetPageSize())
	if err == nil {
		err = perr
	}
	after, terr := decodePageToken(req.GetPageToken())
	if err == nil {
		err = terr
	}
	if err == nil && (strings.Contains(after, "/") || len(after) > store.MaxSocketIDBytes) {
		err = invalid("page_token", "not a token from a previous page")
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	members, next, rev, err := s.store.ListMembers(etcdCtx(ctx), req.GetRoom(), after, size)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.ListMembersResponse{Revision: rev, NextPageToken: encodePageToken(next)}
	for _, m := range members {
		resp.Members = append(resp.Members, &membershipv1.Member{SocketId: m.SocketID, Gateway: m.Gateway, User: m.User})
	}
	return resp, nil
}

// GetSocket describes one socket.
func (s *Server) GetSocket(ctx context.Context, req *membershipv1.GetSocketRequest) (*membershipv1.GetSocketResponse, error) {
	sid, err := parseSocketID("socket_id", req.GetSocketId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	info, rev, err := s.store.GetSocket(etcdCtx(ctx), sid)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &membershipv1.GetSocketResponse{Revision: rev, Socket: &membershipv1.Socket{
		SocketId:    info.ID,
		Gateway:     info.Gateway,
		ConnectedAt: timestamppb.New(info.ConnectedAt),
		Rooms:       info.Rooms,
		User:        info.User,
	}}, nil
}

// Broadcast delivers an event to the members of some rooms.
func (s *Server) Broadcast(ctx context.Context, req *membershipv1.BroadcastRequest) (*membershipv1.BroadcastResponse, error) {
	rooms, err := validateRooms("rooms", req.GetRooms())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	msg, err := s.message(ctx, req.GetEvent(), req.GetData(), req.GetExceptSocketIds())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	msg.Rooms = rooms
	targets, err := s.targets.Targets(ctx, rooms)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	delivered, failed := s.deliver(ctx, targets, msg)
	return &membershipv1.BroadcastResponse{Delivered: delivered, Revision: targets.Revision, FailedGateways: failed}, nil
}

// Blast delivers an event to every connected socket.
func (s *Server) Blast(ctx context.Context, req *membershipv1.BlastRequest) (*membershipv1.BlastResponse, error) {
	msg, err := s.message(ctx, req.GetEvent(), req.GetData(), req.GetExceptSocketIds())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	msg.AllSockets = true
	targets, err := s.targets.Targets(ctx, nil)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	delivered, failed := s.deliver(ctx, targets, msg)
	return &membershipv1.BlastResponse{Delivered: delivered, Revision: targets.Revision, FailedGateways: failed}, nil
}

// message validates and encodes the common part of a delivery, once.
func (s *Server) message(ctx context.Context, event string, data *structpb.Value, except []string) (*gatewayv1.DeliverRequest, error) {
	if event == "" {
		event = "message"
	}
	if len(event) > maxEventBytes || !utf8.ValidString(event) {
		return nil, invalid("event", "must be at most 256 bytes of UTF-8")
	}
	if len(except) > maxExceptSockets {
		return nil, invalid("except_socket_ids", "at most 1000 sockets")
	}
	if caller := metadataSocket(ctx); caller != "" {
		except = append(append([]string(nil), except...), caller)
	}
	msg := &gatewayv1.DeliverRequest{Event: event, ExceptSocketIds: except, DataJson: []byte("null")}
	if data != nil {
		b, err := protojson.Marshal(data)
		if err != nil {
			return nil, invalid("data", err.Error())
		}
		if len(b) > s.maxPayload {
			return nil, &fieldError{field: "data", reason: ReasonPayloadTooLarge,
				msg: "is " + itoa(int64(len(b))) + " bytes of JSON; at most " + itoa(int64(s.maxPayload)) + " allowed"}
		}
		msg.DataJson = b
	}
	return msg, nil
}

// deliver hands msg to every target gateway in parallel and sums what they
// delivered. Unreachable gateways are counted, not fatal: their sockets miss
// the message, the others do not wait for them.
func (s *Server) deliver(ctx context.Context, t store.Targets, msg *gatewayv1.DeliverRequest) (delivered int64, failed int32) {
	msg.Revision = t.Revision
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, gw := range t.Gateways {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One slow gateway costs its own sockets the message, not the
			// caller its whole deadline.
			ctx, cancel := context.WithTimeout(ctx, deliverTimeout)
			defer cancel()
			m := proto.CloneOf(msg)
			m.GatewayId, m.Lease = id, int64(gw.Lease)
			resp, err := s.gateways.deliver(ctx, gw.GRPCAddr, m)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				s.metrics.failedGateways.Inc()
				s.log.Warn("deliver to gateway failed", "gateway", id, "addr", gw.GRPCAddr, "revision", t.Revision, "err", err)
				return
			}
			delivered += resp.Delivered
			s.metrics.delivered.Add(float64(resp.Delivered))
		}()
	}
	wg.Wait()
	return delivered, failed
}

// waitApplied waits until the gateways of socks applied the change at rev.
func (s *Server) waitApplied(ctx context.Context, socks []store.SocketID, rev int64) error {
	// Give up a little before the caller does, so that the caller gets the
	// APPLY_TIMEOUT answer rather than only its own deadline.
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-min(100*time.Millisecond, time.Until(dl)/10)))
		defer cancel()
	}
	done := map[store.SocketID]bool{}
	for _, sock := range socks {
		key := store.SocketID{Gateway: sock.Gateway, Lease: sock.Lease}
		if done[key] {
			continue
		}
		done[key] = true
		rec, err := s.store.Gateway(etcdCtx(ctx), sock.Gateway)
		if err != nil {
			return &applyError{revision: rev, err: err}
		}
		req := &gatewayv1.WaitAppliedRequest{Revision: rev, GatewayId: sock.Gateway, Lease: int64(sock.Lease)}
		if err := s.gateways.waitApplied(ctx, rec.GRPCAddr, req); err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return &applyError{revision: rev, err: err}
		}
	}
	return nil
}

// etcdCtx makes etcd requests fail fast (UNAVAILABLE) when the member they reach
// has no leader, instead of waiting for one.
func etcdCtx(ctx context.Context) context.Context { return clientv3.WithRequireLeader(ctx) }

// gatewayPool keeps one client connection per gateway address.
type gatewayPool struct {
	dial  []grpc.DialOption
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newGatewayPool(dial ...grpc.DialOption) *gatewayPool {
	return &gatewayPool{dial: dial, conns: map[string]*grpc.ClientConn{}}
}

func (p *gatewayPool) client(addr string) (gatewayv1.GatewayServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cc := p.conns[addr]
	if cc == nil {
		var err error
		// NewClient connects lazily; it fails only for a malformed target.
		opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, p.dial...)
		cc, err = grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, err
		}
		p.conns[addr] = cc
	}
	return gatewayv1.NewGatewayServiceClient(cc), nil
}

func (p *gatewayPool) deliver(ctx context.Context, addr string, msg *gatewayv1.DeliverRequest) (*gatewayv1.DeliverResponse, error) {
	c, err := p.client(addr)
	if err != nil {
		return nil, err
	}
	return c.Deliver(ctx, msg)
}

func (p *gatewayPool) waitApplied(ctx context.Context, addr string, req *gatewayv1.WaitAppliedRequest) error {
	c, err := p.client(addr)
	if err != nil {
		return err
	}
	_, err = c.WaitApplied(ctx, req)
	return err
}

func (p *gatewayPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, cc := range p.conns {
		_ = cc.Close()
		delete(p.conns, addr)
	}
}
