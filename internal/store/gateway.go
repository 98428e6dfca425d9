package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// This file holds what a gateway does with the keyspace: publish itself and its
// sockets on its lease, and follow the memberships of its sockets.

// RegisterGateway publishes rec on rec.Lease, over any record of rec.ID,
// and returns the revision of the write. It is for tools and tests that
// stand in for a gateway; a gateway process claims its id with ClaimGateway,
// which never overwrites another process's record.
func (s *Store) RegisterGateway(ctx context.Context, rec GatewayRecord) (int64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	resp, err := s.kv.Put(ctx, s.k.gateway(rec.ID), string(b), clientv3.WithLease(rec.Lease))
	if err != nil {
		return 0, fmt.Errorf("register gateway: %w", err)
	}
	return resp.Header.Revision, nil
}

// ErrGatewayTaken reports a gateway id whose record another process holds
// (a live gateway, one still draining, or a crashed one whose lease has not
// yet expired); see GatewayTakenError.
var ErrGatewayTaken = errors.New("gateway id is registered by another process")

// GatewayTakenError is ClaimGateway's answer when rec.ID already has a
// record: Holder is that record, read at Revision in the same transaction.
// It wraps ErrGatewayTaken.
type GatewayTakenError struct {
	Holder   GatewayRecord
	Revision int64
}

func (e *GatewayTakenError) Error() string {
	state := "live"
	if e.Holder.DrainingSince != nil {
		state = "draining since " + e.Holder.DrainingSince.Format(time.RFC3339)
	}
	return fmt.Sprintf("gateway %q is registered by another process (lease %x, started %s, %s)",
		e.Holder.ID, int64(e.Holder.Lease), e.Holder.StartedAt.Format(time.RFC3339), state)
}

func (e *GatewayTakenError) Unwrap() error { return ErrGatewayTaken }

// ClaimGateway publishes rec on rec.Lease only if rec.ID has no record, in
// one transaction (its key's create revision is 0, else the record is read),
// and returns the revision of the write. When the id is taken it writes
// nothing and returns a *GatewayTakenError: a new process with the id of one
// still draining must not take its record, whose lease keeps the draining
// process's detached sockets resumable; WaitGatewayGone waits for it.
//
// replaces (0: none) is the lease of the caller's own previous record: a
// gateway registering again after it lost its session (its lease could no
// longer be proven alive, and revoking it failed) takes over a record still
// on that lease at once, guarded by the record being on it, instead of
// waiting for the lease to expire. Its sockets of that session are closed
// already.
func (s *Store) ClaimGateway(ctx context.Context, rec GatewayRecord, replaces clientv3.LeaseID) (int64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	key := s.k.gateway(rec.ID)
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(rec.Lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("register gateway: %w", err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	taken := &GatewayTakenError{Revision: resp.Header.Revision}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 1 {
		if err := json.Unmarshal(kvs[0].Value, &taken.Holder); err != nil {
			return 0, corrupt("gateway record", kvs[0].Key, err)
		}
	}
	taken.Holder.ID = rec.ID
	if replaces != 0 && taken.Holder.Lease == replaces {
		resp, err := s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.LeaseValue(key), "=", replaces)).
			Then(clientv3.OpPut(key, string(b), clientv3.WithLease(rec.Lease))).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("register gateway: %w", err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		return s.ClaimGateway(ctx, rec, 0) // it changed meanwhile: claim afresh
	}
	return 0, taken
}

// MarkGatewayDraining rewrites rec, which the caller holds on rec.Lease, with
// DrainingSince set to since, guarded by the record still being on that
// lease (ErrGatewayNotFound otherwise: the lease or the record is gone).
// It returns the revision of the write.
func (s *Store) MarkGatewayDraining(ctx context.Context, rec GatewayRecord, since time.Time) (int64, error) {
	rec.DrainingSince = &since
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	key := s.k.gateway(rec.ID)
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", rec.Lease)).
		Then(clientv3.OpPut(key, string(b), clientv3.WithLease(rec.Lease))).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("mark gateway draining: %w", err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("mark gateway %q draining: %w", rec.ID, ErrGatewayNotFound)
	}
	return resp.Header.Revision, nil
}

// WaitGatewayGone returns once gateway id has no record, watching with w: at once when it has
// none, else when a watch of its key from after rev (a revision at which it
// was read) sees it deleted (its process revoked its lease, or the lease
// expired). A watch that fails (a compaction, a lost connection) reads the
// key again. It ends with ctx's error when ctx ends first.
func (s *Store) WaitGatewayGone(ctx context.Context, w clientv3.Watcher, id string, rev int64) error {
	key := s.k.gateway(id)
	for {
		if rev == 0 {
			resp, err := s.kv.Get(ctx, key, clientv3.WithKeysOnly())
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("read gateway %q: %w", id, err)
			}
			if len(resp.Kvs) == 0 {
				return nil
			}
			rev = resp.Header.Revision
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		gone := false
		for wr := range w.Watch(wctx, key, clientv3.WithRev(rev+1), clientv3.WithFilterPut()) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					gone = true
				}
			}
			if gone {
				break
			}
		}
		cancel()
		if gone {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rev = 0 // read the key again
	}
}

