package watchfollow_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/socketrooms/membership/internal/revwait"
	"github.com/socketrooms/membership/internal/testutil"
	"github.com/socketrooms/membership/internal/watchfollow"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.EtcdLeakOptions()...) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// view is a copy of a prefix's keys kept by a Follower.
type view struct {
	mu   sync.Mutex
	keys map[string]string
}

func (v *view) list(cli *clientv3.Client, prefix string) func(context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return 0, err
		}
		keys := map[string]string{}
		for _, kv := range resp.Kvs {
			keys[string(kv.Key)] = string(kv.Value)
		}
		v.mu.Lock()
		v.keys = keys
		v.mu.Unlock()
		return resp.Header.Revision, nil
	}
}

func (v *view) apply(events []*clientv3.Event, _ int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, ev := range events {
		if ev.Type == clientv3.EventTypeDelete {
			delete(v.keys, string(ev.Kv.Key))
		} else {
			v.keys[string(ev.Kv.Key)] = string(ev.Kv.Value)
		}
	}
}

func (v *view) get(key string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.keys[key]
}

func run(t *testing.T, f *watchfollow.Follower) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A watch on a connection that stays open but carries nothing is restarted
// once a progress request goes unanswered, and the follower catches up on a
// new connection without listing again.
func TestWatchdogRestartsSilentWatch(t *testing.T) {
	e := testutil.StartEtcd(t)
	p := testutil.StartProxy(t, e.Endpoint)
	cli := testutil.NewClient(t, p.Endpoint())
	ctx := context.Background()
	if _, err := e.Client.Put(ctx, "/w/a", "1"); err != nil {
		t.Fatal(err)
	}
	v := &view{}
	applied := revwait.New()
	f := watchfollow.New(watchfollow.Config{
		Client: cli, Prefix: "/w/", List: v.list(cli, "/w/"), Apply: v.apply, Applied: applied,
		ProgressTimeout: 500 * time.Millisecond, Logger: quiet,
	})
	run(t, f)
	resp, err := e.Client.Put(ctx, "/w/b", "2")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := applied.Wait(wctx, nil, resp.Header.Revision, 50*time.Millisecond, f.RequestProgress); err != nil {
		t.Fatal(err)
	}

	p.Stall()
	resp, err = e.Client.Put(ctx, "/w/c", "3")
	if err != nil {
		t.Fatal(err)
	}
	// Within the client's keepalive (app.EtcdConfig: 10s + 3s) and a margin.
	wctx, cancel = context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	if _, err := applied.Wait(wctx, nil, resp.Header.Revision, 50*time.Millisecond, f.RequestProgress); err != nil {
		t.Fatalf("never caught up after the connection went silent: %v", err)
	}
	if got := v.get("/w/c"); got != "3" {
		t.Fatalf("/w/c = %q after catching up", got)
	}
	if n := f.WatchdogRestarts(); n < 1 {
		t.Fatalf("watchdog restarts %d, want at least 1", n)
	}
	if n := f.Listings(); n != 1 {
		t.Fatalf("%d listings, want 1", n)
	}
}

// A progress request answered in time leaves the watch alone.
func TestWatchdogSparesAnsweredWatch(t *testing.T) {
	e := testutil.StartEtcd(t)
	v := &view{}
	applied := revwait.New()
	f := watchfollow.New(watchfollow.Config{
		Client: e.Client, Prefix: "/w/", List: v.list(e.Client, "/w/"), Apply: v.apply, Applied: applied,
		ProgressTimeout: 3 * time.Second, Logger: quiet,
	})
	run(t, f)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		// Another prefix moves etcd's revision; only progress moves ours.
		resp, err := e.Client.Put(ctx, "/other", "x")
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = applied.Wait(wctx, nil, resp.Header.Revision, 50*time.Millisecond, f.RequestProgress)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := f.WatchdogRestarts(); n != 0 {
		t.Fatalf("watchdog restarted an answering watch %d times", n)
	}
}

