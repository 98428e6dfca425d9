// Package httpapi serves the services registered on a grpc.Server over HTTP:
// the Connect protocol (JSON and binary), gRPC-Web, and the REST-style JSON
// routes declared with google.api.http annotations in proto/ (see the route
// table in README.md). Every request is transcoded to gRPC and handed to the
// same grpc.Server in process (connectrpc.com/vanguard), so one implementation
// of each handler, and the server's interceptors (bearer-token auth, metrics,
// logging, error mapping, default deadline), serve every transport.
//
// Errors keep their gRPC code and google.rpc.ErrorInfo detail: Connect routes
// answer with the Connect error JSON ({"code","message","details"}), REST
// routes with a google.rpc.Status JSON whose details carry "@type".
package httpapi

import (
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/vanguard"
	"connectrpc.com/vanguard/vanguardgrpc"
	"github.com/rs/cors"
	"google.golang.org/grpc"

	"github.com/socketrooms/membership/internal/grpcedge"
)

// maxMessageBytes bounds one request or response body the transcoder buffers
// (its default is 4 GiB). The gRPC server still refuses a request past
// grpcedge.MaxRecvMsgSize once decoded; JSON spells the same message in up to
// a few times the bytes, hence the headroom.
const maxMessageBytes = 4 * grpcedge.MaxRecvMsgSize

// Options configure Handler.
type Options struct {
	// CORSOrigins are the browser origins allowed to call the API ("*": any;
	// empty: no CORS headers, same-origin and non-browser callers only).
	CORSOrigins []string
	// Domain is the google.rpc.ErrorInfo domain of the errors the HTTP layer
	// itself reports (a request body that does not decode).
	Domain string
	// Reserve, when set, admits each call before its request is read (the
	// gRPC server's tap handle does not run for calls served over HTTP).
	Reserve ReserveFunc
}

// Handler returns an http.Handler serving srv's services over Connect,
// gRPC-Web and REST. srv must have every service registered already.
func Handler(srv *grpc.Server, opts Options) (http.Handler, error) {
	t, err := vanguardgrpc.NewTranscoder(srv, vanguard.WithCodec(newJSONCodec(opts.Domain)),
		vanguard.WithDefaultServiceOptions(vanguard.WithMaxMessageBufferBytes(maxMessageBytes)))
	if err != nil {
		return nil, fmt.Errorf("http transcoder: %w", err)
	}
	var h http.Handler = t
	if opts.Reserve != nil {
		h = reserving(h, opts.Reserve, plainRoutes(srv))
	}
	h = prepare(h)
	if len(opts.CORSOrigins) > 0 {
		h = cors.New(cors.Options{
			AllowedOrigins: opts.CORSOrigins,
			AllowedMethods: []string{http.MethodGet, http.MethodPost, http.MethodDelete},
			// Connect, gRPC-Web and REST request headers, and the bearer token.
			AllowedHeaders: []string{"Authorization", "Content-Type", "Connect-Protocol-Version",
				"Connect-Timeout-Ms", "Grpc-Timeout", "X-Grpc-Web", "X-User-Agent", "X-Socket-Id"},
			// gRPC-Web carries status in headers (or trailers in the body);
			// browsers hide headers not listed here.
			ExposedHeaders: []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"},
			MaxAge:         7200,
		}).Handler(h)
	}
	return h, nil
}

// prepare hands the transcoder REST paths as sent, and marks a POST to /package.Service/Method with a JSON or
// binary protobuf body as a Connect unary call when the caller left out the
// Connect-Protocol-Version header. The Connect protocol makes the header
// optional, but the transcoder tells Connect from REST by it; REST routes all
// start with /v1/, so a path naming a service cannot be one.
func prepare(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isServicePath(r.URL.Path) {
			// The transcoder splits the path at "/" and percent-decodes each
			// segment itself, so a room or socket id is one segment even
			// with "/" in it ("%2F"); it must see the path as sent.
			r.URL.Path, r.URL.RawPath = r.URL.EscapedPath(), ""
		} else if r.Method == http.MethodPost && r.Header.Get("Connect-Protocol-Version") == "" {
			switch r.Header.Get("Content-Type") {
			case "application/json", "application/proto":
				r.Header.Set("Connect-Protocol-Version", "1")
			}
		}
		h.ServeHTTP(w, r)
	})
}

// isServicePath reports whether p has the shape /pkg.Service/Method.
func isServicePath(p string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return ok && strings.Contains(svc, ".") && method != "" && !strings.Contains(method, "/")
}
