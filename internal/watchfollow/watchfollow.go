// Package watchfollow keeps a view derived from one etcd key prefix current:
// the gateway's room index (gwm/{gateway}/) and a membership-server's
// broadcast target index (the whole keyspace) both follow etcd through it.
//
// A Follower lists the view at one revision (or starts from a revision the
// caller already holds), watches from the next one, and after any watch
// failure resumes from the revision it has applied plus one. Only when etcd
// has compacted away the history it needs does it list again, and the caller
// replaces or reconciles its view with that listing. A leader election, a
// member restart or a dropped connection therefore costs a new watch, not a
// new listing of the prefix.
//
// Ownership: Run is the follower's one goroutine and the only caller of List
// and Apply; the caller starts it and ends it by canceling Run's context. A
// watchdog goroutine lives for each watch attempt and ends with it, so no
// goroutine outlives Run.
//
// When etcd goes away: the watch is opened with clientv3.WithRequireLeader,
// so a member that loses its leader ends it (ErrNoLeader) and the follower
// resumes, after a backoff of MinBackoff doubling to MaxBackoff, on whichever
// member the client reaches next; until then the applied revision stays put
// and Waiter.Wait callers wait (bounded by their own contexts). A connection
// that is open but silent is caught twice over: the client's gRPC keepalive
// (app.EtcdConfig) replaces a transport whose pings go unanswered, and the
// watchdog here restarts a watch stream that leaves a progress request
// unanswered for ProgressTimeout.
package watchfollow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/revwait"
)

// ErrListFailed is returned (wrapped with the last failure) by Run when
// Config.MaxListFailures listings in a row have failed.
var ErrListFailed = errors.New("listing failed too many times in a row")

// progressRequestTimeout bounds how long RequestProgress waits for the watch
// stream to take a request; a waiter asks again at its next tick.
const progressRequestTimeout = 50 * time.Millisecond

// errStalled ends a watch whose progress request went unanswered.
var errStalled = errors.New("watch did not answer a progress request")

// errCompacted ends a watch whose next revision has been compacted away.
var errCompacted = errors.New("watch history compacted")