// AddSocket publishes a connected socket on its lease: its record and, when
// rec has a user, its user index key, in one transaction (users.go).
func (s *Store) AddSocket(ctx context.Context, socket SocketID, rec SocketRecord) (int64, error) {
	ops, err := s.socketRecordOps(socket, rec)
	if err != nil {
		return 0, err
	}
	resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("add socket: %w", err)
	}
	return resp.Header.Revision, nil
}

// RemoveSocket deletes a socket and all its memberships: RemoveSockets of
// one socket.
func (s *Store) RemoveSocket(ctx context.Context, socket SocketID) error {
	_, err := s.RemoveSockets(ctx, []SocketID{socket})
	return err
}

// RemoveSockets deletes sockets and all their memberships, in as few
// transactions as the budget (TxnLimits) allows, and returns how many of
// sockets, counted from the first, are wholly gone. On an error the others
// may be partly removed; calling it again on them is safe, and a socket
// whose keys are already gone costs nothing.
//
// Each socket's record goes first, in one nested transaction with the read
// of its rooms: from then on the Join guard fails, so the room list read
// there is complete and the second step leaves nothing behind. As many
// sockets as fit share that first transaction; their room keys then go in
// transactions within the budget, each socket's own membership keys last:
// until then its room list can be read again, so a removal that fails midway
// can be repeated. Before each first step, one read-only transaction reads
// the records' users, so that each socket's user index key (users.go) is
// deleted with its record.
func (s *Store) RemoveSockets(ctx context.Context, sockets []SocketID) (removed int, err error) {
	for removed < len(sockets) {
		// At most one transaction's worth: the states read are those of the
		// sockets the next transaction may take.
		batch := sockets[removed:min(len(sockets), removed+s.budget.maxOps)]
		group, err := s.removeGroup(ctx, batch)
		if err != nil {
			return removed, err
		}
		removed += group
	}
	return removed, nil
}

// removeGroup removes the first of sockets that fit one transaction and
// returns how many. Each socket's record is deleted under the guard of its
// home as read just before (home.go): one that moved in between (move.go)
// is read again and retried, so that its rooms are read under the home
// they are in.
func (s *Store) removeGroup(ctx context.Context, sockets []SocketID) (int, error) {
	states, err := s.socketStates(ctx, sockets)
	if err != nil {
		return 0, fmt.Errorf("remove socket: %w", err)
	}
	group, resp, err := s.removeSocketRecords(ctx, sockets, states)
	if err != nil {
		return 0, err
	}
	send := func(ops []*etcdserverpb.RequestOp) error {
		if _, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Success: ops}); err != nil {
			return fmt.Errorf("remove memberships of sockets: %w", etcdError(ctx, err))
		}
		return nil
	}
	chunks := s.budget.chunks(txnShape{}, send)
	var again []SocketID
	for i, socket := range group {
		t := resp.Responses[i].GetResponseTxn()
		if !t.Succeeded {
			again = append(again, socket) // it moved since its state was read
			continue
		}
		if err := s.deleteMemberships(chunks, socket, s.roomPrefixes(socket, states[i]), t.GetResponses()[1:]); err != nil {
			return 0, err
		}
		// A Disconnect's notice (disconnect.go), if any, goes with it.
		if err := chunks.add(pbDelete([]byte(s.k.disconnectNotice(states[i].writeHome().Gateway, socket)), nil)); err != nil {
			return 0, err
		}
	}
	if err := chunks.flush(); err != nil {
		return 0, err
	}
	for len(again) > 0 {
		n, err := s.removeGroup(ctx, again)
		if err != nil {
			return 0, err
		}
		again = again[n:]
	}
	return len(group), nil
}

