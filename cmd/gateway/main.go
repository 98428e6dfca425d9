// Command gateway holds client WebSockets, registers them in etcd under its
// lease, applies their room memberships from etcd and delivers messages that
// membership-servers send it over its internal gRPC API.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/wsauth"
)

const envPrefix = "GATEWAY_"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	wsAddr := fs.String("ws-addr", "127.0.0.1:8080", "address serving /ws (WebSocket), /healthz, /metrics, /membership.js and the demo page")
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:50061", "address serving the internal delivery API")
	advertise := fs.String("advertise-addr", "", "host:port membership-servers dial for the internal API; a bare host or IP (IPv6 too, without brackets) takes the --grpc-addr listener's port (default: the listener's address)")
	endpoints := fs.String("etcd-endpoints", "127.0.0.1:2379", "comma-separated etcd client URLs")
	prefix := fs.String("etcd-prefix", store.DefaultPrefix, "prefix of every etcd key")
	leaseTTL := fs.Duration("lease-ttl", 10*time.Second, "TTL of the gateway's etcd leases, in whole seconds (at least 2s); its sockets vanish this long after a crash, up to 1.5s more with several --lease-shards: each shard is granted 1s more and renewed 1s less often, which spreads a crash's revocations wider without shortening the etcd outage a gateway outlives")
	tokenFile := fs.String("auth-token-file", "", "file holding the bearer token membership-servers and other gateways must present to the internal API, and that this gateway presents to others (empty: none)")
	etcdTLS := app.AddEtcdTLSFlags(fs)
	skipVersionCheck := app.AddEtcdVersionCheckFlag(fs)
	etcdLimits := app.AddEtcdTxnLimitFlags(fs)
	inflight := app.AddInflightPayloadFlag(fs, "Deliver calls (from membership-servers)")
	serverTLS := app.AddServerTLSFlags(fs, "internal API")
	peerCA := fs.String("gateway-tls-ca-file", "", "CA bundle to verify other gateways' internal API certificates, dialled when a socket one of them holds resumes here; empty: plaintext to gateways")
	peerCert := fs.String("gateway-tls-cert-file", "", "client certificate presented to other gateways (mutual TLS)")
	peerKey := fs.String("gateway-tls-key-file", "", "key of --gateway-tls-cert-file")
	peerServerName := fs.String("gateway-tls-server-name", "", "name to verify in other gateways' certificates instead of their advertised host")
	maxSockets := fs.Int("max-sockets", 0, "sockets this gateway holds at most; more are refused with HTTP 503 (0: no limit)")
	framesPerSecond := fs.Float64("frames-per-second", 50, "client frames a socket may send per second (bursts of 2 s); past it requests get 429, far past it the socket is closed (1008)")
	origins := fs.String("allowed-origins", "", "comma-separated browser origins (scheme://host[:port]) allowed to open sockets, or *; empty: same-origin and non-browser clients only")
	jwtSecretFile := fs.String("jwt-hmac-secret-file", "", "file holding the HMAC secret (at least 32 bytes) that signs client tokens (HS256/384/512); sockets then need a token")
	jwtKeyFile := fs.String("jwt-public-key-file", "", "PEM file with the public key (RSA, ECDSA or Ed25519) or certificate that verifies client tokens; sockets then need a token")
	jwtIssuer := fs.String("jwt-issuer", "", "required iss claim of client tokens (empty: not checked)")
	jwtAudience := fs.String("jwt-audience", "", "required aud claim of client tokens (empty: not checked)")
	leaseShards := fs.Int("lease-shards", 16, "leases the gateway's sockets are spread over (1-64); with several, each is granted --lease-ttl plus 1s and renewed every third of --lease-ttl plus 1s at its own slot, so that after a crash etcd revokes them, and deletes their keys, a few at a time over that period instead of in one step that holds back every other write; the gateway outlives an etcd outage of two thirds of --lease-ttl less 0.5s whatever the number")
	gatewayID := fs.String("gateway-id", "", "unique gateway id, [A-Za-z0-9_-]{1,64} (default: host name and a random suffix)")
	sendQueue := fs.Int("send-queue", 256, "frames queued per socket before a slow socket is disconnected")
	maxSocketQueueBytes := fs.Int64("max-socket-queue-bytes", 4<<20, "bytes of frames queued per socket (those being written included) before a slow socket is disconnected (1013); keep it above the membership-server's --max-payload-bytes (0: the default)")
	resumeWindow := fs.Duration("resume-window", 2*time.Minute, "how long a native socket whose connection failed (no close frame from the client) stays resumable with its id, rooms and missed messages (/ws?resume_token=…&last_seq=N); 0: off, a dropped connection ends its socket at once")
	resumeBufferBytes := fs.Int64("resume-buffer-bytes", 1<<20, "bytes of message frames a resumable socket keeps for a resume, written ones included, each counted with 32 bytes of bookkeeping; a detached socket past it ends (TOO_FAR_BEHIND) (0: the default)")
	drainTimeout := fs.Duration("drain-timeout", 25*time.Second, "on SIGTERM or SIGINT with --resume-window, how long the gateway drains before it stops: it takes no new sockets (503, /healthz not ready), closes its native sockets with 1012 and keeps them resumable on other gateways, its lease and internal API up, until none is left or this passes; a second signal ends the drain; keep it below the termination grace period (0: no drain, sockets closed with 1001 at once)")
	upstreamURL := fs.String("upstream-url", "", "app that socket requests are forwarded to, e.g. http://127.0.0.1:3000 (empty: requests answer 501)")
	upstreamTimeout := fs.Duration("upstream-timeout", 10*time.Second, "how long a socket request may take upstream before it is answered 504")
	demoPage := fs.Bool("demo-page", false, "serve a demo page at / that shows a socket's rooms and messages and the grpcurl commands to drive it (off by default: it names the membership API address to anyone who can reach the gateway); /membership.js is served either way")
	demoAPIAddr := fs.String("demo-api-addr", "127.0.0.1:50051", "membership API address the demo page's grpcurl commands call")
	demoGRPCurlFlags := fs.String("demo-grpcurl-flags", "-plaintext", "grpcurl flags in the demo page's commands, as shell words (e.g. \"-cacert ca.pem -H 'authorization: Bearer $TOKEN'\" for an API with TLS and a token)")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics (and /healthz) on this address instead of on --ws-addr, e.g. to keep them off a public port (empty: on --ws-addr)")
	pprofAddr := fs.String("pprof-addr", "", "serve net/http/pprof on this address (empty: off)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gateway [flags]\nEach flag can also be set as %sFLAG_NAME.\n", envPrefix)
		fs.PrintDefaults()
	}
	if err := app.ParseFlags(fs, envPrefix, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
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
	id := *gatewayID
	if id == "" {
		id = defaultGatewayID()
	}
	verifier, err := wsauth.Load(*jwtSecretFile, *jwtKeyFile, *jwtIssuer, *jwtAudience)
	if err != nil {
		return err
	}
	var authenticate func(*http.Request) (string, error)
	if verifier != nil {
		authenticate = verifier.Authenticate
		if *jwtKeyFile != "" && *jwtAudience == "" {
			// An identity provider's key signs tokens for all its apps.
			log.Warn("--jwt-public-key-file without --jwt-audience: a token the key signed for any other app opens sockets here too")
		}
	}

	// Every listener opens here, before etcd is dialled, so that an address
	// in use fails the start at once; each closes when run returns.
	grpcLis, err := app.Listen(*grpcAddr, envPrefix, "grpc-addr")
	if err != nil {
		return err
	}
	defer grpcLis.Close()
	wsLis, err := app.Listen(*wsAddr, envPrefix, "ws-addr")
	if err != nil {
		return err
	}
	defer wsLis.Close()
	var metricsLis net.Listener
	if *metricsAddr != "" {
		if metricsLis, err = app.Listen(*metricsAddr, envPrefix, "metrics-addr"); err != nil {
			return err
		}
		defer metricsLis.Close()
	}
	adv, err := advertiseAddr(*advertise, grpcLis.Addr())
	if err != nil {
		return err
	}

	reg := app.NewRegistry()
	etcdCfg := app.EtcdConfig(strings.Split(*endpoints, ","), app.EtcdLogger(), app.EtcdRequestMetrics(reg))
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
	// A gateway calls another (a resume of a socket the other holds) as a
	// membership-server does: with the internal API's token, which every
	// gateway of a deployment shares, and its TLS.
	var peerDial []grpc.DialOption
	if token != "" {
		peerDial = append(peerDial, grpc.WithPerRPCCredentials(app.BearerToken(token)))
	}
	peerCreds, err := app.ClientTLS(*peerCA, *peerCert, *peerKey, *peerServerName)
	if err != nil {
		return err
	}
	if peerCreds != nil {
		peerDial = append(peerDial, grpc.WithTransportCredentials(peerCreds))
	} else {
		peerDial = append(peerDial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	gw, err := gateway.New(gateway.Config{
		ID:               id,
		AdvertiseAddr:    adv,
		Prefix:           *prefix,
		LeaseTTL:         *leaseTTL,
		LeaseShards:      *leaseShards,
		EtcdLimits:       limits,
		Version:          app.Version(),
		SendQueue:        *sendQueue,
		UpstreamURL:      *upstreamURL,
		UpstreamTimeout:  *upstreamTimeout,
		Registry:         reg,
		AllowedOrigins:   splitList(*origins),
		Authenticate:     authenticate,
		MaxSockets:       *maxSockets,
		FramesPerSecond:  *framesPerSecond,
		DemoPage:         *demoPage,
		DemoAPIAddr:      *demoAPIAddr,
		DemoGRPCurlFlags: *demoGRPCurlFlags,
		MetricsElsewhere: *metricsAddr != "",
		Logger:           log,

		MaxSocketQueueBytes: *maxSocketQueueBytes,
		ResumeWindow:        *resumeWindow,
		ResumeBufferBytes:   *resumeBufferBytes,
		DrainTimeout:        *drainTimeout,
		PeerDialOptions:     peerDial,
	}, cli)
	if err != nil {
		return err
	}

	grpcMetrics := app.GRPCServerMetrics(reg)
	serverOpts, err := serverTLS.Append(append(app.ServerOptions(log, 10*time.Second, token, grpcMetrics), inflight.ServerOptions(reg, "gateway", 10*time.Second, token)...))
	if err != nil {
		return err
	}
	gsrv := grpc.NewServer(serverOpts...)
	gw.RegisterGRPC(gsrv)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gsrv, hs)
	grpcMetrics.InitializeMetrics(gsrv)
	// A signal first drains (--drain-timeout; every part still up: the
	// internal API keeps logging messages for the detached sockets, and
	// serves their handoff to other gateways). Then the parts stop in the
	// reverse order: sessions first (every socket left closed with 1001, the
	// lease revoked) while the servers still answer, then the WebSocket
	// server, the internal API, and metrics last.
	lc := &app.Lifecycle{Log: log, Health: hs, StopTimeout: stopTimeout, Drain: gw.Drain}
	if metricsLis != nil {
		lc.HTTP("metrics", &http.Server{Handler: gw.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}, metricsLis)
		log.Info("metrics serving", "addr", metricsLis.Addr().String())
	}
	lc.GRPC("internal API", gsrv, grpcLis)
	lc.HTTP("WebSocket server", &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second}, wsLis)
	lc.Go("gateway sessions", gw.Run)
	log.Info("gateway serving", "gateway", id, "ws_addr", wsLis.Addr().String(), "grpc_addr", grpcLis.Addr().String(), "advertise", adv)
	return lc.Run(context.Background())
}

