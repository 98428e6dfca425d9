// Package grpcedge is what every gRPC server here does with a request before
// a handler sees it: it bounds the payload bytes in flight (budget.go) and
// turns request bytes that do not decode into INVALID_ARGUMENT (codec.go).
// grpc-go reads and decodes a whole request before any interceptor runs, and
// reports a decode failure as INTERNAL, so both act around that step: the
// budget in a tap handle (on the request's headers, before its message is
// read), the codec in place of grpc-go's "proto" codec on the server.
package grpcedge

import (
	"strings"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// ErrorInfo reasons set here, on every service; the domain is the called
// service's proto package (membership.v1, gateway.v1).
const (
	// ReasonOverloaded: the server's in-flight payload budget
	// (--max-inflight-payload-bytes) is spent (RESOURCE_EXHAUSTED; metadata
	// max_inflight_payload_bytes). Nothing was done; retry after a backoff,
	// or on another replica.
	ReasonOverloaded = "OVERLOADED"
	// ReasonMalformedRequest: the request's bytes are not a protobuf
	// encoding of the method's request message, e.g. a string field that is
	// not UTF-8, or messages nested past protobuf's recursion limit
	// (INVALID_ARGUMENT; metadata field names the field where one can be
	// named). Retrying the same bytes cannot help.
	ReasonMalformedRequest = "MALFORMED_REQUEST"
)

// Domain is the ErrorInfo domain of errors on fullMethod
// ("/membership.v1.MembershipService/Join" ⇒ "membership.v1"): the proto
// package of the called service, as the services' own errors use.
func Domain(fullMethod string) string {
	svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if i := strings.LastIndexByte(svc, '.'); i >= 0 {
		return svc[:i]
	}
	return svc
}

func withDetails(st *status.Status, details ...protoadapt.MessageV1) error {
	if d, err := st.WithDetails(details...); err == nil {
		return d.Err()
	}
	return st.Err()
}
