package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/revwait"
	"github.com/socketrooms/membership/internal/watchfollow"
)

// progressEvery is how often a waiter behind etcd asks for watch progress.
const progressEvery = 50 * time.Millisecond

// maxResyncFailures is how many re-listings after a compaction may fail in a
// row before the session ends: sockets that cannot learn their memberships
// must not stay connected looking healthy.
const maxResyncFailures = 3

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
	f := s.follower
	s.mu.Unlock()
	if f != nil {
		f.RequestProgress()
	}
}

// watchLoop follows this gateway's memberships for the session's life from
// the registration revision, resuming after errors from the last applied
// revision and re-listing only after a compaction. It ends the session when
// maxResyncFailures re-listings in a row fail.
func (g *Gateway) watchLoop(s *session) error {
	f := watchfollow.New(watchfollow.Config{
		Client: g.cli,
		Prefix: g.store.MembershipWatchPrefix(g.cfg.ID),
		// Nothing of the session's leases existed before registration: the
		// (empty) index is complete up to watchFrom-1.
		From: s.watchFrom,
		List: func(ctx context.Context) (int64, error) { return g.resync(ctx, s) },
		Apply: func(events []*clientv3.Event, _ int64) {
			for _, ev := range events {
				if ch, ok := g.store.DecodeMembershipEvent(g.cfg.ID, ev); ok {
					g.hub.apply(ch.Socket, ch.Room, ch.Joined, ch.Revision)
				} else if d, ok := g.store.DecodeDisconnectEvent(g.cfg.ID, ev); ok {
					g.applyDisconnect(s, d)
				}
			}
		},
		Applied: g.applied,
		OnResponse: func(header, applied int64) {
			g.metrics.lagRevisions.Set(float64(max(0, header-applied)))
		},
		MaxListFailures: maxResyncFailures,
		Logger:          g.log.With("view", "room index"),
	})
	s.mu.Lock()
	s.follower = f
	s.mu.Unlock()
	return f.Run(s.ctx)
}

// resync rebuilds the index from a listing after the watch history it needed
// was compacted away, and returns the listing's revision.
func (g *Gateway) resync(ctx context.Context, s *session) (int64, error) {
	// A large gateway lists many pages: allow far more than one request's time.
	ctx, cancel := context.WithTimeout(ctx, 12*g.cfg.EtcdTimeout)
	defer cancel()
	want, rev, err := g.store.GatewayMemberships(ctx, g.cfg.ID)
	if err != nil {
		return 0, fmt.Errorf("re-list after compaction: %w", err)
	}
	g.hub.reconcile(want)
	// Notices whose events the compaction took are acted on now.
	notices, err := g.store.GatewayDisconnects(ctx, g.cfg.ID, rev)
	if err != nil {
		return 0, fmt.Errorf("re-list after compaction: %w", err)
	}
	for _, d := range notices {
		g.applyDisconnect(s, d)
	}
	g.log.Info("membership index rebuilt after compaction", "revision", rev, "leases", leasesText(s.leases))
	return rev, nil
}
