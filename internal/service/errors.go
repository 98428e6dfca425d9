package service

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	"github.com/socketrooms/membership/internal/grpcedge"
	"github.com/socketrooms/membership/internal/store"
)

// ErrorDomain is the ErrorInfo domain of every error this service returns.
const ErrorDomain = "membership.v1"

// ErrorInfo reasons.
const (
	ReasonInvalidArgument    = "INVALID_ARGUMENT"
	ReasonSocketNotFound     = "SOCKET_NOT_FOUND"
	ReasonEtcdUnavailable    = "ETCD_UNAVAILABLE"
	ReasonGatewayUnavailable = "GATEWAY_UNAVAILABLE"
	ReasonApplyTimeout       = "APPLY_TIMEOUT"
	ReasonInternal           = "INTERNAL"
	// ReasonEtcdPermissionDenied: etcd's auth refused this membership-server.
	ReasonEtcdPermissionDenied = "ETCD_PERMISSION_DENIED"
	// ReasonPayloadTooLarge: a message's data is over the size limit
	// (INVALID_ARGUMENT, field data).
	ReasonPayloadTooLarge = "PAYLOAD_TOO_LARGE"
	// ReasonRoomLimitExceeded: a Join would put sockets (metadata
	// socket_ids) in more rooms than the limit (metadata limit) allows.
	ReasonRoomLimitExceeded = "ROOM_LIMIT_EXCEEDED"
	// ReasonConflict: concurrent Joins of the same sockets kept a Join under
	// the rooms-per-socket limit from committing; retry.
	ReasonConflict = "CONFLICT"
	// ReasonCorruptRecord: a record in etcd does not decode (INTERNAL): a
	// socket or gateway record that is not its JSON, a room key with a bad
	// escape. Something other than this service wrote it; retrying reads the
	// same bytes.
	ReasonCorruptRecord = "CORRUPT_RECORD"
	// ReasonShuttingDown: this membership-server replica is stopping
	// (UNAVAILABLE); retry on another replica.
	ReasonShuttingDown = "SHUTTING_DOWN"
	// ReasonRoomNameReserved: a room name has the shape of a socket id,
	// which names that socket's own room (INVALID_ARGUMENT, field names the
	// room field).
	ReasonRoomNameReserved = "ROOM_NAME_RESERVED"
	// ReasonTransactionTooLarge: one call's change cannot fit one etcd
	// transaction under the configured --etcd-max-request-bytes and
	// --etcd-max-txn-ops (INVALID_ARGUMENT, field socket_ids, room or
	// dest_rooms; metadata bytes, max_bytes, ops, max_ops). Retrying cannot
	// help; fewer sockets or shorter room names can.
	ReasonTransactionTooLarge = "TRANSACTION_TOO_LARGE"
	// ReasonRevisionCompacted: the call read at one etcd revision across
	// several requests, and etcd compacted that revision before it finished
	// (ABORTED); retry. A room-wide call adds metadata applied (membership
	// changes applied before, which stay) and revision: re-running it
	// finishes what is left.
	ReasonRevisionCompacted = "REVISION_COMPACTED"
	// ReasonOverloaded: the membership-server's --max-inflight-payload-bytes
	// is spent by Broadcasts and Blasts in flight (RESOURCE_EXHAUSTED, before
	// the request is read; set by internal/grpcedge). Retry after a backoff.
	ReasonOverloaded = grpcedge.ReasonOverloaded
	// ReasonMalformedRequest: the request's bytes do not decode as its
	// message, e.g. a string that is not UTF-8 or data nested past
	// protobuf's recursion limit (INVALID_ARGUMENT, metadata field where one
	// can be named; set by internal/grpcedge).
	ReasonMalformedRequest = grpcedge.ReasonMalformedRequest
	// ReasonCompacted: WatchMembership's after_revision is compacted
	// (OUT_OF_RANGE; metadata compact_revision): re-list, then watch on.
	ReasonCompacted = "COMPACTED"
	// ReasonSlowConsumer: a WatchMembership consumer fell its stream's
	// buffer behind (RESOURCE_EXHAUSTED; metadata revision, the last one
	// sent in full, to resume after).
	ReasonSlowConsumer = "SLOW_CONSUMER"
	// ReasonTooManyStreams: the replica serves --max-watch-streams
	// WatchMembership streams already (RESOURCE_EXHAUSTED); retry later or
	// on another replica.
	ReasonTooManyStreams = "TOO_MANY_STREAMS"
)

