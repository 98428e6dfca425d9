package grpcedge_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/grpcedge"
)

// method is one RPC of one of the two services, with the connection that
// serves it.
type method struct {
	full string
	in   protoreflect.MessageDescriptor
	cc   *grpc.ClientConn
}

// methods lists every RPC of MembershipService and GatewayService.
func (s *servers) methods(t testing.TB) []method {
	t.Helper()
	var out []method
	for _, svc := range []struct {
		desc grpc.ServiceDesc
		cc   *grpc.ClientConn
	}{{membershipv1.MembershipService_ServiceDesc, s.membership}, {gatewayv1.GatewayService_ServiceDesc, s.gateway}} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc.desc.ServiceName))
		if err != nil {
			t.Fatal(err)
		}
		sd := d.(protoreflect.ServiceDescriptor)
		for i := range sd.Methods().Len() {
			m := sd.Methods().Get(i)
			out = append(out, method{full: "/" + svc.desc.ServiceName + "/" + string(m.Name()), in: m.Input(), cc: svc.cc})
		}
	}
	if len(out) < 12 {
		t.Fatalf("found %d methods", len(out))
	}
	return out
}

// A string field that is not UTF-8, sent as raw protobuf, is refused as bad
// input naming the field, on every RPC of both services; grpc-go alone answers
// INTERNAL "grpc: failed to unmarshal the received message: string field
// contains invalid UTF-8" without an ErrorInfo.
func TestInvalidUTF8IsInvalidArgumentOnEveryMethod(t *testing.T) {
	s := startServers(t, nil, nil)
	for _, m := range s.methods(t) {
		t.Run(m.full, func(t *testing.T) {
			// The first string field, or (for a request made of steps, as
			// Handoff's) the first string field of its first message field.
			stringField := func(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
				for i := range md.Fields().Len() {
					if f := md.Fields().Get(i); f.Kind() == protoreflect.StringKind {
						return f
					}
				}
				return nil
			}
			var outer protoreflect.FieldDescriptor
			fd := stringField(m.in)
			for i := 0; fd == nil && i < m.in.Fields().Len(); i++ {
				if f := m.in.Fields().Get(i); f.Kind() == protoreflect.MessageKind && !f.IsList() && !f.IsMap() {
					if fd = stringField(f.Message()); fd != nil {
						outer = f
					}
				}
			}
			if fd == nil {
				t.Fatalf("%s has no string field", m.in.FullName())
			}
			want := string(fd.Name())
			if fd.IsList() {
				want += "[0]"
			}
			if outer != nil {
				want = string(outer.Name()) + "." + want
			}
			// A valid field first, so that the bad one is not at offset 0.
			b := protowire.AppendTag(nil, 1000, protowire.VarintType)
			b = protowire.AppendVarint(b, 7)
			bad := protowire.AppendTag(nil, fd.Number(), protowire.BytesType)
			bad = protowire.AppendBytes(bad, []byte("room-\xff\xfe"))
			if outer != nil {
				b = protowire.AppendTag(b, outer.Number(), protowire.BytesType)
				b = protowire.AppendBytes(b, bad)
			} else {
				b = append(b, bad...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := invokeRaw(ctx, m.cc, m.full, b)
			info := errorInfo(t, err, codes.InvalidArgument)
			if info.Reason != grpcedge.ReasonMalformedRequest || info.Metadata["field"] != want || info.Domain != grpcedge.Domain(m.full) {
				t.Fatalf("ErrorInfo %v, want reason %s, field %q, domain %s (%v)", info, grpcedge.ReasonMalformedRequest, want, grpcedge.Domain(m.full), err)
			}
			if !strings.Contains(err.Error(), "UTF-8") {
				t.Fatalf("message does not say what is wrong: %v", err)
			}
		})
	}
}

// nestedValue encodes a google.protobuf.Value holding lists depth deep:
// [[[…[null]…]]].
func nestedValue(depth int) []byte {
	// Value.null_value (field 1) = 0.
	v := protowire.AppendTag(nil, 1, protowire.VarintType)
	v = protowire.AppendVarint(v, 0)
	for range depth {
		list := protowire.AppendTag(nil, 1, protowire.BytesType) // ListValue.values
		list = protowire.AppendBytes(list, v)
		v = protowire.AppendTag(nil, 6, protowire.BytesType) // Value.list_value
		v = protowire.AppendBytes(v, list)
	}
	return v
}

// Broadcast and Blast data nested past protobuf's recursion limit is bad
// input in field data, not INTERNAL "exceeded maximum recursion depth".
func TestDeepDataIsInvalidArgument(t *testing.T) {
	s := startServers(t, nil, nil)
	data := nestedValue(5000)
	for _, c := range []struct {
		method string
		field  protowire.Number
	}{{"/membership.v1.MembershipService/Broadcast", 3}, {"/membership.v1.MembershipService/Blast", 2}} {
		var b []byte
		if c.method == "/membership.v1.MembershipService/Broadcast" {
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, "room")
		}
		b = protowire.AppendTag(b, c.field, protowire.BytesType)
		b = protowire.AppendBytes(b, data)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := invokeRaw(ctx, s.membership, c.method, b)
		cancel()
		info := errorInfo(t, err, codes.InvalidArgument)
		if info.Reason != grpcedge.ReasonMalformedRequest || info.Metadata["field"] != "data" || info.Domain != "membership.v1" {
			t.Fatalf("%s: ErrorInfo %v, want %s on field data (%v)", c.method, info, grpcedge.ReasonMalformedRequest, err)
		}
	}
	// Nesting under the limit is not malformed: such data reaches the service.
	b := protowire.AppendTag(nil, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, nestedValue(100))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := invokeRaw(ctx, s.membership, "/membership.v1.MembershipService/Blast", b); err != nil {
		t.Fatalf("Blast of data 100 deep: %v", err)
	}
}

// A decode error reads the same in every build: protobuf-go puts a space or
// a no-break space after "proto:" depending on the build.
func TestDecodeErrorTextIsTheSameInEveryBuild(t *testing.T) {
	for _, sep := range []string{" ", "\u00a0"} {
		got := grpcedge.DecodeErrorText(errors.New("proto:" + sep + "unexpected EOF"))
		if got != "proto: unexpected EOF" {
			t.Errorf("%q, want %q", got, "proto: unexpected EOF")
		}
	}
	var m membershipv1.JoinRequest
	err := protojson.Unmarshal([]byte(`{"socketId":`), &m)
	if err == nil {
		t.Fatal("a truncated body decoded")
	}
	if got := grpcedge.DecodeErrorText(err); strings.ContainsRune(got, '\u00a0') {
		t.Errorf("%q holds a no-break space", got)
	}
}
