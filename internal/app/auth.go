package app

import (
	"context"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ReadToken reads a bearer token from a file (surrounding white space is
// dropped); an empty path means no token.
func ReadToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

// exemptFromAuth: health checks (probes) and server reflection (grpcurl's
// discovery) answer without a token; they reveal no membership.
func exemptFromAuth(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != healthpb.Health_ServiceDesc.ServiceName &&
		!strings.HasPrefix(c.Service, "grpc.reflection.")
}

// tokenInterceptors require "authorization: bearer <token>" on every call but
// health and reflection; a missing or wrong token is UNAUTHENTICATED.
func tokenInterceptors(token string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	check := func(ctx context.Context) (context.Context, error) {
		if err := checkBearer(ctx, token); err != nil {
			return nil, err
		}
		return ctx, nil
	}
	match := selector.MatchFunc(exemptFromAuth)
	return selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(check), match),
		selector.StreamServerInterceptor(auth.StreamServerInterceptor(check), match)
}

// checkBearer is the token check: ctx's incoming metadata must hold
// "authorization: bearer <token>"; a missing or wrong token is
// UNAUTHENTICATED.
func checkBearer(ctx context.Context, token string) error {
	got, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return status.Error(codes.Unauthenticated, "wrong bearer token")
	}
	return nil
}

// headerTokenCheck is checkBearer on a call's headers, for the payload
// budget's tap (grpcedge.Budget.Authenticate), which runs before any
// interceptor: a payload call without the token reserves nothing.
func headerTokenCheck(token string) func(metadata.MD) error {
	return func(md metadata.MD) error {
		return checkBearer(metadata.NewIncomingContext(context.Background(), md), token)
	}
}

// BearerToken is per-call credentials presenting token. It is sent over
// plaintext connections too: on a network others can read, use TLS.
type BearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (BearerToken) RequireTransportSecurity() bool { return false }
