package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/engineio"
	"github.com/socketrooms/membership/internal/revwait"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/web"
)

// Gateway is one gateway process's sockets, lease and watch.
type Gateway struct {
	cfg      Config
	cli      *clientv3.Client
	store    *store.Store
	log      *slog.Logger
	hub      *hub
	applied  *revwait.Waiter
	upgrader websocket.Upgrader

	upstream   *url.URL // nil: socket requests answer 501
	httpClient *http.Client
	metrics    *metrics
	eio        *engineio.Server // Socket.IO clients at /socket.io/ (socketio.go)
	// sioConnecting counts Socket.IO sessions not yet in the hub (waiting
	// for their CONNECT or registering), for --max-sockets.
	sioConnecting atomic.Int64
	resumes       *resumes    // resumable native sockets (resume.go)
	reads         *readPoller // idle native sockets, parked (readpoll_linux.go)
	drainSt       drainState  // drain.go
	// handoffSlots holds one token per handoff to this gateway under way
	// (handoff.go, maxHandoffsIn).
	handoffSlots chan struct{}
	// handoffTimeout is defaultHandoffTimeout (handoff.go); tests shorten it.
	handoffTimeout time.Duration
	// handoffsOut counts handoffs away from this gateway under way
	// (handoff.go serveHandoff): a drain does not end the session under one.
	handoffsOut atomic.Int64
	// lastHandoffOut is when the last handoff away from this gateway
	// finished (UnixNano; 0: none): a drain keeps the session for late
	// Delivers a while after it (drain.go).
	lastHandoffOut atomic.Int64
	// prevRecordLease is the lease of this process's last gateway record
	// (0: none yet), which a session started after a lost one may replace
	// (store.ClaimGateway). Only Run's goroutine uses it.
	prevRecordLease clientv3.LeaseID

	mu       sync.Mutex
	sess     *session
	stopping bool           // set once Run is ending; no handler may start after
	wg       sync.WaitGroup // socket handlers, counted under mu
}

// New returns a Gateway using cli; call Run to start it.
func New(cfg Config, cli *clientv3.Client) (*Gateway, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var upstream *url.URL
	if cfg.UpstreamURL != "" {
		u, err := url.Parse(cfg.UpstreamURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("upstream URL %q: want http(s)://host[:port][/path]", cfg.UpstreamURL)
		}
		upstream = u
	}
	st := store.New(cli, cfg.Prefix)
	if err := st.SetTxnLimits(cfg.EtcdLimits); err != nil {
		return nil, fmt.Errorf("etcd limits: %w", err)
	}
	g := &Gateway{
		upstream:       upstream,
		httpClient:     &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		cfg:            cfg,
		cli:            cli,
		store:          st,
		log:            cfg.Logger.With("gateway", cfg.ID),
		hub:            newHub(),
		resumes:        newResumes(),
		handoffSlots:   make(chan struct{}, maxHandoffsIn),
		handoffTimeout: defaultHandoffTimeout,
		applied:        revwait.New(),
		upgrader: websocket.Upgrader{
			// The read buffer is the socket's own, from a pool while it
			// reads (hijacker, netConn.br); server frames are written by the
			// client's writer straight to the connection, so the write buffer
			// (taken from a pool only when used) stays unused.
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     originChecker(cfg.AllowedOrigins),
		},
	}
	if cfg.Registry == nil {
		g.cfg.Registry = prometheus.NewRegistry()
	}
	g.metrics = newMetrics(g.cfg.Registry, g)
	g.reads = newReadPoller(g)
	g.eio = g.newEngineIO()
	return g, nil
}

// Handler serves /ws (the client WebSocket), /socket.io/ (Socket.IO and
// Sails clients, socketio.go), /healthz, /metrics (unless
// Config.MetricsElsewhere), /membership.js and, when Config.DemoPage is set,
// the demo page at /.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	web.Register(mux, web.Options{DemoPage: g.cfg.DemoPage, APIAddr: g.cfg.DemoAPIAddr, GRPCurlFlags: g.cfg.DemoGRPCurlFlags})
	mux.HandleFunc("/ws", g.serveWS)
	mux.Handle(sioPath, g.eio)
	if !g.cfg.MetricsElsewhere {
		mux.Handle("/metrics", g.metricsHandler())
	}
	mux.HandleFunc("/healthz", g.serveHealthz)
	return mux
}

// MetricsHandler serves /metrics and /healthz, for a listener of their own.
func (g *Gateway) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", g.metricsHandler())
	mux.HandleFunc("/healthz", g.serveHealthz)
	return mux
}

