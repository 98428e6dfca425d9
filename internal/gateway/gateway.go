// Package gateway holds client WebSockets and applies their room memberships
// from etcd.
//
// Shape:
//   - A session is a set of etcd leases (Config.LeaseShards, usually one)
//     with everything on them: the gateway record on the first, each socket
//     with its memberships on one of them (socket ids name their lease). Run
//     owns the session loop: grant, register, watch and keep alive until a
//     lease cannot be proven alive, then close every socket (code 1012) and
//     start over with new leases. Sockets never outlive the session whose
//     lease they live on. Several leases split what etcd deletes when a
//     crashed gateway's leases expire into several smaller transactions.
//   - Each socket has a handler goroutine (reads; owned by the HTTP server and
//     counted in Gateway.wg) and a writer goroutine (owned by the handler)
//     that drains a bounded queue.
//   - One watch goroutine per session (a watchfollow.Follower's Run) follows
//     gwm/{gateway}/ from the registration revision and is the only writer of
//     the room index (hub). It records the revision it has applied; Deliver
//     and WaitApplied wait for that revision to reach the caller's, asking
//     etcd for watch progress so an idle prefix does not stall them. A failed
//     watch resumes from the applied revision; only after a compaction does it
//     re-list the prefix at a revision, apply the difference and resume after
//     it.
//   - Deliver queues frames without blocking; the per-socket writer does the
//     I/O.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/revwait"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/watchfollow"
	"github.com/socketrooms/membership/web"
)

// Config configures a Gateway. Zero values take the defaults noted.
type Config struct {
	ID            string        // gateway id, [A-Za-z0-9_-]{1,64}; required
	AdvertiseAddr string        // internal gRPC address membership-servers dial; required
	Prefix        string        // etcd key prefix; store.DefaultPrefix
	LeaseTTL      time.Duration // 10s; etcd's floor is 2s
	LeaseShards   int           // leases the gateway's sockets are spread over; 1
	// EtcdLimits are etcd's --max-txn-ops and --max-request-bytes, which
	// socket removal is sized against; zero fields: etcd's defaults.
	EtcdLimits    store.TxnLimits
	Version       string
	SendQueue     int           // frames queued per socket before it is dropped; 256
	WriteTimeout  time.Duration // 10s
	PingInterval  time.Duration // 25s; a socket silent for two intervals is dropped
	EtcdTimeout   time.Duration // per etcd request made on a socket's behalf; 5s
	MaxFrameBytes int64         // largest client frame; larger ones close the socket (1009); 1 MiB
	// ReconcileInterval is how often the gateway compares its sockets' records
	// in etcd with the sockets it holds, to remove records no socket holds
	// (removals.go); 30s.
	ReconcileInterval time.Duration
	// Socket requests: forwarded to UpstreamURL ("" answers 501).
	UpstreamURL     string
	UpstreamTimeout time.Duration // 10s
	MaxRequestBody  int64         // larger bodies are answered 413; 64 KiB
	MaxResponseBody int64         // larger answers become 502; 1 MiB
	MaxInflight     int           // requests in flight per socket, past which 429; 16
	MaxSockets      int           // sockets this gateway holds at most; more are refused 503 before upgrade; 0: no limit
	FramesPerSecond float64       // client frames a socket may send per second (burst: 2 s worth); past it, requests get 429 and a socket far past it is closed (1008); 0: 50
	// AllowedOrigins lists the browser origins (scheme://host[:port]) that may
	// open sockets; "*" allows any. Empty: only requests without an Origin
	// header (non-browser clients) or from the gateway's own origin.
	AllowedOrigins []string
	// Authenticate, when set, checks each WebSocket handshake before the
	// upgrade and returns the user the socket is recorded under; an error
	// answers 401 and no socket is created.
	Authenticate func(*http.Request) (user string, err error)
	// Browser assets: /membership.js is always served; the demo page at /
	// only with DemoPage, its grpcurl commands naming DemoAPIAddr (the
	// membership API) with DemoGRPCurlFlags (e.g. "-plaintext") as given.
	DemoPage         bool
	DemoAPIAddr      string
	DemoGRPCurlFlags string
	// Registry receives the gateway's metrics and is served at /metrics;
	// nil: a registry of its own.
	Registry *prometheus.Registry
	// MetricsElsewhere keeps /metrics out of Handler: the caller serves
	// MetricsHandler on a listener of its own, away from the public port.
	MetricsElsewhere bool
	Logger           *slog.Logger
}

