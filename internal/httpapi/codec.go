package httpapi

import (
	"errors"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/socketrooms/membership/internal/grpcedge"
)

// jsonCodec is vanguard's JSON codec whose decode failures are
// INVALID_ARGUMENT with reason MALFORMED_REQUEST, as bytes that do not decode
// are over gRPC (grpcedge.ServerCodec): vanguard reports any error that is not
// a *connect.Error as INTERNAL, which would tell a caller with a typo in its
// JSON body that the server is broken.
type jsonCodec struct {
	*vanguard.JSONCodec
	domain string
}

func newJSONCodec(domain string) func(vanguard.TypeResolver) vanguard.Codec {
	return func(res vanguard.TypeResolver) vanguard.Codec {
		return jsonCodec{JSONCodec: vanguard.NewJSONCodec(res), domain: domain}
	}
}

func (c jsonCodec) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(data, msg); err != nil {
		return c.malformed(err, "")
	}
	return nil
}

func (c jsonCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	if err := c.JSONCodec.UnmarshalField(data, msg, field); err != nil {
		return c.malformed(err, string(field.Name()))
	}
	return nil
}

func (c jsonCodec) malformed(err error, field string) error {
	ce := connect.NewError(connect.CodeInvalidArgument, errors.New(grpcedge.DecodeErrorText(err)))
	info := &errdetails.ErrorInfo{Reason: grpcedge.ReasonMalformedRequest, Domain: c.domain}
	if field != "" {
		info.Metadata = map[string]string{"field": field}
	}
	if d, derr := connect.NewErrorDetail(info); derr == nil {
		ce.AddDetail(d)
	}
	return ce
}
