package service_test

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// docs/ARCHITECTURE.md names every RPC of both services, so that a new
// one cannot be added without the map saying so.
func TestArchitectureDocNamesEveryRPC(t *testing.T) {
	b, err := os.ReadFile("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	_, api, ok := strings.Cut(string(b), "## gRPC API")
	if !ok {
		t.Fatal("docs/ARCHITECTURE.md has no gRPC API section")
	}
	api, _, _ = strings.Cut(api, "\n## ")
	for _, fd := range []protoreflect.FileDescriptor{membershipv1.File_membership_v1_membership_proto, gatewayv1.File_gateway_v1_gateway_proto} {
		svcs := fd.Services()
		for i := 0; i < svcs.Len(); i++ {
			svc := svcs.Get(i)
			if !strings.Contains(api, string(svc.FullName())) {
				t.Errorf("the gRPC API section does not name %s", svc.FullName())
			}
			for j := 0; j < svc.Methods().Len(); j++ {
				if m := svc.Methods().Get(j).Name(); !strings.Contains(api, string(m)) {
					t.Errorf("the gRPC API section does not name %s.%s", svc.FullName(), m)
				}
			}
		}
	}
}