// deleteMemberships queues the deletion of socket's memberships, listed by
// rooms (its gwm/ keys under each of prefixes, as pbRangeKeys reads them,
// one range answer per prefix): each room key, then the socket's gwm/ keys,
// last so that a deletion that fails midway can read them again.
func (s *Store) deleteMemberships(c *txnChunks, socket SocketID, prefixes []string, rooms []*etcdserverpb.ResponseOp) error {
	id := socket.String()
	for i, prefix := range prefixes {
		for _, kv := range rooms[i].GetResponseRange().GetKvs() {
			room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), prefix))
			if err != nil {
				return err
			}
			if err := c.add(pbDelete([]byte(s.k.room(room, id)), nil)); err != nil {
				return err
			}
		}
	}
	for _, prefix := range prefixes {
		if err := c.add(pbDelete([]byte(prefix), []byte(clientv3.GetPrefixRangeEnd(prefix)))); err != nil {
			return err
		}
	}
	return nil
}

// removeSocketRecords deletes the records (and move markers) of the first
// of sockets that fit one transaction, each in a nested transaction guarded
// by its state (states[i], when it exists) that also reads its rooms under
// every prefix they may be under (roomPrefixes) and deletes its user index
// key; resp.Responses[i] answers group[i]: the delete, then one range per
// prefix.
func (s *Store) removeSocketRecords(ctx context.Context, sockets []SocketID, states []socketState) (group []SocketID, resp *etcdserverpb.TxnResponse, err error) {
	return s.commitFirstThatFit(ctx, "remove socket", sockets, func(i int, socket SocketID) *etcdserverpb.RequestOp {
		st := states[i]
		id := socket.String()
		ops := []*etcdserverpb.RequestOp{pbDelete([]byte(s.k.socket(id)), []byte(s.k.socketRangeEnd(id)))}
		for _, prefix := range s.roomPrefixes(socket, st) {
			ops = append(ops, pbRangeKeys(prefix))
		}
		var guard []*etcdserverpb.Compare
		if st.exists {
			guard = s.guard(socket, st)
		}
		return pbTxn(guard, append(ops, s.pbDeleteUserKey(socket, st.rec.User)...)...)
	})
}

// pbDeleteUserKey deletes socket's user index key (users.go), if it has a
// user: it goes with the record.
func (s *Store) pbDeleteUserKey(socket SocketID, user string) []*etcdserverpb.RequestOp {
	if user == "" {
		return nil
	}
	return []*etcdserverpb.RequestOp{pbDelete([]byte(s.k.user(user, socket.String())), nil)}
}

// commitFirstThatFit commits, in one transaction, op of each of the first
// of sockets that fit the budget (at least one, or a *TxnTooLargeError);
// resp.Responses[i] answers group[i].
func (s *Store) commitFirstThatFit(ctx context.Context, what string, sockets []SocketID, op func(int, SocketID) *etcdserverpb.RequestOp) (group []SocketID, resp *etcdserverpb.TxnResponse, err error) {
	var shape txnShape
	var ops []*etcdserverpb.RequestOp
	for i, socket := range sockets {
		o := op(i, socket)
		next := shape.withOp(opNeed(o), proto.Size(o))
		if !s.budget.fits(next) {
			if len(ops) == 0 {
				return nil, nil, s.budget.tooLarge(next)
			}
			break
		}
		shape, ops = next, append(ops, o)
	}
	resp, err = s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Success: ops})
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, etcdError(ctx, err))
	}
	return sockets[:len(ops)], resp, nil
}

// pbTxn is a nested transaction of ops under compares cmps.
func pbTxn(cmps []*etcdserverpb.Compare, ops ...*etcdserverpb.RequestOp) *etcdserverpb.RequestOp {
	return &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestTxn{RequestTxn: &etcdserverpb.TxnRequest{Compare: cmps, Success: ops}}}
}

