package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/revwait"
)

// progressEvery is how often a waiter behind etcd asks for watch progress.
const progressEvery = 50 * time.Millisecond

var errSessionEnded = errors.New("gateway lost its lease while waiting")

// waitApplied returns once the index is applied up to rev, or fails when the
// session s ends first: its sockets are gone then, and waiting is pointless.
// Events for other gateways' keys do not reach this watch, so an idle prefix
// only moves on through progress notifications, which the wait requests.
func (g *Gateway) waitApplied(ctx context.Context, s *session, rev int64) (int64, error) {
	cur, err := g.applied.Wait(ctx, s.ctx.Done(), rev, progressEvery, g.requestProgress)
	if errors.Is(err, revwait.ErrStopped) {
		err = errSessionEnded
	}
	return cur, err
}

func (g *Gateway) requestProgress() {
	s := g.currentSession()
	if s == nil {
		return
	}
	s.mu.Lock()
	wctx := s.watchCtx
	s.mu.Unlock()
	if wctx == nil {
		return
	}
	if err := g.cli.RequestProgress(wctx); err != nil {
		g.log.Debug("watch progress request failed", "err", err)
	}
}

// watchLoop follows this gateway's memberships for the session's life,
// resuming after errors from the last applied revision.
func (g *Gateway) watchLoop(s *session) error {
	prefix := g.store.MembershipWatchPrefix(g.cfg.ID)
	next := s.watchFrom
	backoff := newBackoff(50*time.Millisecond, 2*time.Second)
	resyncFailures := 0
	for s.ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
		s.mu.Lock()
		s.watchCtx = wctx
		s.mu.Unlock()
		wch := g.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithProgressNotify())
		var err error
		next, err = g.consume(s, wch, next)
		cancel()
		if s.ctx.Err() != nil {
			break
		}
		if errors.Is(err, errResync) {
			// Sockets that cannot learn their memberships must not stay
			// connected looking healthy: after a few tries, start over.
			if resyncFailures++; resyncFailures >= 3 {
				return err
			}
		} else if err == nil {
			resyncFailures = 0
		}
		if err != nil {
			g.log.Warn("membership watch interrupted; resuming", "err", err, "revision", next)
			sleepCtx(s.ctx, backoff.next())
		} else {
			backoff.reset()
		}
	}
	return s.ctx.Err()
}

// consume applies watch responses until the channel ends; it returns the
// revision to resume from.
func (g *Gateway) consume(s *session, wch clientv3.WatchChan, next int64) (int64, error) {
	for resp := range wch {
		if resp.CompactRevision != 0 {
			rev, err := g.resync(s)
			if err != nil {
				return next, err
			}
			return rev + 1, nil
		}
		if err := resp.Err(); err != nil {
			return next, err
		}
		applied := int64(0)
		for _, ev := range resp.Events {
			if ch, ok := g.store.DecodeMembershipEvent(g.cfg.ID, ev); ok {
				g.hub.apply(ch.Socket, ch.Room, ch.Joined)
			}
			applied = ev.Kv.ModRevision
		}
		if resp.IsProgressNotify() {
			// Every event up to the header revision has been delivered.
			applied = resp.Header.Revision
		}
		if applied >= next {
			next = applied + 1
			g.applied.Advance(applied)
		}
		cur, _ := g.applied.Get()
		g.metrics.lagRevisions.Set(float64(max(0, resp.Header.Revision-cur)))
	}
	return next, fmt.Errorf("watch channel closed")
}

var errResync = errors.New("re-list after compaction failed")

// resync rebuilds the index from a listing after the watch history it needed
// was compacted away, and returns the listing's revision.
func (g *Gateway) resync(s *session) (int64, error) {
	// A large gateway lists many pages: allow far more than one request's time.
	ctx, cancel := context.WithTimeout(s.ctx, 12*g.cfg.EtcdTimeout)
	defer cancel()
	want, rev, err := g.store.GatewayMemberships(ctx, g.cfg.ID)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errResync, err)
	}
	g.hub.reconcile(want)
	g.applied.Advance(rev)
	g.log.Info("membership index rebuilt after compaction", "revision", rev)
	return rev, nil
}
