package app

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// loggingOf is the unary logging interceptor ServerOptions installs, writing
// JSON records at level to buf.
func loggingOf(level slog.Level, buf *bytes.Buffer) grpc.UnaryServerInterceptor {
	log := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: level}))
	logger, logOpts := serverLogging(log)
	return unaryLogging(log, logger, logOpts)
}

var joinInfo = &grpc.UnaryServerInfo{FullMethod: "/membership.v1.MembershipService/Join"}

func peerCtx() context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}})
}

// With debug off, a successful call allocates nothing in the logging
// interceptor: it would log nothing, so no fields are built for it.
func TestSuccessfulCallBuildsNoLogFieldsWithDebugOff(t *testing.T) {
	var buf bytes.Buffer
	log := loggingOf(slog.LevelInfo, &buf)
	ctx := peerCtx()
	ok := func(context.Context, any) (any, error) { return nil, nil }
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := log(ctx, nil, joinInfo, ok); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("%.0f allocations per successful call in the logging interceptor; want 0", allocs)
	}
	if buf.Len() != 0 {
		t.Errorf("a successful call logged with debug off: %s", buf.String())
	}
}

// A failed call is still logged as the interceptor logs it, with its real
// start time and duration; with debug on, a successful one is logged at
// debug level.
func TestCallsLoggedWithTheirStartAndDuration(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level slog.Level
		err   error
		want  string // the record's level
	}{
		{"failed, debug off", slog.LevelInfo, status.Error(codes.NotFound, "no such socket"), "INFO"},
		{"failed, debug on", slog.LevelDebug, status.Error(codes.NotFound, "no such socket"), "INFO"},
		{"succeeded, debug on", slog.LevelDebug, nil, "DEBUG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := loggingOf(tc.level, &buf)
			before := time.Now().Truncate(time.Second)
			_, err := log(peerCtx(), nil, joinInfo, func(context.Context, any) (any, error) {
				time.Sleep(30 * time.Millisecond)
				return nil, tc.err
			})
			if err != tc.err {
				t.Fatalf("interceptor returned %v; want the handler's %v", err, tc.err)
			}
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("want one JSON record, got %q: %v", buf.String(), err)
			}
			if rec["msg"] != "finished call" || rec["level"] != tc.want || rec["grpc.method"] != "Join" ||
				rec["grpc.service"] != "membership.v1.MembershipService" || rec["peer.address"] != "127.0.0.1:4242" {
				t.Errorf("record %v", rec)
			}
			if want := status.Code(tc.err).String(); rec["grpc.code"] != want {
				t.Errorf("grpc.code %v; want %s", rec["grpc.code"], want)
			}
			if tc.err != nil && rec["grpc.error"] == nil {
				t.Errorf("no grpc.error in %v", rec)
			}
			ms, err := strconv.ParseFloat(rec["grpc.time_ms"].(string), 64)
			if err != nil || ms < 30 {
				t.Errorf("grpc.time_ms %v; want the handler's 30 ms or more", rec["grpc.time_ms"])
			}
			start, err := time.Parse(time.RFC3339, rec["grpc.start_time"].(string))
			if err != nil || start.Before(before) || start.After(time.Now()) {
				t.Errorf("grpc.start_time %v; want the call's start", rec["grpc.start_time"])
			}
		})
	}
}
