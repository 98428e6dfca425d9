package grpcedge_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// FuzzRequestBytes sends arbitrary bytes as the request of every RPC of
// MembershipService and GatewayService, served as their binaries serve them
// over real etcd, and requires an answer that is not INTERNAL or UNKNOWN:
// bytes from a caller are bad input or a request, never a server fault.
func FuzzRequestBytes(f *testing.F) {
	s := startServers(f, nil, nil)
	methods := s.methods(f)
	valid, _ := proto.Marshal(&membershipv1.JoinRequest{Room: "r", SocketId: "gw.0000000000000001.AAAAAAAAAAAAAAAAAAAAAA"})
	for i := range methods {
		f.Add(uint8(i), []byte{})
		f.Add(uint8(i), valid)
		f.Add(uint8(i), []byte("\x0a\x02\xff\xfe\x12\x02\xc3\x28"))
		f.Add(uint8(i), []byte{0x0a, 0xff})             // a length past the end
		f.Add(uint8(i), []byte{0x0b, 0x0c})             // a group
		f.Add(uint8(i), protowire.AppendTag(nil, 3, 2)) // a truncated field
		deep := protowire.AppendTag(nil, 3, protowire.BytesType)
		f.Add(uint8(i), protowire.AppendBytes(deep, nestedValue(5001)))
	}
	f.Fuzz(func(t *testing.T, i uint8, b []byte) {
		m := methods[int(i)%len(methods)]
		// Calls that wait (a Deliver or WaitApplied for a future revision)
		// end at the deadline: DEADLINE_EXCEEDED is an answer too.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		err := invokeRaw(ctx, m.cc, m.full, b)
		if c := statusCode(err); c == codes.Internal || c == codes.Unknown {
			t.Fatalf("%s(%x): %v", m.full, b, err)
		}
	})
}
