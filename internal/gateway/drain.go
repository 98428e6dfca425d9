package gateway

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/socketrooms/membership/internal/gatewayconn"
	"github.com/socketrooms/membership/internal/store"
)

// Draining: what a gateway does between SIGTERM and its end, so that a
// rolling restart loses no socket, room or message (docs/ARCHITECTURE.md,
// "Connection state recovery").
//
// Drain, with a resume window and Config.DrainTimeout > 0:
//   - marks the gateway record draining_since (store.MarkGatewayDraining);
//   - refuses new sockets, native and Socket.IO, with 503, and /healthz (the
//     readiness probe) answers 503, so a Service sends clients elsewhere;
//   - closes every native connection with 1012 "gateway restarting" and
//     keeps its socket detached and resumable, exactly as a connection that
//     failed (resume.go): its token stays valid, its memberships stay on the
//     lease, Deliver keeps logging its messages. Socket.IO sessions close as
//     on any stop (their clients reconnect as new sockets);
//   - keeps the session (lease, watch, janitor) and leaves the internal gRPC
//     API to the caller, which keeps serving it;
//   - returns once no socket is left (each resumed elsewhere, expired or
//     overflowed), the timeout passes or ctx ends (a second signal); then,
//     unless ctx ended, it waits for handoffs away still under way, and
//     keeps the session for lateDeliverWindow after the last one finished,
//     for the Delivers this gateway still owes the sockets it handed off.
//
// The caller then stops as without a drain: Run's end closes what is left
// and revokes the lease, so detached sockets not resumed by then end
// GATEWAY_LOST.

// lateDeliverWindow is how long a drain keeps the session after the last
// handoff away finished, for Delivers of Broadcasts resolved before it;
// drainTail is the longest a drain goes on past its timeout at the default
// handoff timeout (Drain).
const (
	lateDeliverWindow = gatewayconn.DeliverTimeout + time.Second
	drainTail         = defaultHandoffTimeout + time.Second + lateDeliverWindow
)

// drainReason is the close reason of a connection closed by a drain.
const drainReason = "gateway restarting"

// registerWaitMargin is added, for the default Config.RegisterWait, to the
// longest a previous process with the same settings holds the id:
// DrainTimeout and its tail (drainTail), or LeaseTTL after a crash. Its
// revocation and the watch that sees it take a moment past its drain, and
// its lease's expiry, after a crash, is etcd's to time (and with several
// shards its record's lease was granted shardTTLExtra more than LeaseTTL).
const registerWaitMargin = 5 * time.Second

// drainCheckInterval is how often Drain looks whether sockets are left;
// every drainSweepEvery-th look it also closes connections that attached
// after it began (a resume or a handshake under way as it started), which a
// look at every socket finds: rare, so not every time.
const (
	drainCheckInterval = 50 * time.Millisecond
	drainSweepEvery    = 20
)

// drainState is the gateway's drain, if one began. Times are UnixNano; 0:
// not yet.
type drainState struct {
	on      atomic.Bool
	started atomic.Int64
	ended   atomic.Int64
}

// Draining reports whether Drain has begun: the gateway refuses new sockets
// and is not ready.
func (g *Gateway) Draining() bool { return g.drainSt.on.Load() }

// drainSeconds is how long the drain took, or has taken so far; 0 before one.
func (g *Gateway) drainSeconds() float64 {
	start := g.drainSt.started.Load()
	if start == 0 {
		return 0
	}
	end := g.drainSt.ended.Load()
	if end == 0 {
		end = time.Now().UnixNano()
	}
	return time.Duration(end - start).Seconds()
}

