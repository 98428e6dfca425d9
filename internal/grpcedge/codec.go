package grpcedge

import (
	"context"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"weak"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	// The "proto" codec the server codec encodes with.
	_ "google.golang.org/grpc/encoding/proto"
)

// ServerCodec makes request bytes that do not decode INVALID_ARGUMENT with
// reason MALFORMED_REQUEST, on every method of the server, together with
// UnaryDecodeErrors and StreamDecodeErrors among its interceptors (a server
// with the codec and without them would call handlers with half-decoded
// requests).
//
// grpc-go (v1.85: rpc_util.go recv) turns any error of the codec's Unmarshal
// into INTERNAL "grpc: failed to unmarshal the received message", whatever the
// error says, and does so before any interceptor runs. So the server codec
// does not fail: it keeps the decode error beside the message it was decoding
// into and returns nil, and the interceptors, which run before the handler,
// answer the call with that error instead of calling it. They must come
// before any interceptor that can answer a call without calling on (an auth
// check), or the call would get that interceptor's answer instead.
//
// Not every call whose request the codec decoded reaches an interceptor:
// grpc-go reads a non-client-streaming call's request and then reads on for
// the end of the stream, decoding any second message into the same request,
// and a failure of that second read (a second message, a cancel, a closed
// connection) ends a unary call before its interceptors run. So a kept error
// lives no longer than its message: it is keyed weakly by the message and
// dropped when the message is garbage (runtime.AddCleanup), and an
// interceptor that sees the message takes it at once.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(serverCodec{encoding.GetCodecV2("proto")})
}

// decodeErrors holds, per message being decoded into, the error that message's
// bytes gave, from the codec's Unmarshal until an interceptor takes it or the
// message is garbage. Its keys are weak: an entry does not keep its message.
var decodeErrors sync.Map // weak.Pointer[byte] (of the message) → *decodeError

// pendingDecodeErrors counts decodeErrors' entries, so that a request that
// decoded (nearly all) is checked without making a weak pointer to it: the
// codec stores an entry in the goroutine that then takes it.
var pendingDecodeErrors atomic.Int64

// messageKey is the key of message v in decodeErrors: a weak pointer to what
// v points to (every generated message is a pointer). Weak pointers made from
// the same pointer are equal, and unequal to any made after the object is
// freed, so a new message at a reused address is a new key.
func messageKey(v any) (weak.Pointer[byte], bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return weak.Pointer[byte]{}, false
	}
	return weak.Make((*byte)(rv.UnsafePointer())), true
}

type decodeError struct {
	field string // "" when no one field is at fault
	err   error
}

type serverCodec struct{ encoding.CodecV2 }

func (serverCodec) Name() string { return "proto" }

func (c serverCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	key, ok := messageKey(v)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if err := proto.Unmarshal(b, m); err != nil {
		if _, loaded := decodeErrors.Swap(key, &decodeError{field: badField(m.ProtoReflect().Descriptor(), b), err: err}); !loaded {
			pendingDecodeErrors.Add(1)
			runtime.AddCleanup((*byte)(reflect.ValueOf(v).UnsafePointer()), dropDecodeError, key)
		}
	}
	return nil
}

func dropDecodeError(key weak.Pointer[byte]) {
	if _, ok := decodeErrors.LoadAndDelete(key); ok {
		pendingDecodeErrors.Add(-1)
	}
}

// takeDecodeError returns the error req's bytes gave, if any, as the call's
// status.
func takeDecodeError(fullMethod string, req any) error {
	if pendingDecodeErrors.Load() == 0 {
		return nil
	}
	key, ok := messageKey(req)
	if !ok {
		return nil
	}
	v, ok := decodeErrors.LoadAndDelete(key)
	if !ok {
		return nil
	}
	pendingDecodeErrors.Add(-1)
	de := v.(*decodeError)
	info := &errdetails.ErrorInfo{Reason: ReasonMalformedRequest, Domain: Domain(fullMethod)}
	text := DecodeErrorText(de.err)
	if de.field == "" {
		return withDetails(status.New(codes.InvalidArgument, "the request does not decode: "+text), info)
	}
	info.Metadata = map[string]string{"field": de.field}
	return withDetails(status.New(codes.InvalidArgument, "the request does not decode at field "+de.field+": "+text),
		info, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: de.field, Description: text}}})
}