// fieldError is bad input in one request field.
type fieldError struct {
	field  string
	msg    string
	reason string            // ReasonInvalidArgument when empty
	meta   map[string]string // added to the ErrorInfo's metadata
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func invalid(field, msg string) error { return &fieldError{field: field, msg: msg} }

// tooLarge names field as the cause of a change that cannot fit one etcd
// transaction (*store.TxnTooLargeError); other errors pass unchanged.
func tooLarge(field string, err error) error {
	var tl *store.TxnTooLargeError
	if !errors.As(err, &tl) {
		return err
	}
	return &fieldError{field: field, reason: ReasonTransactionTooLarge,
		msg: "too large for one etcd transaction: needs " + itoa(int64(tl.Bytes)) + " bytes and " + itoa(int64(tl.Ops)) +
			" operations per level, the limits allow " + itoa(int64(tl.MaxBytes)) + " bytes (--etcd-max-request-bytes less overhead) and " +
			itoa(int64(tl.MaxOps)) + " operations (--etcd-max-txn-ops); send fewer sockets or shorter room names",
		meta: map[string]string{"bytes": itoa(int64(tl.Bytes)), "max_bytes": itoa(int64(tl.MaxBytes)),
			"ops": itoa(int64(tl.Ops)), "max_ops": itoa(int64(tl.MaxOps))}}
}

// applyError is a committed change that the socket's gateway did not confirm
// applying in time.
type applyError struct {
	revision int64
	err      error
}

func (e *applyError) Error() string {
	why := "the socket's gateway could not be reached"
	if errors.Is(e.err, context.DeadlineExceeded) {
		why = "the deadline passed first"
	}
	return "change committed at revision " + itoa(e.revision) + " but not confirmed applied by the socket's gateway: " + why
}
func (e *applyError) Unwrap() error { return e.err }

// toStatus is the one place where errors become gRPC statuses. Raw etcd errors
// never reach callers: they are logged, and those that say etcd cannot
// answer now (etcdUnavailable) are reported as UNAVAILABLE/ETCD_UNAVAILABLE,
// which callers retry. An error nothing here recognizes is a bug, not a
// reason to retry: INTERNAL.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var fe *fieldError
	var ae *applyError
	var rl *store.RoomLimitError
	var pe *store.PartialChangeError
	var ce *store.CompactedError
	var we *watchLimitError
	switch {
	case errors.As(err, &fe):
		st := status.New(codes.InvalidArgument, fe.Error())
		meta := map[string]string{"field": fe.field}
		for k, v := range fe.meta {
			meta[k] = v
		}
		return withDetails(st,
			&errdetails.ErrorInfo{Reason: cmp.Or(fe.reason, ReasonInvalidArgument), Domain: ErrorDomain, Metadata: meta},
			&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.field, Description: fe.msg}}})
	case errors.Is(err, store.ErrSocketNotFound):
		info := &errdetails.ErrorInfo{Reason: ReasonSocketNotFound, Domain: ErrorDomain}
		msg := "socket is not connected"
		var nf *store.SocketsNotFoundError
		if errors.As(err, &nf) {
			info.Metadata = map[string]string{"socket_ids": strings.Join(nf.IDs, ",")}
			if len(nf.IDs) > 1 {
				msg = itoa(int64(len(nf.IDs))) + " sockets are not connected"
			}
		}
		return withDetails(status.New(codes.NotFound, msg), info)
	case errors.As(err, &rl):
		return withDetails(status.New(codes.FailedPrecondition, rl.Error()+"; leave a room first"),
			&errdetails.ErrorInfo{Reason: ReasonRoomLimitExceeded, Domain: ErrorDomain,
				Metadata: map[string]string{"socket_ids": strings.Join(rl.IDs, ","), "limit": itoa(int64(rl.Limit))}})
	case errors.Is(err, store.ErrConflict):
		return withDetails(status.New(codes.Aborted, err.Error()+"; retry"),
			&errdetails.ErrorInfo{Reason: ReasonConflict, Domain: ErrorDomain})
	case errors.Is(err, rpctypes.ErrCompacted) && errors.As(err, &pe):
		// A room-wide call: what it applied before stays, and re-running it
		// finishes the rest.
		applied, rev := pe.Applied, pe.Revision
		return withDetails(status.New(codes.Aborted, "the revision the call read its source room at was compacted after "+
			itoa(applied)+" membership changes were applied (they stay); re-run the call to finish it"),
			&errdetails.ErrorInfo{Reason: ReasonRevisionCompacted, Domain: ErrorDomain,
				Metadata: map[string]string{"applied": itoa(applied), "revision": itoa(rev)}})
	case errors.As(err, &ae):
		code, reason, msg := codes.DeadlineExceeded, ReasonApplyTimeout, ae.Error()
		switch {
		case errors.Is(err, store.ErrCorruptRecord):
			// The gateway's record cannot be read: the change is committed,
			// but no one can tell when it is applied.
			code, reason = codes.Internal, ReasonCorruptRecord
			msg = "change committed at revision " + itoa(ae.revision) + " but the socket's gateway record is corrupt"
			log.Error("corrupt record in etcd", "err", ae.err)
		case !errors.Is(err, context.DeadlineExceeded):
			code, reason = codes.Unavailable, ReasonGatewayUnavailable
			log.Warn("waiting for a gateway to apply failed", "revision", ae.revision, "err", ae.err)
		}
		return withDetails(status.New(code, msg),
			&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain,
				Metadata: map[string]string{"revision": itoa(ae.revision)}})
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled) || ctx.Err() == context.Canceled:
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, store.ErrShuttingDown):
		return withDetails(status.New(codes.Unavailable, "this membership-server is shutting down; retry on another replica"),
			&errdetails.ErrorInfo{Reason: ReasonShuttingDown, Domain: ErrorDomain})
	case errors.Is(err, store.ErrCorruptRecord):
		// The error names the key, for the operator; the caller gets no bytes
		// of what is stored.
		log.Error("corrupt record in etcd", "err", err)
		return withDetails(status.New(codes.Internal, "a membership record in etcd is corrupt"),
			&errdetails.ErrorInfo{Reason: ReasonCorruptRecord, Domain: ErrorDomain})
	case errors.As(err, &ce):
		return withDetails(status.New(codes.OutOfRange, ce.Error()+"; list again, then watch from the listing's revision"),
			&errdetails.ErrorInfo{Reason: ReasonCompacted, Domain: ErrorDomain,
				Metadata: map[string]string{"compact_revision": itoa(ce.CompactRevision)}})
	case errors.As(err, &we):
		return withDetails(status.New(codes.ResourceExhausted, we.msg),
			&errdetails.ErrorInfo{Reason: we.reason, Domain: ErrorDomain, Metadata: we.meta})
	// Cases for a compaction met by a particular call, with more to say,
	// go above this generic one.
	case errors.Is(err, rpctypes.ErrCompacted):
		return withDetails(status.New(codes.Aborted, "the revision this call read at was compacted; retry"),
			&errdetails.ErrorInfo{Reason: ReasonRevisionCompacted, Domain: ErrorDomain})
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge), errors.Is(err, rpctypes.ErrDuplicateKey):
		// Requests are validated to stay inside etcd's limits: this is a bug,
		// and retrying would not help.
		log.Error("etcd refused a request", "err", err)
		return withDetails(status.New(codes.Internal, "internal error"),
			&errdetails.ErrorInfo{Reason: ReasonInternal, Domain: ErrorDomain})
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrUserEmpty),
		errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrInvalidAuthToken):
		log.Error("etcd refused the service's credentials", "err", err)
		return withDetails(status.New(codes.PermissionDenied, "the membership store refused this service"),
			&errdetails.ErrorInfo{Reason: ReasonEtcdPermissionDenied, Domain: ErrorDomain})
	case store.EtcdUnavailable(err):
		log.Warn("etcd request failed", "err", err)
		return withDetails(status.New(codes.Unavailable, "membership store unavailable; retry"),
			&errdetails.ErrorInfo{Reason: ReasonEtcdUnavailable, Domain: ErrorDomain})
	default:
		log.Error("unexpected error", "err", err)
		return withDetails(status.New(codes.Internal, "internal error"),
			&errdetails.ErrorInfo{Reason: ReasonInternal, Domain: ErrorDomain})
	}
}

func withDetails(st *status.Status, details ...protoadapt.MessageV1) error {
	if withD, err := st.WithDetails(details...); err == nil {
		return withD.Err()
	}
	return st.Err()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