func (g *Gateway) metricsHandler() http.Handler {
	return promhttp.HandlerFor(g.cfg.Registry, promhttp.HandlerOpts{Registry: g.cfg.Registry})
}

// serveHealthz answers 200 while the gateway holds a live lease and takes
// sockets: it is the readiness probe, and answers 503 while draining
// (drain.go) so that new clients go to other gateways.
func (g *Gateway) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	if s := g.currentSession(); s == nil || !s.alive() {
		http.Error(w, "not registered", http.StatusServiceUnavailable)
		return
	}
	if g.Draining() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Ready reports whether the gateway holds a live lease and accepts sockets
// (not draining).
func (g *Gateway) Ready() bool {
	s := g.currentSession()
	return s != nil && s.alive() && !g.Draining()
}

// Sockets is how many sockets are open.
func (g *Gateway) Sockets() int { return g.hub.count() }

// Run registers the gateway and serves sessions until ctx is done. On return
// every socket is closed and the lease revoked.
//
// Registration never overwrites another process's record of the gateway id
// (one still draining, or a crashed one whose lease has yet to expire): Run
// waits for it to go, up to Config.RegisterWait, and then returns an error
// wrapping store.ErrGatewayTaken.
func (g *Gateway) Run(ctx context.Context) error {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	var waitUntil time.Time // while another process holds the id: how long it may
	for ctx.Err() == nil {
		sess, err := g.startSession(ctx)
		var taken *store.GatewayTakenError
		if errors.As(err, &taken) {
			if waitUntil.IsZero() {
				waitUntil = time.Now().Add(g.cfg.RegisterWait)
			}
			if err := g.waitPrevious(ctx, taken, waitUntil); err != nil {
				g.shutdownIdle()
				return err
			}
			continue
		}
		if err != nil {
			g.log.Warn("cannot register gateway; retrying", "err", err)
			sleepCtx(ctx, backoff.next())
			continue
		}
		waitUntil = time.Time{}
		backoff.reset()
		err = g.serveSession(sess)
		g.endSession(sess, ctx.Err() != nil)
		if ctx.Err() == nil {
			g.metrics.sessionsLost.Inc()
			g.log.Error("session ended; sockets closed, registering again", "err", err, "leases", leasesText(sess.leases))
		}
	}
	g.shutdownIdle()
	return nil
}

// shutdownIdle ends what outlives sessions, once Run is ending.
func (g *Gateway) shutdownIdle() {
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	// Refuses new Socket.IO handshakes and closes what is left (sessions
	// still waiting for their CONNECT), then waits for their goroutines.
	g.eio.Close()
	g.wg.Wait()
	g.reads.stop()
	g.httpClient.CloseIdleConnections()
}

// waitPrevious waits for the record of another process holding the gateway
// id (taken) to go, until waitUntil; nil when it went (register again), an
// error wrapping store.ErrGatewayTaken when waitUntil passed first.
func (g *Gateway) waitPrevious(ctx context.Context, taken *store.GatewayTakenError, waitUntil time.Time) error {
	left := time.Until(waitUntil)
	if left <= 0 {
		return fmt.Errorf("%w; still registered after waiting %v for it to end: stop that process, or give this one another --gateway-id", taken, g.cfg.RegisterWait)
	}
	g.log.Warn("waiting for the previous process with this gateway id to end", "holder", taken.Error(), "wait_left", left.Round(time.Millisecond))
	wctx, cancel := context.WithDeadline(ctx, waitUntil)
	defer cancel()
	err := g.store.WaitGatewayGone(wctx, g.cli, g.cfg.ID, taken.Revision)
	switch {
	case err == nil, ctx.Err() != nil:
		return nil // register again, or Run ends
	case wctx.Err() != nil:
		return fmt.Errorf("%w; still registered after waiting %v for it to end: stop that process, or give this one another --gateway-id", taken, g.cfg.RegisterWait)
	default:
		g.log.Warn("cannot watch the previous process's record; retrying", "err", err)
		sleepCtx(wctx, time.Second)
		return nil
	}
}

// startHandler counts a socket handler unless Run is ending.
func (g *Gateway) startHandler() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping {
		return false
	}
	g.wg.Add(1)
	return true
}

// serveSession keeps the lease alive, follows memberships and removes
// closed sockets' keys until the lease or the watch fails.
func (g *Gateway) serveSession(s *session) error {
	errc := make(chan error, 4)
	go func() { errc <- g.keepAlive(s) }()
	go func() { errc <- g.watchLoop(s) }()
	go func() { errc <- g.janitor(s) }()
	go func() { errc <- g.pinger(s) }()
	err := <-errc
	s.cancel()
	for i := 0; i < 3; i++ {
		<-errc
	}
	return err
}