// From skips the first listing; a watch whose next revision has been
// compacted lists (and only then), and listings that keep failing end Run
// with ErrListFailed.
func TestListOnlyAfterCompactionAndGiveUp(t *testing.T) {
	e := testutil.StartEtcd(t)
	ctx := context.Background()
	first, err := e.Client.Put(ctx, "/w/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	follower := func(v *view, applied *revwait.Waiter, fail bool, lists *int) *watchfollow.Follower {
		list := v.list(e.Client, "/w/")
		return watchfollow.New(watchfollow.Config{
			Client: e.Client, Prefix: "/w/", From: first.Header.Revision + 1, Applied: applied, Apply: v.apply,
			List: func(ctx context.Context) (int64, error) {
				*lists++ // only Run calls List
				if fail {
					return 0, errors.New("listing refused")
				}
				return list(ctx)
			},
			MaxListFailures: 3, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Logger: quiet,
		})
	}

	// From a revision still in history: no listing.
	v := &view{keys: map[string]string{"/w/a": "1"}}
	applied := revwait.New()
	applied.Advance(first.Header.Revision)
	lists := 0
	f := follower(v, applied, false, &lists)
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- f.Run(runCtx) }()
	second, err := e.Client.Put(ctx, "/w/b", "2")
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := applied.Wait(wctx, nil, second.Header.Revision, 50*time.Millisecond, f.RequestProgress); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run ended with %v, want context.Canceled", err)
	}
	if f.Listings() != 0 || v.get("/w/b") != "2" {
		t.Fatalf("listings %d, /w/b %q: want 0 and 2", f.Listings(), v.get("/w/b"))
	}

	// From a compacted revision: one listing, then the watch.
	third, err := e.Client.Put(ctx, "/w/c", "3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Compact(ctx, third.Header.Revision); err != nil {
		t.Fatal(err)
	}
	v = &view{keys: map[string]string{"/w/a": "1"}}
	applied = revwait.New()
	lists = 0
	f = follower(v, applied, false, &lists)
	runCtx, cancel = context.WithCancel(ctx)
	go func() { errc <- f.Run(runCtx) }()
	if _, err := applied.Wait(wctx, nil, third.Header.Revision, 50*time.Millisecond, f.RequestProgress); err != nil {
		t.Fatal(err)
	}
	fourth, err := e.Client.Delete(ctx, "/w/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := applied.Wait(wctx, nil, fourth.Header.Revision, 50*time.Millisecond, f.RequestProgress); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-errc
	if f.Listings() != 1 || v.get("/w/b") != "2" || v.get("/w/c") != "3" || v.get("/w/a") != "" {
		t.Fatalf("listings %d, view %v: want 1 listing, b and c", f.Listings(), v.keys)
	}

	// Listings that fail: Run gives up after MaxListFailures.
	lists = 0
	g := follower(&view{}, revwait.New(), true, &lists)
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := g.Run(rctx); !errors.Is(err, watchfollow.ErrListFailed) {
		t.Fatalf("Run ended with %v, want ErrListFailed", err)
	}
	if lists != 3 {
		t.Fatalf("%d listings tried, want 3", lists)
	}
}

// While etcd cannot be reached, the client's watch stream is reconnecting and
// takes no progress request; asking for progress then must return at once,
// so that waiters (revwait.Waiter.Wait kicks on every tick) keep to their
// own deadlines instead of waiting on the watchdog.
func TestRequestProgressDoesNotBlockWhileReconnecting(t *testing.T) {
	e := testutil.StartEtcd(t)
	p := testutil.StartProxy(t, e.Endpoint)
	cli := testutil.NewClient(t, p.Endpoint())
	v := &view{}
	applied := revwait.New()
	f := watchfollow.New(watchfollow.Config{
		Client: cli, Prefix: "/w/", List: v.list(cli, "/w/"), Apply: v.apply, Applied: applied,
		ProgressTimeout: time.Minute, Logger: quiet,
	})
	run(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := applied.Wait(ctx, nil, 1, 50*time.Millisecond, f.RequestProgress); err != nil {
		t.Fatal(err)
	}
	p.Pause()
	defer p.Resume()
	time.Sleep(500 * time.Millisecond) // the stream notices and starts reconnecting
	for range 5 {
		start := time.Now()
		f.RequestProgress()
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("RequestProgress took %v while etcd was unreachable", d)
		}
	}
}
