// Command membership-server serves membership.v1.MembershipService over gRPC.
// Without --etcd-endpoints it runs an embedded single-member etcd that gateways
// can use too (development, one machine).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/console"
	"github.com/socketrooms/membership/internal/etcdembed"
	"github.com/socketrooms/membership/internal/httpapi"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/store"
)

const envPrefix = "MEMBERSHIP_"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "membership-server:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("membership-server", flag.ContinueOnError)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:50051", "address serving the gRPC API, health and reflection")
	endpoints := fs.String("etcd-endpoints", "", "comma-separated etcd client URLs; empty starts an embedded etcd")
	embeddedAddr := fs.String("embedded-etcd-addr", "127.0.0.1:2379", "client address of the embedded etcd (gateways connect here)")
	embeddedPeer := fs.String("embedded-etcd-peer-addr", "127.0.0.1:2380", "peer address of the embedded etcd")
	dataDir := fs.String("data-dir", "", "data directory of the embedded etcd; empty: a temporary one, removed at exit (make run keeps .data/etcd)")
	prefix := fs.String("etcd-prefix", store.DefaultPrefix, "prefix of every etcd key")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	callTimeout := fs.Duration("default-call-timeout", 10*time.Second, "deadline for calls that carry none")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:50052", "serves /metrics (Prometheus) and /healthz; empty: off")
	tokenFile := fs.String("auth-token-file", "", "file holding the bearer token callers must present (empty: none; health and reflection never need it)")
	gatewayTokenFile := fs.String("gateway-auth-token-file", "", "file holding the bearer token to present to gateways' internal API")
	etcdTLS := app.AddEtcdTLSFlags(fs)
	skipVersionCheck := app.AddEtcdVersionCheckFlag(fs)
	serverTLS := app.AddServerTLSFlags(fs, "gRPC API")
	gwServerName := fs.String("gateway-tls-server-name", "", "name to verify in every gateway's certificate instead of its advertised host (one certificate for all gateways, e.g. on Kubernetes where they are dialled by pod IP)")
	gwCA := fs.String("gateway-tls-ca-file", "", "CA bundle to verify gateways' internal API certificates; empty: plaintext to gateways")
	gwCert := fs.String("gateway-tls-cert-file", "", "client certificate presented to gateways (mutual TLS)")
	gwKey := fs.String("gateway-tls-key-file", "", "key of --gateway-tls-cert-file")
	committers := fs.Int("batch-committers", 4, "coalesced Join/Leave etcd transactions in flight at once; 0 sends one transaction per call")
	maxRooms := fs.Int("max-rooms-per-socket", 0, "rooms a socket may be in; a Join past it fails with FAILED_PRECONDITION (0: no limit; a limit costs each Join one more etcd read and caps a Join at 60 sockets, fewer under a smaller --etcd-max-txn-ops)")
	watchProgress := fs.Duration("watch-progress-interval", service.DefaultWatchProgressInterval, "how often an idle WatchMembership stream gets a progress message")
	watchBuffer := fs.Int("watch-buffer-events", service.DefaultWatchBufferEvents, "events a WatchMembership stream may hold for a consumer that has not read them; past it the stream's etcd watch pauses until half are sent (--watch-stall-timeout bounds the pause)")
	watchStall := fs.Duration("watch-stall-timeout", service.DefaultWatchStallTimeout, "how long a WatchMembership stream's buffer may stay full (the consumer not reading) before the stream ends with RESOURCE_EXHAUSTED")
	maxWatches := fs.Int("max-watch-streams", service.DefaultMaxWatchStreams, "WatchMembership streams one replica serves at once")
	maxPayload := fs.Int("max-payload-bytes", service.DefaultMaxPayloadBytes, "largest JSON encoding of a Broadcast's or Blast's data (at most 3 MiB: messages travel to gateways in gRPC requests of at most 4 MiB)")
	etcdLimits := app.AddEtcdTxnLimitFlags(fs)
	inflight := app.AddInflightPayloadFlag(fs, "Broadcast and Blast calls (and of the Deliver requests they send to gateways, while in flight)")
	httpAddr := fs.String("http-addr", "", "address serving the same API over HTTP: Connect (JSON and binary), gRPC-Web and REST-style JSON routes (same token, TLS and limits as --grpc-addr; empty: off; make run uses 127.0.0.1:8090)")
	consoleOn := fs.Bool("console", false, "serve the operator console at /console/ on --http-addr (make run turns it on); it calls the API with the token the operator signs in with")
	corsOrigins := fs.String("http-cors-origins", "", "comma-separated browser origins allowed to call --http-addr (CORS; \"*\": any; empty: none)")
	pprofAddr := fs.String("pprof-addr", "", "serve net/http/pprof on this address (empty: off)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "how long in-flight calls may finish on SIGTERM")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: membership-server [flags]\nEach flag can also be set as %sFLAG_NAME.\n", envPrefix)
		fs.PrintDefaults()
	}
	if err := app.ParseFlags(fs, envPrefix, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *maxRooms < 0 {
		return fmt.Errorf("--max-rooms-per-socket %d: must be 0 (no limit) or more", *maxRooms)
	}
	if *maxPayload < 1 || *maxPayload > 3<<20 {
		return fmt.Errorf("--max-payload-bytes %d: must be between 1 and %d", *maxPayload, 3<<20)
	}
	limits, err := etcdLimits.Limits()
	if err != nil {
		return err
	}
	log, err := app.NewLogger(*logLevel)
	if err != nil {
		return err
	}
	if err := app.ServePprof(*pprofAddr, envPrefix, log); err != nil {
		return err
	}

	// Listen before anything slow (the embedded etcd's start, the etcd
	// version check), so an address in use is reported at once.
	lis, err := app.Listen(*grpcAddr, envPrefix, "grpc-addr")
	if err != nil {
		return err
	}
	defer lis.Close()
	var mlis net.Listener
	if *metricsAddr != "" {
		if mlis, err = app.Listen(*metricsAddr, envPrefix, "metrics-addr"); err != nil {
			return err
		}
		defer mlis.Close()
	}

	var hlis net.Listener
	if *httpAddr != "" {
		if hlis, err = app.Listen(*httpAddr, envPrefix, "http-addr"); err != nil {
			return err
		}
		defer hlis.Close()
	} else if *corsOrigins != "" {
		return errors.New("--http-cors-origins needs --http-addr")
	} else if *consoleOn {
		return errors.New("--console needs --http-addr")
	}

	var eps []string
	var embedded *etcdembed.Server
	if strings.TrimSpace(*endpoints) == "" {
		embedded, err = etcdembed.Start(etcdembed.Config{Dir: *dataDir, ClientAddr: *embeddedAddr, PeerAddr: *embeddedPeer,
			MaxRequestBytes: uint(limits.MaxRequestBytes), MaxTxnOps: uint(limits.MaxTxnOps)})
		if err != nil {
			return app.ListenErrorOf(err, envPrefix, map[string]string{"embedded-etcd-addr": *embeddedAddr, "embedded-etcd-peer-addr": *embeddedPeer})
		}
		defer embedded.Close()
		log.Info("embedded etcd started", "endpoint", embedded.Endpoint, "data_dir", embedded.Dir)
		eps = []string{embedded.Endpoint}
	} else {
		eps = strings.Split(*endpoints, ",")
	}
	reg := app.NewRegistry()
	etcdCfg := app.EtcdConfig(eps, app.EtcdLogger(), app.EtcdRequestMetrics(reg))
	app.ApplyTxnLimits(&etcdCfg, limits)
	if err := etcdTLS.Apply(&etcdCfg); err != nil {
		return err
	}
	cli, err := clientv3.New(etcdCfg)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	if err := app.CheckEtcdVersion(context.Background(), cli, *skipVersionCheck, app.EtcdVersionCheckWait, log); err != nil {
		return err
	}

	token, err := app.ReadToken(*tokenFile)
	if err != nil {
		return err
	}
	gatewayToken, err := app.ReadToken(*gatewayTokenFile)
	if err != nil {
		return err
	}
	opts := service.Options{BatchCommitters: *committers, Registry: reg, MaxRoomsPerSocket: *maxRooms, MaxPayloadBytes: *maxPayload,
		EtcdLimits: limits, Watch: service.WatchOptions{ProgressInterval: *watchProgress, BufferEvents: *watchBuffer, MaxStreams: *maxWatches, StallTimeout: *watchStall}}
	opts.GatewayDialOptions = append(opts.GatewayDialOptions, inflight.DialOptions()...)
	if gatewayToken != "" {
		opts.GatewayDialOptions = append(opts.GatewayDialOptions, grpc.WithPerRPCCredentials(app.BearerToken(gatewayToken)))
	}
	gwCreds, err := app.ClientTLS(*gwCA, *gwCert, *gwKey, *gwServerName)
	if err != nil {
		return err
	}
	if gwCreds != nil {
		opts.GatewayDialOptions = append(opts.GatewayDialOptions, grpc.WithTransportCredentials(gwCreds))
	}
	if *committers == 0 {
		opts.BatchCommitters = -1
	}
	svc := service.NewWithOptions(cli, *prefix, log, opts)
	defer svc.Close()
	grpcMetrics := app.GRPCServerMetrics(reg)
	budgetOpts, budget := inflight.ServerOptionsAndBudget(reg, "membership", *callTimeout, token)
	serverOpts, err := serverTLS.Append(append(app.ServerOptions(log, *callTimeout, token, grpcMetrics), budgetOpts...))
	if err != nil {
		return err
	}
	srv := grpc.NewServer(serverOpts...)
	membershipv1.RegisterMembershipServiceServer(srv, svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	grpcMetrics.InitializeMetrics(srv)
	lc := &app.Lifecycle{Log: log, Health: hs, Ready: svc.Ready(), StopTimeout: *shutdownTimeout}
	if *metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", app.MetricsHandler(reg))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if !lc.Serving() {
				http.Error(w, "not serving", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
		lc.HTTP("metrics", &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, mlis)
		log.Info("metrics serving", "addr", mlis.Addr().String())
	}
	if hlis != nil {
		h, err := httpapi.Handler(srv, httpapi.Options{CORSOrigins: splitList(*corsOrigins), Domain: service.ErrorDomain,
			Reserve: budget.ReserveHTTP})
		if err != nil {
			return err
		}
		if *consoleOn {
			h = console.Mount(h)
			log.Info("operator console serving", "addr", hlis.Addr().String(), "path", console.Prefix)
		}
		tlsCfg, err := serverTLS.Config()
		if err != nil {
			return err
		}
		if tlsCfg != nil {
			tlsCfg.NextProtos = []string{"h2", "http/1.1"}
			hlis = tls.NewListener(hlis, tlsCfg)
		}
		// HTTP/2 over TLS, and without TLS by prior knowledge (h2c), as
		// Connect and gRPC-Web clients for servers speak it; HTTP/1.1 for
		// browsers and curl.
		var protocols http.Protocols
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
		protocols.SetUnencryptedHTTP2(true)
		lc.HTTP("HTTP API", &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, Protocols: &protocols}, hlis)
		log.Info("HTTP API serving", "addr", hlis.Addr().String())
	}
	lc.GRPC("gRPC API", srv, lis)
	// Stopped before the gRPC server (parts stop in reverse order): its
	// GracefulStop would wait for watch streams, which never end alone.
	lc.Go("watch streams", func(ctx context.Context) error {
		<-ctx.Done()
		svc.EndWatches()
		return nil
	})
	if embedded != nil {
		lc.Go("embedded etcd", func(ctx context.Context) error {
			select {
			case err := <-embedded.Err():
				return fmt.Errorf("failed: %w", err)
			case <-ctx.Done():
				return nil
			}
		})
	}
	log.Info("membership-server serving", "grpc_addr", lis.Addr().String(), "etcd", eps)
	return lc.Run(context.Background())
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