// Drain drains the gateway, as the comment above says, and returns when it
// is over: no socket left, Config.DrainTimeout passed, or ctx ended. Without
// a resume window or with DrainTimeout 0 it returns at once and does
// nothing. Call it once, before canceling Run's context.
func (g *Gateway) Drain(ctx context.Context) {
	if !g.resumeOn() || g.cfg.DrainTimeout <= 0 || g.drainSt.on.Swap(true) {
		return
	}
	start := time.Now()
	g.drainSt.started.Store(start.UnixNano())
	defer func() { g.drainSt.ended.Store(time.Now().UnixNano()) }()
	timeout := time.NewTimer(g.cfg.DrainTimeout)
	defer timeout.Stop()
	if s := g.currentSession(); s != nil {
		mctx, cancel := context.WithTimeout(ctx, g.cfg.EtcdTimeout)
		_, err := g.store.MarkGatewayDraining(mctx, s.rec, start.UTC())
		cancel()
		if err != nil && !errors.Is(err, store.ErrGatewayNotFound) {
			// The drain goes on: only readers of the record miss it.
			g.log.Warn("cannot mark the gateway record draining", "err", err)
		}
	}
	closed := g.closeForDrain()
	g.log.Info("draining: sockets closed with 1012 and kept resumable elsewhere", "sockets", closed, "drain_timeout", g.cfg.DrainTimeout)
	tick := time.NewTicker(drainCheckInterval)
	defer tick.Stop()
	outcome := "no socket left"
	for ticks := 1; g.hub.count() > 0 || g.resumes.detached.Load() > 0; ticks++ {
		select {
		case <-tick.C:
			if ticks%drainSweepEvery == 0 {
				g.closeForDrain()
			}
			continue
		case <-timeout.C:
			outcome = "drain timeout passed"
		case <-ctx.Done():
			outcome = "drain cut short"
		}
		break
	}
	// The tail, past the drain's own end (not past a second signal), at
	// most handoffTimeout + 1 s + lateDeliverWindow (drainTail at the
	// default): what a pod's grace period allows for
	// (deploy/k8s/base/chat.yaml).
	//   - A handoff away from here already begun ends within handoffTimeout
	//     unless etcd is slow; ending the session under it would lose its
	//     socket on both gateways (the new one removes it when this one no
	//     longer answers), so the drain waits for it, for handoffTimeout
	//     and a second.
	//   - A Broadcast resolved before a socket's move may Deliver here after
	//     the socket was handed off (its revision below the move's), and
	//     only this gateway forwards such a message to the socket's new
	//     gateway (handoff.go): ending the session sooner would lose it,
	//     the Broadcast reporting this gateway failed. Each Deliver ends
	//     within the membership-server's DeliverTimeout, so the session
	//     stays up lateDeliverWindow after the last handoff away finished,
	//     one that finished during the tail included.
	handoffsUntil := time.Now().Add(g.handoffTimeout + time.Second)
	tailUntil := handoffsUntil.Add(lateDeliverWindow)
	for ctx.Err() == nil {
		now := time.Now()
		busy := g.handoffsOut.Load() > 0 && now.Before(handoffsUntil)
		last := g.lastHandoffOut.Load()
		late := last != 0 && now.Before(time.Unix(0, last).Add(lateDeliverWindow)) && now.Before(tailUntil)
		if !busy && !late {
			break
		}
		sleepCtx(ctx, drainCheckInterval)
	}
	g.log.Info("drain over", "outcome", outcome, "sockets_left", g.hub.count(), "detached_left", g.resumes.detached.Load(),
		"handoffs_left", g.handoffsOut.Load(), "took", time.Since(start).Round(time.Millisecond))
}

// closeForDrain closes with 1012 every native connection attached and every
// Socket.IO session, and returns how many it closed.
func (g *Gateway) closeForDrain() int {
	n := 0
	for _, m := range g.hub.all() {
		switch m := m.(type) {
		case *client:
			if m.rs == nil {
				m.shutdown(closeServiceRestart, drainReason)
				n++
				continue
			}
			m.rs.mu.Lock()
			c := m.rs.conn
			m.rs.mu.Unlock()
			if c != nil && c.closingCode() == 0 {
				c.shutdown(closeServiceRestart, drainReason)
				n++
			}
		case *sioSocket:
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if !closed {
				m.shutdown(closeGoingAway, "gateway shutting down")
				n++
			}
		}
	}
	return n
}

// drainedClose reports whether c's connection was closed by a drain: its
// socket then detaches (resume.go's release) rather than ending.
func (g *Gateway) drainedClose(c *client) bool {
	if c.rs == nil || !g.drainSt.on.Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing && c.closeCode == closeServiceRestart && c.closeReason == drainReason
}
