package httpapi

import (
	"errors"
	"strings"

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
//
// Unknown fields are ignored, as protobuf's binary form ignores them and as
// Connect servers do, so that a client built from a newer schema still works.
// An unknown enum value name is refused: protojson's DiscardUnknown drops it
// too, leaving the field at its default, and a typo in `"waitFor":
// "WAIT_FOR_APPLY"` would then silently turn into WAIT_FOR_COMMIT. A body with
// an unknown field is decoded a second time, leniently; in that body (and only
// there) an unknown enum name is still dropped.
type jsonCodec struct {
	*vanguard.JSONCodec
	strict *vanguard.JSONCodec // DiscardUnknown off
	domain string
}

func newJSONCodec(domain string) func(vanguard.TypeResolver) vanguard.Codec {
	return func(res vanguard.TypeResolver) vanguard.Codec {
		lenient := vanguard.NewJSONCodec(res)
		strict := *lenient
		strict.UnmarshalOptions.DiscardUnknown = false
		return jsonCodec{JSONCodec: lenient, strict: &strict, domain: domain}
	}
}

func (c jsonCodec) Unmarshal(data []byte, msg proto.Message) error {
	err := c.strict.Unmarshal(data, msg)
	if isUnknownField(err) {
		proto.Reset(msg)
		err = c.JSONCodec.Unmarshal(data, msg)
	}
	if err != nil {
		return c.malformed(err, "")
	}
	return nil
}

func (c jsonCodec) UnmarshalField(data []byte, msg proto.Message, field protoreflect.FieldDescriptor) error {
	err := c.strict.UnmarshalField(data, msg, field)
	if isUnknownField(err) {
		msg.ProtoReflect().Clear(field)
		err = c.JSONCodec.UnmarshalField(data, msg, field)
	}
	if err != nil {
		return c.malformed(err, string(field.Name()))
	}
	return nil
}

// isUnknownField reports whether err is protojson's refusal of a field name
// the schema does not have (the only error DiscardUnknown would have avoided
// besides an unknown enum name).
func isUnknownField(err error) bool {
	return err != nil && strings.Contains(err.Error(), "unknown field")
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
