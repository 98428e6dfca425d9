package grpcedge

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
)

// MaxRecvMsgSize is the largest request message, in bytes, the servers
// accept (grpc-go's default, set explicitly by BudgetOptions so that the
// budget's reservation and the server's limit cannot drift apart). A larger
// request gets RESOURCE_EXHAUSTED from grpc-go before it is read.
const MaxRecvMsgSize = 4 << 20

// DefaultMaxInflightPayloadBytes is --max-inflight-payload-bytes' default:
// 64 calls while their messages are read (each counts MaxRecvMsgSize until
// decoded, whatever its size), and some two hundred 1 MiB Broadcasts once
// decoded. A smaller budget refuses bursts of small calls too: at 64 MiB,
// 64 callers sending empty Blasts as fast as they can on a 2-core machine
// had a third of them refused, since many calls sat between their headers
// and their decoding at once; at 256 MiB, none.
const DefaultMaxInflightPayloadBytes = 256 << 20

// PayloadMethods are the calls that carry a payload of up to
// MaxRecvMsgSize and so draw on the budget. Every other call of both services
// carries a bounded handful of ids and names (a Join at most 100 sockets), and
// is not held back by payloads in flight.
var PayloadMethods = []string{
	"/membership.v1.MembershipService/Broadcast",
	"/membership.v1.MembershipService/Blast",
	"/gateway.v1.GatewayService/Deliver",
}

// Budget bounds the request bytes of payload-carrying calls (PayloadMethods)
// that a server holds at once. grpc-go reads a whole request into memory
// before any handler or interceptor runs and tells no one its size first (a
// gRPC request has no length header), so a call reserves MaxRecvMsgSize when
// its headers arrive, in the transport's tap handle, before its message is
// read; once decoded, the reservation shrinks to the message's encoded size,
// and it is returned when the handler does (or when the call ends some other
// way: the stream's context is done). A call that would take the reserved
// bytes past the limit is refused at once with RESOURCE_EXHAUSTED and reason
// OVERLOADED: nothing queues.
//
// A reservation is taken before the call's message arrives, so two things
// bound who can take one and for how long. With a check set (Authenticate),
// a call whose headers fail it is refused with that check's error before
// anything is reserved: without the token, no one holds the budget. And a
// call that carries no deadline gets the server's default call timeout
// (DefaultTimeout) from its headers on, so a call whose message never comes
// returns its reservation, DEADLINE_EXCEEDED, that long after its headers; a
// call with a deadline of its own holds it at most until then.
//
// The requests a call sends on (the membership-server's Deliver to each
// target gateway) count too while they are in flight (CountOutgoing). What
// else a call holds (the decoded data's JSON encoding, grpc-go's buffers
// while it reads, the gateway's frames in socket queues after Deliver
// returns) is not counted: the limit bounds it by a small factor (see
// BENCHMARKS.md).
type Budget struct {
	limit          int64 // 0: no limit
	perCall        int64
	methods        map[string]bool
	authenticate   func(metadata.MD) error // nil: no check
	defaultTimeout time.Duration           // 0: none
	used           atomic.Int64
	refused        atomic.Int64
}

// NewBudget bounds the payload bytes in flight to limit (0: no bound), with
// each call of methods reserving perCall bytes until its message is decoded.
func NewBudget(limit, perCall int64, methods ...string) *Budget {
	b := &Budget{limit: limit, perCall: perCall, methods: map[string]bool{}}
	for _, m := range methods {
		b.methods[m] = true
	}
	return b
}

// Authenticate has the budget refuse a payload call whose headers check
// rejects, with check's error, before it reserves anything (the tap runs before
// any interceptor, the server's token check among them). check gets the
// call's headers as grpc-go received them (keys in lower case) and must not
// block. It returns b.
func (b *Budget) Authenticate(check func(metadata.MD) error) *Budget {
	b.authenticate = check
	return b
}

// DefaultTimeout gives a payload call that carries no deadline (no
// grpc-timeout header) a deadline of d after its headers arrive, so that its
// reservation is returned by then even if its message never comes; the
// server's default call timeout. 0: none. It returns b.
func (b *Budget) DefaultTimeout(d time.Duration) *Budget {
	b.defaultTimeout = d
	return b
}

// Reserved is the number of bytes currently reserved by calls in flight.
func (b *Budget) Reserved() int64 { return b.used.Load() }

// Refused counts the calls refused with OVERLOADED.
func (b *Budget) Refused() int64 { return b.refused.Load() }

// ServerOptions install the budget on a server: its tap handle, the
// interceptors that shrink and return reservations, and MaxRecvMsgSize (a
// reservation is only as safe as the server's limit it copies). A nil or
// limitless budget sets MaxRecvMsgSize only.
func (b *Budget) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(int(MaxRecvMsgSize))}
	if b == nil || b.limit <= 0 {
		return opts
	}
	return append(opts,
		grpc.InTapHandle(b.tap),
		grpc.ChainUnaryInterceptor(b.unary),
		grpc.ChainStreamInterceptor(b.stream))
}

type reservationKey struct{}

