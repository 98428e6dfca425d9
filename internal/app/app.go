// Package app holds what both binaries wire the same way: flags read from the
// environment, the logger, and the gRPC server's interceptors.
package app

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/socketrooms/membership/internal/grpcedge"
)

// ParseFlags parses args into fs. A flag not given on the command line takes
// its value from the environment variable envPrefix + FLAG_NAME (dashes become
// underscores, e.g. --etcd-endpoints ⇒ GATEWAY_ETCD_ENDPOINTS).
func ParseFlags(fs *flag.FlagSet, envPrefix string, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(envPrefix, f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s: %w", EnvName(envPrefix, f.Name), e)
			}
		}
	})
	return err
}

// EnvName is the environment variable read for a flag.
func EnvName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// NewLogger returns a text logger on stderr at the named level.
func NewLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// Version is the module version the binary was built from.
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "devel"
}

// ServerOptions are the interceptors every gRPC server here runs: panics
// become INTERNAL (and are logged), every finished call is logged (successful
// ones at debug level), and calls without a deadline get defaultTimeout so a
// stalled dependency cannot hold them forever.
//
// With a non-empty token, every call but health and reflection must carry it
// as a bearer token.
//
// Request bytes that do not decode get INVALID_ARGUMENT/MALFORMED_REQUEST
// (grpcedge.CodecOptions), before the token is checked: a kept decode error
// must be taken by its interceptor, which nothing may skip.
func ServerOptions(log *slog.Logger, defaultTimeout time.Duration, token string, metrics ...*grpcprom.ServerMetrics) []grpc.ServerOption {
	logger, logOpts := serverLogging(log)
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	timeout := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if _, ok := ctx.Deadline(); !ok && defaultTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
			defer cancel()
		}
		return h(ctx, req)
	}
	unary := []grpc.UnaryServerInterceptor{unaryLogging(log, logger, logOpts)}
	stream := []grpc.StreamServerInterceptor{logging.StreamServerInterceptor(logger, logOpts...)}
	for _, m := range metrics {
		unary = append(unary, m.UnaryServerInterceptor())
		stream = append(stream, m.StreamServerInterceptor())
	}
	unary = append(unary, grpcedge.UnaryDecodeErrors)
	stream = append(stream, grpcedge.StreamDecodeErrors)
	if token != "" {
		u, st := tokenInterceptors(token)
		unary, stream = append(unary, u), append(stream, st)
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recoverOpt), timeout)
	stream = append(stream, recovery.StreamServerInterceptor(recoverOpt))
	return []grpc.ServerOption{
		grpcedge.ServerCodec(),
		// Reused handler goroutines keep their grown stacks; a fresh goroutine
		// per call spent an eighth of the CPU growing its stack. A call holds
		// its worker while it waits (a Join until its etcd transaction
		// commits), so the pool is sized by calls in flight, not by cores: a
		// call that finds every worker busy is served by a fresh goroutine.
		grpc.NumStreamWorkers(uint32(max(StreamWorkers, 4*runtime.GOMAXPROCS(0)))),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
}

// serverLogging is the logger and options of the logging interceptors:
// each call's end, successful ones at debug level.
func serverLogging(log *slog.Logger) (logging.Logger, []logging.Option) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithFieldsFromContextAndCallMeta(replayedCallFields),
		logging.WithLevels(func(c codes.Code) logging.Level {
			if c == codes.OK {
				return logging.LevelDebug
			}
			return logging.DefaultServerCodeToLevel(c)
		}),
	}
	return logger, logOpts
}

// unaryLogging logs each unary call's end with the logging interceptor, at
// debug level when it succeeded (see ServerOptions). While debug is off a
// successful call logs nothing, yet the interceptor would still build its
// fields (a formatted start time and deadline, the peer's address, the
// duration): 5 % of the membership-server's CPU under Join/Leave
// (BENCHMARKS.md, section 1). So with debug off the call runs without it, and
// only a failed call is passed through it afterwards, with its real start
// time and duration (replayedCallFields): the record is the interceptor's
// own, as with debug on.
func unaryLogging(log *slog.Logger, logger logging.Logger, opts []logging.Option) grpc.UnaryServerInterceptor {
	full := logging.UnaryServerInterceptor(logger, opts...)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if log.Enabled(ctx, slog.LevelDebug) {
			return full(ctx, req, info, h)
		}
		start := time.Now()
		resp, err := h(ctx, req)
		if err == nil {
			return resp, nil
		}
		rctx := context.WithValue(ctx, replayedCallKey{}, replayedCall{start: start, took: time.Since(start)})
		return full(rctx, req, info, func(context.Context, any) (any, error) { return resp, err })
	}
}