// stopTimeout bounds each step of the stop: the sessions' end, the
// WebSocket server's Shutdown, the internal API's GracefulStop. A delivery
// in flight takes at most 5s (the membership-server's
// gatewayconn.DeliverTimeout).
const stopTimeout = 5 * time.Second

func defaultGatewayID() string {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, r := range host {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			b.WriteRune(r)
		}
	}
	name := b.String()
	if len(name) > 50 {
		name = name[:50]
	}
	if name == "" {
		name = "gw"
	}
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	return name + "-" + hex.EncodeToString(suffix[:])
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// advertiseAddr is the internal API's address as published in etcd: flag as
// host:port, or a bare host or IP with the listener's port (so that a pod's
// IPv6 address, which has colons of its own, can be passed as it is), or the
// listener's address when flag is empty.
func advertiseAddr(flag string, lis net.Addr) (string, error) {
	if flag == "" {
		return lis.String(), nil
	}
	if host, port, err := net.SplitHostPort(flag); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("--advertise-addr %q: needs a host and a port", flag)
		}
		return flag, nil
	}
	if strings.Contains(flag, ":") && net.ParseIP(flag) == nil {
		return "", fmt.Errorf("--advertise-addr %q: not host:port, a host or an IP address", flag)
	}
	_, port, err := net.SplitHostPort(lis.String())
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(flag, port), nil
}
