package service

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

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
)

// fieldError is bad input in one request field.
type fieldError struct {
	field string
	msg   string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func invalid(field, msg string) error { return &fieldError{field: field, msg: msg} }

// applyError is a committed change that the socket's gateway did not confirm
// applying in time.
type applyError struct {
	revision int64
	err      error
}

func (e *applyError) Error() string { return "change committed but not yet applied: " + e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// toStatus is the one place where errors become gRPC statuses. Raw etcd errors
// never reach callers: they are logged and reported as UNAVAILABLE.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var fe *fieldError
	var ae *applyError
	switch {
	case errors.As(err, &fe):
		st := status.New(codes.InvalidArgument, fe.Error())
		return withDetails(st,
			&errdetails.ErrorInfo{Reason: ReasonInvalidArgument, Domain: ErrorDomain, Metadata: map[string]string{"field": fe.field}},
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
	case errors.As(err, &ae):
		code := codes.DeadlineExceeded
		if !errors.Is(err, context.DeadlineExceeded) {
			code = codes.Unavailable
		}
		return withDetails(status.New(code, ae.Error()),
			&errdetails.ErrorInfo{Reason: ReasonApplyTimeout, Domain: ErrorDomain,
				Metadata: map[string]string{"revision": itoa(ae.revision)}})
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, context.Canceled) || ctx.Err() == context.Canceled:
		return status.Error(codes.Canceled, "canceled")
	default:
		log.Warn("etcd request failed", "err", err)
		return withDetails(status.New(codes.Unavailable, "membership store unavailable; retry"),
			&errdetails.ErrorInfo{Reason: ReasonEtcdUnavailable, Domain: ErrorDomain})
	}
}

func withDetails(st *status.Status, details ...protoadapt.MessageV1) error {
	if withD, err := st.WithDetails(details...); err == nil {
		return withD.Err()
	}
	return st.Err()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