func (c *Config) setDefaults() error {
	if err := store.ValidateGatewayID(c.ID); err != nil {
		return fmt.Errorf("gateway id %q: %w", c.ID, err)
	}
	if c.AdvertiseAddr == "" {
		return errors.New("gateway: advertise address is required")
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.LeaseTTL < 2*time.Second {
		return fmt.Errorf("lease TTL %v is below etcd's floor of 2s", c.LeaseTTL)
	}
	if c.LeaseShards == 0 {
		c.LeaseShards = 1
	}
	if c.LeaseShards < 1 || c.LeaseShards > 64 {
		return fmt.Errorf("lease shards %d: 1 to 64", c.LeaseShards)
	}
	if c.SendQueue == 0 {
		c.SendQueue = 256
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.EtcdTimeout == 0 {
		c.EtcdTimeout = 5 * time.Second
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 30 * time.Second
	}
	if c.ReconcileInterval < 0 {
		return fmt.Errorf("reconcile interval %v is negative", c.ReconcileInterval)
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = 1 << 20
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 10 * time.Second
	}
	if c.MaxRequestBody == 0 {
		c.MaxRequestBody = 64 << 10
	}
	if c.MaxResponseBody == 0 {
		c.MaxResponseBody = 1 << 20
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = 16
	}
	if c.FramesPerSecond == 0 {
		c.FramesPerSecond = 50
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

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
		upstream:   upstream,
		httpClient: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
		cfg:        cfg,
		cli:        cli,
		store:      st,
		log:        cfg.Logger.With("gateway", cfg.ID),
		hub:        newHub(),
		applied:    revwait.New(),
		upgrader: websocket.Upgrader{
			// Client frames are small; server frames are written by the
			// client's writer straight to the connection, so the write buffer
			// (taken from a pool only when used) stays unused.
			ReadBufferSize:  512,
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     originChecker(cfg.AllowedOrigins),
		},
	}
	if cfg.Registry == nil {
		g.cfg.Registry = prometheus.NewRegistry()
	}
	g.metrics = newMetrics(g.cfg.Registry, g)
	return g, nil
}

// originChecker accepts the configured browser origins. A refused origin
// gets HTTP 403 before the upgrade, so it never has a socket.
func originChecker(allowed []string) func(*http.Request) bool {
	set := map[string]bool{}
	for _, o := range allowed {
		set[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		switch {
		case origin == "":
			return true // not a browser: nothing to protect against
		case set["*"] || set[strings.ToLower(origin)]:
			return true
		}
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
}

// Handler serves /ws (the client WebSocket), /healthz, /metrics (unless
// Config.MetricsElsewhere), /membership.js and, when Config.DemoPage is set,
// the demo page at /.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	web.Register(mux, web.Options{DemoPage: g.cfg.DemoPage, APIAddr: g.cfg.DemoAPIAddr, GRPCurlFlags: g.cfg.DemoGRPCurlFlags})
	mux.HandleFunc("/ws", g.serveWS)
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

// serveHealthz answers 200 while the gateway holds a live lease.
func (g *Gateway) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	if s := g.currentSession(); s == nil || !s.alive() {
		http.Error(w, "not registered", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// Ready reports whether the gateway holds a live lease and accepts sockets.
func (g *Gateway) Ready() bool {
	s := g.currentSession()
	return s != nil && s.alive()
}

// Sockets is how many sockets are open.
func (g *Gateway) Sockets() int { return g.hub.count() }

// session is one set of leases and what hangs on them.
type session struct {
	leases []clientv3.LeaseID // leases[0] holds the gateway record
	next   atomic.Uint64      // round-robin over leases for new sockets
	ctx    context.Context    // canceled when the session ends
	cancel context.CancelFunc

	// until[i] is the instant (see monoNow) before which leases[i] is
	// provably alive: the send time of its last successful renewal plus the
	// TTL granted, less a margin. aliveUntil is the earliest of them.
	until      []atomic.Int64
	aliveUntil atomic.Int64

	mu        sync.Mutex
	follower  *watchfollow.Follower // the session's watch, for progress requests
	watchFrom int64

	// removals holds the session's closed sockets whose keys may still be in
	// etcd; the session's janitor removes them (removals.go).
	removals removalSet
}

func newSession(parent context.Context, leases []clientv3.LeaseID) *session {
	ctx, cancel := context.WithCancel(parent)
	return &session{leases: leases, until: make([]atomic.Int64, len(leases)), ctx: ctx, cancel: cancel}
}

// alive reports whether every lease is provably alive now.
func (s *session) alive() bool {
	return s.ctx.Err() == nil && monoNow() < s.aliveUntil.Load()
}

// renewed records a renewal of leases[i] whose request left at sent (a
// monoNow value): etcd renewed the lease after that, so it lives at least ttl
// past it. Only the keep-alive loop calls it.
func (s *session) renewed(i int, sent int64, ttl time.Duration) {
	if until := sent + int64(ttl-leaseMargin); until > s.until[i].Load() {
		s.until[i].Store(until)
	}
	earliest := s.until[0].Load()
	for j := range s.until {
		earliest = min(earliest, s.until[j].Load())
	}
	s.aliveUntil.Store(earliest)
}

// leaseForSocket picks the lease a new socket lives on.
func (s *session) leaseForSocket() clientv3.LeaseID {
	return s.leases[s.next.Add(1)%uint64(len(s.leases))]
}

// holds reports whether lease is one of the session's.
func (s *session) holds(lease clientv3.LeaseID) bool {
	for _, l := range s.leases {
		if l == lease {
			return true
		}
	}
	return false
}

func leasesText(leases []clientv3.LeaseID) string {
	parts := make([]string, len(leases))
	for i, l := range leases {
		parts[i] = fmt.Sprintf("%x", int64(l))
	}
	return strings.Join(parts, ",")
}

func (g *Gateway) currentSession() *session {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sess
}

func (g *Gateway) setSession(s *session) {
	g.mu.Lock()
	g.sess = s
	g.mu.Unlock()
}

var errLeaseLost = errors.New("lease can no longer be proven alive")

// Run registers the gateway and serves sessions until ctx is done. On return
// every socket is closed and the lease revoked.
func (g *Gateway) Run(ctx context.Context) error {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		sess, err := g.startSession(ctx)
		if err != nil {
			g.log.Warn("cannot register gateway; retrying", "err", err)
			sleepCtx(ctx, backoff.next())
			continue
		}
		backoff.reset()
		err = g.serveSession(sess)
		g.endSession(sess, ctx.Err() != nil)
		if ctx.Err() == nil {
			g.metrics.sessionsLost.Inc()
			g.log.Error("session ended; sockets closed, registering again", "err", err, "leases", leasesText(sess.leases))
		}
	}
	g.mu.Lock()
	g.stopping = true
	g.mu.Unlock()
	g.wg.Wait()
	g.httpClient.CloseIdleConnections()
	return nil
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

func (g *Gateway) startSession(parent context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(parent, g.cfg.EtcdTimeout)
	defer cancel()
	leases := make([]clientv3.LeaseID, g.cfg.LeaseShards)
	sent := make([]int64, len(leases))
	ttls := make([]time.Duration, len(leases))
	for i := range leases {
		sent[i] = monoNow()
		lease, err := g.cli.Grant(ctx, int64(g.cfg.LeaseTTL/time.Second))
		if err != nil {
			g.revoke(leases[:i]...)
			return nil, fmt.Errorf("grant lease: %w", err)
		}
		leases[i], ttls[i] = lease.ID, time.Duration(lease.TTL)*time.Second
	}
	s := newSession(parent, leases)
	for i := range leases {
		s.renewed(i, sent[i], ttls[i])
	}
	rev, err := g.store.RegisterGateway(ctx, store.GatewayRecord{
		ID:        g.cfg.ID,
		GRPCAddr:  g.cfg.AdvertiseAddr,
		Version:   g.cfg.Version,
		StartedAt: time.Now().UTC(),
		Lease:     leases[0],
	})
	if err != nil {
		s.cancel()
		g.revoke(leases...)
		return nil, err
	}
	// Nothing of these leases existed before rev: the index is complete up to it.
	g.applied.Advance(rev)
	g.setSession(s)
	g.hub.setOpen(true)
	g.log.Info("gateway registered", "leases", leasesText(leases), "revision", rev, "advertise", g.cfg.AdvertiseAddr)
	s.watchFrom = rev + 1
	return s, nil
}

// leaseMargin is subtracted from every lease deadline the gateway computes, for
// the request's own transit and clock rate differences.
const leaseMargin = 500 * time.Millisecond

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

// pinger pings every socket once per PingInterval, so that dead peers are
// noticed (their read deadline passes) without a timer per socket.
func (g *Gateway) pinger(s *session) error {
	t := time.NewTicker(g.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-t.C:
			for _, c := range g.hub.all() {
				c.control(ctrlPing)
			}
		}
	}
}

// keepAlive renews the lease every third of its TTL and fences the session:
// each renewal proves the lease alive for one TTL from the moment its request
// was sent, and once that proof runs out the session ends, whatever etcd says
// or fails to say. Renewals are single requests (not the client's keep-alive
// stream) so that the send time of each is known: a reply that sat in a buffer
// while the process was frozen proves nothing beyond its send time plus TTL.
func (g *Gateway) keepAlive(s *session) error {
	interval := g.cfg.LeaseTTL / 3
	for {
		start := monoNow()
		failed := false
		for i, lease := range s.leases {
			sent := monoNow()
			timeout := min(interval, time.Duration(s.aliveUntil.Load()-sent))
			if timeout <= 0 {
				return errLeaseLost
			}
			ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(s.ctx), timeout)
			resp, err := g.cli.KeepAliveOnce(ctx, lease)
			cancel()
			switch {
			case s.ctx.Err() != nil:
				return s.ctx.Err()
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				return errLeaseLost
			case err != nil:
				failed = true
				g.metrics.renewFailures.Inc()
				g.log.Warn("lease renewal failed", "err", err, "lease", fmt.Sprintf("%x", int64(lease)))
			case resp.TTL <= 0:
				return errLeaseLost
			default:
				s.renewed(i, sent, time.Duration(resp.TTL)*time.Second)
			}
		}
		if !s.alive() {
			return errLeaseLost
		}
		next := interval - time.Duration(monoNow()-start)
		if failed {
			next = min(next, 100*time.Millisecond) // retry soon; the proof is running out
		}
		if next > 0 {
			sleepCtx(s.ctx, next)
		}
	}
}

// endSession closes every socket of s and revokes its leases.
func (g *Gateway) endSession(s *session, shutdown bool) {
	s.cancel()
	g.setSession(nil)
	if shutdown {
		g.hub.closeAll(closeGoingAway, "gateway shutting down")
	} else {
		g.hub.closeAll(closeServiceRestart, "gateway lost its registration; reconnect")
	}
	g.revoke(s.leases...)
}

func (g *Gateway) revoke(leases ...clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, lease := range leases {
		if _, err := g.cli.Revoke(ctx, lease); err != nil {
			g.log.Debug("revoke lease", "err", err)
		}
	}
}

type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(2*b.cur, b.max)
	return d
}

func (b *backoff) reset() { b.cur = b.min }

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