// Config configures a Follower. Client, Prefix, List, Apply and Applied are
// required; zero durations take the defaults noted.
type Config struct {
	Client *clientv3.Client
	// Prefix is the key prefix watched.
	Prefix string
	// From, when non-zero, is the first revision to watch: the caller's view
	// is already complete up to From-1, and Run lists only after a
	// compaction. Zero: Run lists first.
	From int64
	// List reads the caller's whole view at one revision, replaces or
	// reconciles the caller's state with it, and returns that revision. Run
	// then advances Applied to it and watches from the next revision.
	List func(ctx context.Context) (rev int64, err error)
	// Apply applies events in revision order and records that the view now
	// reflects revision rev (events is empty for a progress notification:
	// nothing changed up to rev). Run advances Applied to rev after it
	// returns, so a reader of the caller's state who saw Applied reach R sees
	// a state of revision ≥ R.
	Apply func(events []*clientv3.Event, rev int64)
	// Applied is advanced to every revision listed or applied.
	Applied *revwait.Waiter
	// OnResponse, when set, is called after each watch response with the
	// response's header revision (etcd's revision when it was sent) and the
	// applied revision, e.g. for a lag metric.
	OnResponse func(header, applied int64)
	// MaxListFailures ends Run with ErrListFailed after this many failed
	// listings in a row; 0: retry forever.
	MaxListFailures int
	// ProgressTimeout bounds how long a progress request may go without any
	// watch response before the watch is restarted from the applied revision
	// plus one; 5s. It must exceed etcd's time to answer a progress request
	// under load; a restart costs a new watch, not a listing.
	ProgressTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before resuming after a
	// failure; 50ms and 2s.
	MinBackoff, MaxBackoff time.Duration
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Follower follows one prefix; see the package comment.
type Follower struct {
	cfg Config

	mu       sync.Mutex
	wctx     context.Context // the live watch's context; nil between watches
	asked    time.Time       // when the oldest unanswered progress request was sent; zero: none
	lists    atomic.Int64
	restarts atomic.Int64
}

// New returns a Follower; call Run to start it.
func New(cfg Config) *Follower {
	if cfg.ProgressTimeout <= 0 {
		cfg.ProgressTimeout = 5 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, 2*time.Second)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Follower{cfg: cfg}
}

// Listings is how many listings have succeeded: one at start (unless
// Config.From was set), then one per compaction that outran the watch.
func (f *Follower) Listings() int64 { return f.lists.Load() }

// WatchdogRestarts is how many watches the watchdog has restarted.
func (f *Follower) WatchdogRestarts() int64 { return f.restarts.Load() }

// Run lists and watches until ctx ends, returning ctx's error, or until
// Config.MaxListFailures listings in a row fail (ErrListFailed).
func (f *Follower) Run(ctx context.Context) error {
	log := f.cfg.Logger
	next := f.cfg.From
	delay := f.cfg.MinBackoff
	failures := 0
	for ctx.Err() == nil {
		if next == 0 {
			rev, err := f.cfg.List(ctx)
			if ctx.Err() != nil {
				break
			}
			if err != nil {
				if failures++; f.cfg.MaxListFailures > 0 && failures >= f.cfg.MaxListFailures {
					return fmt.Errorf("%w: %w", ErrListFailed, err)
				}
				log.Warn("watch follower: listing failed; retrying", "prefix", f.cfg.Prefix, "err", err)
				delay = f.sleep(ctx, delay)
				continue
			}
			failures = 0
			f.lists.Add(1)
			f.cfg.Applied.Advance(rev)
			next = rev + 1
		}
		resumeFrom, progressed, err := f.watch(ctx, next)
		next = resumeFrom
		if ctx.Err() != nil {
			break
		}
		if progressed {
			delay = f.cfg.MinBackoff
		}
		if errors.Is(err, errCompacted) {
			log.Info("watch follower: history compacted; listing again", "prefix", f.cfg.Prefix, "revision", next)
			next = 0
			continue
		}
		log.Warn("watch follower: watch interrupted; resuming", "prefix", f.cfg.Prefix, "revision", next, "err", err)
		delay = f.sleep(ctx, delay)
	}
	return ctx.Err()
}

// sleep waits d (or until ctx ends) and returns the next backoff.
func (f *Follower) sleep(ctx context.Context, d time.Duration) time.Duration {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return min(2*d, f.cfg.MaxBackoff)
}

// watch follows the prefix from revision next until the watch fails, and
// returns the revision to resume from and whether anything was applied.
func (f *Follower) watch(ctx context.Context, next int64) (int64, bool, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	f.mu.Lock()
	f.wctx, f.asked = wctx, time.Time{}
	f.mu.Unlock()
	var stalled atomic.Bool
	dogDone := make(chan struct{})
	go func() { defer close(dogDone); f.watchdog(wctx, cancel, &stalled) }()
	defer func() {
		cancel()
		<-dogDone
		f.mu.Lock()
		f.wctx = nil
		f.mu.Unlock()
	}()

	progressed := false
	wch := f.cfg.Client.Watch(wctx, f.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(next),
		clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	for resp := range wch {
		f.answered()
		if resp.CompactRevision != 0 {
			return next, progressed, errCompacted
		}
		if err := resp.Err(); err != nil {
			return next, progressed, err
		}
		if resp.Created {
			continue // the header is etcd's revision, not what was delivered
		}
		rev := int64(0)
		if n := len(resp.Events); n > 0 {
			rev = resp.Events[n-1].Kv.ModRevision
		} else if resp.IsProgressNotify() {
			// Every event up to the header revision has been delivered.
			rev = resp.Header.Revision
		}
		if rev >= next {
			f.cfg.Apply(resp.Events, rev)
			f.cfg.Applied.Advance(rev)
			next, progressed = rev+1, true
		}
		if f.cfg.OnResponse != nil {
			applied, _ := f.cfg.Applied.Get()
			f.cfg.OnResponse(resp.Header.Revision, applied)
		}
	}
	if stalled.Load() {
		return next, progressed, errStalled
	}
	return next, progressed, errors.New("watch channel closed")
}

// watchdog cancels the watch of wctx once a progress request has gone
// unanswered (no watch response of any kind) for ProgressTimeout.
func (f *Follower) watchdog(wctx context.Context, cancel context.CancelFunc, stalled *atomic.Bool) {
	t := time.NewTicker(max(f.cfg.ProgressTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-wctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		asked := f.asked
		f.mu.Unlock()
		if !asked.IsZero() && time.Since(asked) > f.cfg.ProgressTimeout {
			f.restarts.Add(1)
			stalled.Store(true)
			f.cfg.Logger.Warn("watch follower: progress request unanswered; restarting the watch",
				"prefix", f.cfg.Prefix, "waited", time.Since(asked).Round(time.Millisecond))
			cancel()
			return
		}
	}
}

// answered records that the watch responded.
func (f *Follower) answered() {
	f.mu.Lock()
	f.asked = time.Time{}
	f.mu.Unlock()
}

// RequestProgress asks etcd for a progress notification on the live watch,
// so that a waiter behind etcd's revision sees the applied revision move on
// while the prefix is idle. It suits revwait.Waiter.Wait's kick. Without a
// live watch it does nothing; Run is resuming one then.
func (f *Follower) RequestProgress() {
	f.mu.Lock()
	wctx := f.wctx
	if wctx != nil && f.asked.IsZero() {
		f.asked = time.Now()
	}
	f.mu.Unlock()
	if wctx == nil {
		return
	}
	// clientv3 hands the request to the watch stream of wctx's metadata and
	// blocks until that stream takes it, which it does not while it is
	// reconnecting: a bound keeps callers (revwait.Waiter.Wait's kick) within
	// their own deadlines. The context derived from wctx names the same stream.
	rctx, cancel := context.WithTimeout(wctx, progressRequestTimeout)
	defer cancel()
	if err := f.cfg.Client.RequestProgress(rctx); err != nil && wctx.Err() == nil {
		f.cfg.Logger.Debug("watch follower: progress request failed", "prefix", f.cfg.Prefix, "err", err)
	}
}