type replayedCallKey struct{}

type replayedCall struct {
	start time.Time
	took  time.Duration
}

// replayedCallFields gives a call logged after it ended (unaryLogging) its
// real start time and duration, which take precedence over those the
// interceptor measures around the replay.
func replayedCallFields(ctx context.Context, _ interceptors.CallMeta) logging.Fields {
	c, ok := ctx.Value(replayedCallKey{}).(replayedCall)
	if !ok {
		return nil
	}
	return append(logging.Fields{"grpc.start_time", c.start.Format(time.RFC3339)}, logging.DurationToTimeMillisFields(c.took)...)
}

// StreamWorkers is how many calls at once ServerOptions serves on reused
// handler goroutines (grpc.NumStreamWorkers; more when GOMAXPROCS is past
// 64). With 8 (4 per core on 2 cores), 64 concurrent Joins ran mostly on
// fresh goroutines, whose stack growth cost 5 % of the membership-server's
// CPU (BENCHMARKS.md, section 1). An idle worker costs a goroutine's stack.
const StreamWorkers = 256

// EtcdConfig is how both binaries (and the tests) configure their etcd
// client. Unary calls are retried only a few times inside the client: a member
// that has lost its leader then yields UNAVAILABLE within ~100ms, which callers
// retry, instead of a silent wait until their deadline.
//
// gRPC keepalive: after EtcdKeepAliveTime without anything received the
// client pings, and closes the connection when EtcdKeepAliveTimeout passes
// without an answer; the client then reconnects and its watches resume. A
// connection whose peer vanished without a reset (a crashed host, a dropped
// NAT entry) would otherwise hold every watch silent until TCP gives up,
// minutes later. etcd's server enforces a minimum ping interval
// (--grpc-keepalive-min-time, 5s by default) and, with its
// PermitWithoutStream off, counts pings on a connection without streams as
// abuse: more than two such strikes and it sends GOAWAY "too_many_pings". So
// the interval stays above 5s and the client pings only while calls or
// watches are open (PermitWithoutStream false), which is whenever a gateway
// or membership-server runs: each keeps a watch open.
func EtcdConfig(endpoints []string, log *zap.Logger, dial ...grpc.DialOption) clientv3.Config {
	return clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    EtcdKeepAliveTime,
		DialKeepAliveTimeout: EtcdKeepAliveTimeout,
		PermitWithoutStream:  false,
		MaxUnaryRetries:      3,
		Logger:               log,
		DialOptions:          dial,
	}
}

// Keepalive of the etcd client's connections; see EtcdConfig.
const (
	EtcdKeepAliveTime    = 10 * time.Second
	EtcdKeepAliveTimeout = 3 * time.Second
)

// EtcdTLSFlags are the etcd client's TLS flags, the same on both binaries.
type EtcdTLSFlags struct{ ca, cert, key *string }

// AddEtcdTLSFlags defines --etcd-ca-file, --etcd-cert-file, --etcd-key-file.
func AddEtcdTLSFlags(fs *flag.FlagSet) EtcdTLSFlags {
	return EtcdTLSFlags{
		ca:   fs.String("etcd-ca-file", "", "CA bundle to verify etcd's certificate (https:// endpoints)"),
		cert: fs.String("etcd-cert-file", "", "client certificate presented to etcd"),
		key:  fs.String("etcd-key-file", "", "key of --etcd-cert-file"),
	}
}

// Apply sets cfg.TLS from the flags (no flags: no TLS).
func (f EtcdTLSFlags) Apply(cfg *clientv3.Config) error {
	t, err := ClientTLSConfig(*f.ca, *f.cert, *f.key)
	if err != nil {
		return fmt.Errorf("etcd TLS: %w", err)
	}
	cfg.TLS = t
	return nil
}

// EtcdLogger is the zap logger handed to the etcd client: errors only, since
// its retries are reported through the calls that make them.
func EtcdLogger() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}

// ServePprof serves net/http/pprof on addr until the process exits; empty
// addr serves nothing. It listens before returning, so a bad address fails
// at start.
func ServePprof(addr, envPrefix string, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	lis, err := Listen(addr, envPrefix, "pprof-addr")
	if err != nil {
		return err
	}
	log.Info("pprof serving", "addr", lis.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(lis)
	return nil
}
