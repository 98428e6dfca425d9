package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"unicode"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// ReserveFunc admits a call before its request is read, as a gRPC tap handle
// does (grpcedge.Budget.ReserveHTTP): it returns the context to serve the
// call with, or the gRPC status error to refuse it with.
type ReserveFunc func(ctx context.Context, fullMethod string, header http.Header) (context.Context, error)

// plainRoutes maps "VERB /path" of each REST route without path variables to
// its gRPC method. Only such routes are looked up before the transcoder: the
// calls a ReserveFunc meters (Broadcast, Blast) have no path variables.
func plainRoutes(srv *grpc.Server) map[string]string {
	routes := map[string]string{}
	for name := range srv.GetServiceInfo() {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			continue
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
			if rule == nil {
				continue
			}
			full := "/" + name + "/" + string(md.Name())
			for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
				verb, path := httpRulePattern(r)
				if path != "" && !strings.Contains(path, "{") {
					routes[verb+" "+path] = full
				}
			}
		}
	}
	return routes
}

func httpRulePattern(r *annotations.HttpRule) (verb, path string) {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		return http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		return http.MethodPut, p.Put
	case *annotations.HttpRule_Delete:
		return http.MethodDelete, p.Delete
	case *annotations.HttpRule_Patch:
		return http.MethodPatch, p.Patch
	}
	return "", ""
}

// reserving runs reserve for every call before next reads its request, and
// answers a refusal in the caller's protocol.
func reserving(next http.Handler, reserve ReserveFunc, routes map[string]string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		full := r.URL.Path
		rest := !isServicePath(full)
		if rest {
			if full = routes[r.Method+" "+r.URL.Path]; full == "" {
				next.ServeHTTP(w, r)
				return
			}
		}
		// The reservation is released when this context is done: when the
		// call ends, however it ends.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		ctx, err := reserve(ctx, full, r.Header)
		if err != nil {
			writeRefusal(w, r, rest, status.Convert(err))
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// httpStatus is the HTTP status of a refusal's gRPC code (the codes a
// ReserveFunc returns; the gRPC-HTTP mapping of google.rpc.Code).
func httpStatus(c codes.Code) int {
	switch c {
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// connectCode is the Connect protocol's name of c: "resource_exhausted".
func connectCode(c codes.Code) string {
	var sb strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) {
			if i > 0 {
				sb.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

func writeRefusal(w http.ResponseWriter, r *http.Request, rest bool, st *status.Status) {
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc-web"):
		// Trailers-only response: the status in the headers.
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Grpc-Status", strings.TrimSpace(jsonNumber(int(st.Code()))))
		w.Header().Set("Grpc-Message", st.Message())
		if b, err := proto.Marshal(st.Proto()); err == nil {
			w.Header().Set("Grpc-Status-Details-Bin", base64.RawStdEncoding.EncodeToString(b))
		}
		w.WriteHeader(http.StatusOK)
	case rest:
		b, err := protojson.Marshal(st.Proto())
		if err != nil {
			b = []byte(`{"code":13,"message":"internal error"}`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(httpStatus(st.Code()))
		_, _ = w.Write(b)
	default:
		type detail struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		}
		body := struct {
			Code    string   `json:"code"`
			Message string   `json:"message,omitempty"`
			Details []detail `json:"details,omitempty"`
		}{Code: connectCode(st.Code()), Message: st.Message()}
		for _, a := range st.Proto().GetDetails() {
			name := a.GetTypeUrl()[strings.LastIndexByte(a.GetTypeUrl(), '/')+1:]
			body.Details = append(body.Details, detail{Type: name, Value: base64.RawStdEncoding.EncodeToString(a.GetValue())})
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(httpStatus(st.Code()))
		_ = json.NewEncoder(w).Encode(body)
	}
}

func jsonNumber(n int) string { b, _ := json.Marshal(n); return string(b) }