// pbRangeKeys reads the keys under prefix (a socket's gwm/ keys).
func pbRangeKeys(prefix string) *etcdserverpb.RequestOp {
	return &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestRange{RequestRange: &etcdserverpb.RangeRequest{
		Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix)), KeysOnly: true}}}
}

// LeaseSockets visits, in key order, the sockets of gateway whose ids name
// lease and whose records still live on it, until visit returns false: a
// socket moved to another gateway (move.go) is not the lease's any more,
// and a gateway reconciling its records must not take it for its own. It
// reads 1,000 records at a time, all at one revision, which it returns.
// Keys under the lease's prefix that are not socket ids (move markers) are
// skipped.
func (s *Store) LeaseSockets(ctx context.Context, gateway string, lease clientv3.LeaseID, visit func(SocketID) bool) (int64, error) {
	prefix := s.k.socket(SocketID{Gateway: gateway, Lease: lease}.String()) // "{gateway}.{lease}."
	rev, err := s.scan(ctx, prefix, prefix, 0, false, func(kv *mvccpb.KeyValue) bool {
		sid, err := ParseSocketID(strings.TrimPrefix(string(kv.Key), s.k.socketsPrefix()))
		if err != nil || clientv3.LeaseID(kv.Lease) != lease {
			return true
		}
		return visit(sid)
	})
	if err != nil {
		return 0, fmt.Errorf("list sockets of lease %x: %w", int64(lease), err)
	}
	return rev, nil
}

func pbDelete(key, end []byte) *etcdserverpb.RequestOp {
	return &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestDeleteRange{
		RequestDeleteRange: &etcdserverpb.DeleteRangeRequest{Key: key, RangeEnd: end}}}
}

// MembershipChange is one membership of a gateway's socket appearing or going.
type MembershipChange struct {
	Socket string
	Room   string
	Joined bool
	// Revision is the etcd revision of the change.
	Revision int64
}

// MembershipWatchPrefix is the prefix a gateway watches to learn its sockets'
// memberships; decode its events with DecodeMembershipEvent.
func (s *Store) MembershipWatchPrefix(gateway string) string { return s.k.gwmPrefix(gateway) }

// DecodeMembershipEvent turns an event under MembershipWatchPrefix(gateway)
// into a change; ok is false for keys that are not memberships.
func (s *Store) DecodeMembershipEvent(gateway string, ev *clientv3.Event) (MembershipChange, bool) {
	socket, room, ok := s.decodeMembershipKey(gateway, string(ev.Kv.Key))
	if !ok {
		return MembershipChange{}, false
	}
	return MembershipChange{
		Socket:   socket,
		Room:     room,
		Joined:   ev.Type == mvccpb.PUT,
		Revision: ev.Kv.ModRevision,
	}, true
}

func (s *Store) decodeMembershipKey(gateway, key string) (socket, room string, ok bool) {
	rest, ok := strings.CutPrefix(key, s.k.gwmPrefix(gateway))
	if !ok || strings.HasPrefix(rest, disconnectSegment) {
		return "", "", false
	}
	socket, seg, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", false
	}
	room, err := unescapeRoom(seg)
	if err != nil {
		return "", "", false
	}
	return socket, room, true
}

// GatewayMemberships lists every membership of a gateway's sockets at one
// revision, as socket id → set of rooms. A gateway that lost its watch history
// (compaction) rebuilds its room index from this and resumes watching at rev+1.
func (s *Store) GatewayMemberships(ctx context.Context, gateway string) (map[string]map[string]struct{}, int64, error) {
	prefix := s.k.gwmPrefix(gateway)
	out := map[string]map[string]struct{}{}
	rev, err := s.scanKeys(ctx, prefix, prefix, 0, func(key string) bool {
		if socket, room, ok := s.decodeMembershipKey(gateway, key); ok {
			if out[socket] == nil {
				out[socket] = map[string]struct{}{}
			}
			out[socket][room] = struct{}{}
		}
		return true
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list gateway memberships: %w", err)
	}
	return out, rev, nil
}
