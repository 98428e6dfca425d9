package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/socketrooms/membership/internal/store"
)

// Removing closed sockets' keys from etcd.
//
// A socket's keys (its record and memberships) live on the session's lease,
// which outlives every socket for as long as the gateway runs: nothing but
// the gateway removes them, and a record left behind is a socket that Join
// accepts and GetSocket calls connected. So no closed socket is forgotten
// before its keys are gone:
//
//   - A closing socket joins its session's pending set (removeSocket) and
//     stays there until the janitor has deleted its keys, or the session
//     ends (its leases, revoked or expiring, take the keys with them). The
//     set has no cap that drops: it costs one socket id per socket, and
//     only while etcd refuses or delays the deletions.
//   - The janitor drains the set in batches of removalBatch sockets, each
//     removed by store.RemoveSockets in as few transactions as etcd's limits
//     allow. A batch failing with an error retrying may cure (etcd away or
//     slow) is retried with backoff, all pending sockets with it. An error
//     retrying cannot cure is pinned on its socket by removing the batch's
//     rest one at a time; that socket alone is given up (abandonRemoval).
//   - Every ReconcileInterval the janitor lists the records in etcd of the
//     session's leases and makes pending those no socket holds (reconcile):
//     records whose removal was given up, and records written after the
//     socket was removed (a registration whose put committed after its
//     caller had timed out and removed the socket).

// removalBatch is how many pending sockets one store.RemoveSockets call
// takes: a few transactions' worth, so one EtcdTimeout bounds it.
const removalBatch = 256

// removalSet is a session's pending removals; its zero value is empty.
type removalSet struct {
	mu      sync.Mutex
	pending map[store.SocketID]struct{}
	kick    chan struct{} // one token: the janitor has work
}

// add makes sid pending and wakes the janitor.
func (r *removalSet) add(sid store.SocketID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[store.SocketID]struct{}{}
	}
	r.pending[sid] = struct{}{}
	select {
	case r.kickLocked() <- struct{}{}:
	default:
	}
}

// wake is the channel add signals.
func (r *removalSet) wake() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kickLocked()
}

func (r *removalSet) kickLocked() chan struct{} {
	if r.kick == nil {
		r.kick = make(chan struct{}, 1)
	}
	return r.kick
}

func (r *removalSet) has(sid store.SocketID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[sid]
	return ok
}

func (r *removalSet) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// take returns up to n pending sockets; they stay pending until done.
func (r *removalSet) take(n int) []store.SocketID {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]store.SocketID, 0, min(n, len(r.pending)))
	for sid := range r.pending {
		if len(out) == n {
			break
		}
		out = append(out, sid)
	}
	return out
}

// done forgets sockets whose keys are gone.
func (r *removalSet) done(sids []store.SocketID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sid := range sids {
		delete(r.pending, sid)
	}
	if len(r.pending) == 0 {
		r.pending = nil // a map keeps its size: let a burst's go
	}
}

// has reports whether the hub holds the socket id.
func (h *hub) has(id string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	_, ok := h.sockets[id]
	return ok
}

// removeSocket makes a closed socket's keys go: it is pending until the
// session's janitor has deleted them. Once the session has ended there is
// nothing to do: its leases take the keys with them.
func (g *Gateway) removeSocket(s *session, sid store.SocketID) {
	if s.ctx.Err() != nil {
		return
	}
	s.removals.add(sid)
}

// janitor removes the session's pending sockets and reconciles its records
// with the hub every ReconcileInterval, for the session's life. Reconcile
// runs on this goroutine, so no socket leaves the pending set while a
// reconcile pass looks at it.
func (g *Gateway) janitor(s *session) error {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	tick := time.NewTicker(g.cfg.ReconcileInterval)
	defer tick.Stop()
	var suspects map[store.SocketID]struct{}
	for {
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-s.removals.wake():
		case <-tick.C:
			suspects = g.reconcile(s, suspects)
		}
		for pending := s.removals.len(); pending > 0; {
			err := g.drain(s)
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
			left := s.removals.len()
			if err == nil || left < pending {
				// Done, or etcd is slow rather than away: go on at once.
				backoff.reset()
				pending = left
				continue
			}
			g.log.Warn("removing closed sockets failed; retrying", "pending", left, "err", err)
			sleepCtx(s.ctx, backoff.next())
		}
	}
}

