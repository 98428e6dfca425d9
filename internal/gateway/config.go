package gateway

import (
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/socketrooms/membership/internal/store"
)

// Config configures a Gateway. Zero values take the defaults noted.
type Config struct {
	ID            string        // gateway id, [A-Za-z0-9_-]{1,64}; required
	AdvertiseAddr string        // internal gRPC address membership-servers dial; required
	Prefix        string        // etcd key prefix; store.DefaultPrefix
	LeaseTTL      time.Duration // 10s; etcd's floor is 2s; with several LeaseShards each is granted 1s more (shardTTLExtra)
	LeaseShards   int           // leases the gateway's sockets are spread over, renewed at staggered times, 1-64; 16
	// EtcdLimits are etcd's --max-txn-ops and --max-request-bytes, which
	// socket removal is sized against; zero fields: etcd's defaults.
	EtcdLimits store.TxnLimits
	Version    string
	SendQueue  int // frames queued per socket before it is dropped; 256
	// MaxSocketQueueBytes bounds the bytes of frames queued to a socket and
	// not yet written (those being written included); a frame that would
	// take a socket past it closes the socket (1013), as SendQueue does.
	// Keep it above the largest message (the membership-server's
	// --max-payload-bytes, plus the frame's envelope). 4 MiB.
	MaxSocketQueueBytes int64
	WriteTimeout        time.Duration // 10s
	PingInterval        time.Duration // 25s; a socket silent for two intervals is dropped
	EtcdTimeout         time.Duration // per etcd request made on a socket's behalf; 5s
	MaxFrameBytes       int64         // largest client frame; larger ones close the socket (1009); 1 MiB
	// ReconcileInterval is how often the gateway compares its sockets' records
	// in etcd with the sockets it holds, to remove records no socket holds
	// (removals.go); 30s.
	ReconcileInterval time.Duration
	// ResumeWindow is how long a native socket whose connection failed stays
	// resumable (resume.go): a member of its rooms, its messages logged.
	// 0: off, a dropped connection ends its socket at once, and frames carry
	// no resume_token or seq. The gateway binary's --resume-window: 2m.
	ResumeWindow time.Duration
	// ResumeBufferBytes bounds the message frames a resumable socket keeps
	// for a resume (written ones included, the most recent kept), each
	// counted with 32 bytes of bookkeeping; a detached socket whose unwritten
	// frames pass it ends TOO_FAR_BEHIND. 1 MiB.
	ResumeBufferBytes int64
	// DrainTimeout bounds a drain (drain.go): how long Drain keeps the
	// lease, the watch and the internal API up for the sockets it detached
	// to be resumed on other gateways. 0: Drain returns at once, and a stop
	// closes every socket as before. The gateway binary's --drain-timeout:
	// 25s, inside deploy/k8s's termination grace period.
	DrainTimeout time.Duration
	// RegisterWait bounds how long Run waits, at registration, for another
	// process's record of the same gateway id to go (one still draining, or
	// a crashed one whose lease has yet to expire) before it fails with
	// store.ErrGatewayTaken. Zero: DrainTimeout + the longer of LeaseTTL and
	// the drain's 15s tail (none without a drain) + 5s, the longest
	// a previous process with the same settings can hold the id.
	RegisterWait time.Duration
	// PeerDialOptions are used to dial another gateway's internal API, for
	// a resume on this gateway of a socket that gateway holds (handoff.go):
	// the credentials (TLS, the bearer token) its GatewayService asks of
	// callers. Empty: plaintext without a token.
	PeerDialOptions []grpc.DialOption
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
		// 16 leases, each granted 1 s more than the TTL and renewed every
		// third of the TTL plus 1 s, at its own slot (leasesched.go): after a
		// crash etcd revokes about 1/16 of the gateway's keys at a time, 1
		// or 2 revocations in each 500 ms pass of its lessor over those
		// 4.33 s (at 10 s), instead of all of them in one revocation that
		// holds back every other write (BENCHMARKS.md section 5). The
		// session outlives an etcd outage of two thirds of the TTL less
		// 0.5 s, as with one lease.
		c.LeaseShards = 16
	}
	if c.LeaseShards < 1 || c.LeaseShards > 64 {
		return fmt.Errorf("lease shards %d: 1 to 64", c.LeaseShards)
	}
	if c.MaxSocketQueueBytes == 0 {
		c.MaxSocketQueueBytes = defaultMaxSocketQueueBytes
	}
	if c.MaxSocketQueueBytes < 0 || c.SendQueue < 0 {
		return fmt.Errorf("socket queue bounds %d frames, %d bytes: must not be negative", c.SendQueue, c.MaxSocketQueueBytes)
	}
	if c.SendQueue == 0 {
		c.SendQueue = defaultSendQueue
	}
	if c.ResumeWindow < 0 || c.ResumeBufferBytes < 0 {
		return fmt.Errorf("resume window %v, buffer %d bytes: must not be negative", c.ResumeWindow, c.ResumeBufferBytes)
	}
	if c.DrainTimeout < 0 || c.RegisterWait < 0 {
		return fmt.Errorf("drain timeout %v, register wait %v: must not be negative", c.DrainTimeout, c.RegisterWait)
	}
	if c.RegisterWait == 0 {
		hold := c.LeaseTTL
		if c.DrainTimeout > 0 {
			hold = max(hold, drainTail)
		}
		c.RegisterWait = c.DrainTimeout + hold + registerWaitMargin
	}
	if c.ResumeBufferBytes == 0 {
		c.ResumeBufferBytes = defaultResumeBufferBytes
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = defaultPingInterval
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
		c.MaxFrameBytes = defaultMaxFrameBytes
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 10 * time.Second
	}
	if c.MaxRequestBody == 0 {
		c.MaxRequestBody = defaultMaxRequestBody
	}
	if c.MaxResponseBody == 0 {
		c.MaxResponseBody = defaultMaxResponseBody
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = defaultMaxInflight
	}
	if c.FramesPerSecond == 0 {
		c.FramesPerSecond = defaultFramesPerSecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