// reservation is one call's share of the budget.
type reservation struct {
	b        *Budget
	mu       sync.Mutex
	n        int64
	released bool
}

// shrink lowers the reservation to n bytes (never raises it).
func (r *reservation) shrink(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n < r.n {
		r.b.used.Add(n - r.n)
		r.n = n
	}
}

// grow adds n bytes the admitted call holds besides its request; past the
// limit too (what is admitted finishes), unless the call has ended.
func (r *reservation) grow(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.released {
		r.b.used.Add(n)
		r.n += n
	}
}

// release returns the reservation, once; nothing grows it after.
func (r *reservation) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.b.used.Add(-r.n)
	r.n, r.released = 0, true
}

// tap runs on the transport's reader goroutine, under its lock, for every
// new stream: it must not block.
func (b *Budget) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if !b.methods[info.FullMethodName] {
		return ctx, nil
	}
	if b.authenticate != nil {
		if err := b.authenticate(info.Header); err != nil {
			return ctx, err
		}
	}
	for {
		used := b.used.Load()
		if used+b.perCall > b.limit {
			b.refused.Add(1)
			return ctx, b.overloaded(info.FullMethodName)
		}
		if b.used.CompareAndSwap(used, used+b.perCall) {
			break
		}
	}
	r := &reservation{b: b, n: b.perCall}
	release := r.release
	if _, ok := ctx.Deadline(); !ok && b.defaultTimeout > 0 {
		// The returned context becomes the stream's: when it expires, the
		// read of the message fails with DEADLINE_EXCEEDED and the call
		// ends. It is done at the latest when the stream's own context is
		// (the call's end); cancel then frees its timer.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.defaultTimeout)
		release = func() { r.release(); cancel() }
	}
	// The stream's context is done when the call ends however it ends,
	// including the ways that never reach a handler (an undecodable or
	// oversized message, a cancelled or expired call, a closed connection).
	context.AfterFunc(ctx, release)
	return context.WithValue(ctx, reservationKey{}, r), nil
}

// overloaded is the refusal. grpc-go writes a tap handle's status, details
// included (grpc-status-details-bin), as the call's trailers-only response.
func (b *Budget) overloaded(fullMethod string) error {
	limit := strconv.FormatInt(b.limit, 10)
	return withDetails(status.New(codes.ResourceExhausted,
		"payload bytes in flight are at this server's limit of "+limit+" (--max-inflight-payload-bytes); retry later"),
		&errdetails.ErrorInfo{Reason: ReasonOverloaded, Domain: Domain(fullMethod),
			Metadata: map[string]string{"max_inflight_payload_bytes": limit}})
}

func (b *Budget) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	r, _ := ctx.Value(reservationKey{}).(*reservation)
	if r == nil {
		return h(ctx, req)
	}
	defer r.release()
	if m, ok := req.(proto.Message); ok {
		r.shrink(int64(proto.Size(m)))
	}
	return h(ctx, req)
}

// CopyFactor is how many copies of an outgoing request a call holds while
// sending it: grpc-go encodes each request into a buffer of its own (the
// per-gateway requests of a Broadcast share its data; gatewayconn.Deliver).
const CopyFactor = 1

// CountOutgoing is a client interceptor for the calls a handler makes on
// behalf of its own call (the membership-server's Deliver to each gateway):
// while one is in flight, CopyFactor times its request's encoded size is
// added to the incoming call's reservation, so that a Broadcast to many
// gateways counts what it holds for each. An outgoing call from outside a
// reserved call passes unchanged.
func CountOutgoing(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	r, _ := ctx.Value(reservationKey{}).(*reservation)
	m, ok := req.(proto.Message)
	if r == nil || !ok {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	n := CopyFactor * int64(proto.Size(m))
	r.grow(n)
	defer r.shrinkBy(n)
	return invoker(ctx, method, req, reply, cc, opts...)
}

// shrinkBy takes back n bytes grow added, unless the call has ended (its
// release took them).
func (r *reservation) shrinkBy(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.released {
		r.b.used.Add(-n)
		r.n -= n
	}
}

// stream returns a streaming call's reservation when its handler does; no
// payload method streams today, so it is not shrunk.
func (b *Budget) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if r, _ := ss.Context().Value(reservationKey{}).(*reservation); r != nil {
		defer r.release()
	}
	return h(srv, ss)
}

// ReserveHTTP is the budget's tap for a call that arrives over HTTP and is
// handed to the gRPC server in process (grpc.Server.ServeHTTP runs no tap
// handle): it reserves for fullMethod, checking header as gRPC metadata, and
// returns the context to serve the call with, which carries the reservation
// to the interceptors. ctx must be done when the call ends (the reservation
// is released then). A method outside the budget, or a nil or limitless
// budget, reserves nothing.
func (b *Budget) ReserveHTTP(ctx context.Context, fullMethod string, header http.Header) (context.Context, error) {
	if b == nil || b.limit <= 0 {
		return ctx, nil
	}
	md := make(metadata.MD, len(header))
	for k, v := range header {
		md[strings.ToLower(k)] = v
	}
	return b.tap(ctx, &tap.Info{FullMethodName: fullMethod, Header: md})
}