// DecodeErrorText is a protobuf decode error's text as callers are shown it.
// protobuf-go writes "proto:" followed by either a space or a no-break space
// (U+00A0), chosen per build so that nobody matches its text; the API's
// messages are the same in every build, so the no-break space becomes a
// space.
func DecodeErrorText(err error) string {
	return strings.ReplaceAll(err.Error(), "\u00a0", " ")
}

// UnaryDecodeErrors answers a unary call whose request did not decode.
func UnaryDecodeErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := takeDecodeError(info.FullMethod, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// StreamDecodeErrors answers a streaming call's RecvMsg whose message did not
// decode. It takes the message's decode error whatever RecvMsg returned: on a
// non-client-streaming call RecvMsg decodes the request and then fails if a
// second message follows or the call ends first.
func StreamDecodeErrors(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, &decodeCheckedStream{ServerStream: ss, method: info.FullMethod})
}

type decodeCheckedStream struct {
	grpc.ServerStream
	method string
}

func (s *decodeCheckedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if derr := takeDecodeError(s.method, m); derr != nil {
		return derr
	}
	return err
}

// maxFieldPath is how deep badField names a field: past it, the top-level
// field is named (data nested thousands deep is named "data").
const maxFieldPath = 16

// badField names the first field of b (an encoding of md) whose bytes are at
// fault: a string that is not UTF-8, a value of the wrong wire type, a
// truncated value, or messages nested as deep as protobuf's recursion limit.
// Repeated fields carry an index ("rooms[2]"); "" when no field can be named
// (b breaks off between fields).
func badField(md protoreflect.MessageDescriptor, b []byte) string {
	rev, _ := walk(md, b, 1)
	if len(rev) > maxFieldPath {
		return rev[len(rev)-1]
	}
	path := make([]string, len(rev))
	for i, name := range rev {
		path[len(rev)-1-i] = name
	}
	return strings.Join(path, ".")
}

// walk returns the path to the first bad field of b, innermost field first,
// and whether b has one; depth counts the messages b is nested in, as
// protobuf's recursion limit does.
func walk(md protoreflect.MessageDescriptor, b []byte, depth int) ([]string, bool) {
	counts := map[protowire.Number]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, true
		}
		fd := md.Fields().ByNumber(num)
		var path []string
		if fd != nil {
			name := string(fd.Name())
			if fd.IsList() || fd.IsMap() {
				name += "[" + strconv.Itoa(counts[num]) + "]"
				counts[num]++
			}
			path = []string{name}
		}
		vb := b[n:]
		m := protowire.ConsumeFieldValue(num, typ, vb)
		if m < 0 {
			return path, true
		}
		val := vb[:m]
		b = vb[m:]
		if fd == nil {
			continue // unknown fields are kept, not checked
		}
		kind := fd.Kind()
		isLen := kind == protoreflect.StringKind || kind == protoreflect.BytesKind || kind == protoreflect.MessageKind
		if typ != protowire.BytesType {
			// Packed scalars come as bytes; a length-delimited kind never
			// comes as anything else.
			if isLen || (kind == protoreflect.GroupKind && typ != protowire.StartGroupType) {
				return path, true
			}
			continue
		}
		s, _ := protowire.ConsumeBytes(val)
		switch kind {
		case protoreflect.StringKind:
			if !utf8.Valid(s) {
				return path, true
			}
		case protoreflect.MessageKind:
			if depth >= protowire.DefaultRecursionLimit {
				return path, true
			}
			if sub, bad := walk(fd.Message(), s, depth+1); bad {
				return append(sub, path...), true
			}
		}
	}
	return nil, false
}
