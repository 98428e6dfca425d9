package httpapi

import (
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

func TestConnectCode(t *testing.T) {
	for c, want := range map[codes.Code]string{
		codes.ResourceExhausted: "resource_exhausted",
		codes.Unauthenticated:   "unauthenticated",
		codes.InvalidArgument:   "invalid_argument",
	} {
		if got := connectCode(c); got != want {
			t.Errorf("connectCode(%v) = %q, want %q", c, got, want)
		}
	}
}

func TestIsServicePath(t *testing.T) {
	for p, want := range map[string]bool{
		"/membership.v1.MembershipService/Join": true,
		"/v1/rooms":                             false,
		"/v1/rooms/a/members":                   false,
		"/membership.v1.MembershipService/":     false,
	} {
		if got := isServicePath(p); got != want {
			t.Errorf("isServicePath(%q) = %v", p, got)
		}
	}
}

// The routes looked up before the transcoder come from the proto's
// annotations: the payload calls must be among them, or the budget would
// not meter them over REST.
func TestPlainRoutesFromAnnotations(t *testing.T) {
	srv := grpc.NewServer()
	membershipv1.RegisterMembershipServiceServer(srv, membershipv1.UnimplementedMembershipServiceServer{})
	got := plainRoutes(srv)
	for route, method := range map[string]string{
		"POST /v1/broadcast": "/membership.v1.MembershipService/Broadcast",
		"POST /v1/blast":     "/membership.v1.MembershipService/Blast",
		"GET /v1/rooms":      "/membership.v1.MembershipService/ListRooms",
	} {
		if got[route] != method {
			t.Errorf("route %q maps to %q, want %q (all: %v)", route, got[route], method, got)
		}
	}
	for route := range got {
		if strings.Contains(route, "{") {
			t.Errorf("route with variables %q listed", route)
		}
	}
}