// drain removes pending sockets, a batch at a time, until none is left or a
// removal fails with an error retrying may cure, which it returns.
func (g *Gateway) drain(s *session) error {
	for {
		batch := s.removals.take(removalBatch)
		if len(batch) == 0 {
			return nil
		}
		ctx, cancel := context.WithTimeout(s.ctx, g.cfg.EtcdTimeout)
		n, err := g.store.RemoveSockets(ctx, batch)
		cancel()
		s.removals.done(batch[:n])
		if err == nil {
			continue
		}
		if removalRetryable(err) || s.ctx.Err() != nil {
			return err
		}
		// Retrying cannot cure err: find the sockets it belongs to.
		for _, sid := range batch[n:] {
			ctx, cancel := context.WithTimeout(s.ctx, g.cfg.EtcdTimeout)
			err := g.store.RemoveSocket(ctx, sid)
			cancel()
			switch {
			case err == nil:
			case removalRetryable(err) || s.ctx.Err() != nil:
				return err
			default:
				g.abandonRemoval(sid, err)
			}
			s.removals.done([]store.SocketID{sid})
		}
	}
}

// abandonRemoval gives up removing a socket whose removal failed with an
// error retrying cannot cure. What is left of its keys stays in etcd,
// attached to the session's lease, until the lease ends: when the gateway
// stops, restarts or loses its session. (store.RemoveSocket deletes the
// record first, in a transaction of two operations that fits any limits
// accepted, so what stays is normally memberships, which membership
// listings still name, of a socket that Join and GetSocket no longer find;
// a record that stays is made pending again by the next reconcile.)
func (g *Gateway) abandonRemoval(sid store.SocketID, err error) {
	g.metrics.removalsAbandoned.WithLabelValues("not_retryable").Inc()
	g.log.Error("remove socket failed and retrying cannot succeed; its keys stay until the lease ends (check --etcd-max-txn-ops and --etcd-max-request-bytes against etcd's)",
		"socket", sid.String(), "err", err)
}

// removalRetryable tells whether a failed removal may succeed when tried
// again: the attempt ran out of time, or etcd could not be reached or could
// not answer now (no leader, a leader change, a raft timeout, a stopped or
// unhealthy member, too many requests, a full database, which writes resume
// after once it is compacted and defragmented). Everything else fails alike
// every time: etcd refusing the transaction (too many operations, request
// too large, permission denied), the client refusing to send it, or a
// membership key that does not decode.
func removalRetryable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || store.EtcdUnavailable(err)
}

// reconcile lists the socket records of the session's leases and makes
// pending those that no socket of the hub or the pending set accounts for.
// It returns the records found unaccounted for in this pass, which the next
// pass is given as suspects.
//
// The rule: a record is removed only when two passes in a row found it
// unaccounted for, each looking at the hub, then at the pending set, after
// its listing returned. A pass alone could catch a socket in flight:
//
//   - Registering: runSocket adds a socket to the hub before it writes the
//     record, so a listed record's socket is in the hub unless it has
//     closed. Were the order ever reversed, a record could be listed while
//     its socket is not yet in the hub; by the next pass it is.
//   - Closing: readSocket removes a socket from the hub, then makes it
//     pending; a pass looking between the two finds neither. By the next
//     pass it is pending, or removed and no longer listed.
//
// No socket leaves the pending set during a pass: only the janitor, on the
// goroutine reconcile runs on, removes sockets from it. And a record the
// janitor deleted is not listed again, socket ids being unique, unless its
// put committed after the deletion; that record is exactly the kind this
// is for. A pass that fails keeps the previous pass's suspects.
func (g *Gateway) reconcile(s *session, suspects map[store.SocketID]struct{}) map[store.SocketID]struct{} {
	found := map[store.SocketID]struct{}{}
	for _, lease := range s.leases {
		ctx, cancel := context.WithTimeout(s.ctx, g.cfg.EtcdTimeout)
		_, err := g.store.LeaseSockets(ctx, g.cfg.ID, lease, func(sid store.SocketID) bool {
			if !g.hub.has(sid.String()) && !s.removals.has(sid) {
				found[sid] = struct{}{}
			}
			return true
		})
		cancel()
		if err != nil {
			if s.ctx.Err() == nil {
				g.log.Warn("cannot list the gateway's socket records; reconciling later", "err", err)
			}
			return suspects
		}
	}
	for sid := range found {
		if _, ok := suspects[sid]; !ok {
			continue
		}
		delete(found, sid)
		g.metrics.recordsReconciled.Inc()
		g.log.Warn("socket record without a socket; removing it", "socket", sid.String())
		s.removals.add(sid)
	}
	return found
}
