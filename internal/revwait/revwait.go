// Package revwait tracks the etcd revision up to which a watch-fed view (the
// gateway's room index, a membership-server's broadcast target index) has
// been applied, and lets callers wait for it to reach a revision.
package revwait

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrStopped is returned by Wait when its stop channel closes first.
var ErrStopped = errors.New("stopped while waiting for a revision")

// Waiter is an applied revision that only grows. The zero value is not
// usable; call New.
type Waiter struct {
	mu  sync.Mutex
	rev int64
	ch  chan struct{} // closed and replaced on every advance
}

// New returns a Waiter at revision 0.
func New() *Waiter { return &Waiter{ch: make(chan struct{})} }

// Advance raises the applied revision to rev, waking waiters; lower values
// are ignored.
func (w *Waiter) Advance(rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if rev > w.rev {
		w.rev = rev
		close(w.ch)
		w.ch = make(chan struct{})
	}
}

// Get returns the applied revision and a channel closed when it next grows.
func (w *Waiter) Get() (int64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rev, w.ch
}

// Wait returns the applied revision once it reaches rev. While it is behind,
// kick is called at once and then every interval: a watch whose keys are
// idle only moves on through a progress notification, which kick requests.
// It fails with ctx's error, or ErrStopped when stop closes.
func (w *Waiter) Wait(ctx context.Context, stop <-chan struct{}, rev int64, every time.Duration, kick func()) (int64, error) {
	var tick *time.Ticker
	for {
		cur, ch := w.Get()
		if cur >= rev {
			if tick != nil {
				tick.Stop()
			}
			return cur, nil
		}
		if tick == nil {
			tick = time.NewTicker(every)
			defer tick.Stop()
			kick()
		}
		select {
		case <-ch:
		case <-tick.C:
			kick()
		case <-stop:
			return cur, ErrStopped
		case <-ctx.Done():
			return cur, ctx.Err()
		}
	}
}
