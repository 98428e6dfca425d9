package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Moving a socket to another gateway.
//
// A socket resumed on another gateway than the one holding it keeps its id;
// its keys move to the new gateway's lease and gwm/ prefix. The resume
// handoff between gateways (gateway/handoff.go) calls MoveSocket.
//
// Every key of a socket lives on one lease, its home's (home.go): its
// record, its user index key, and per room the pair rooms/{room}/{socket}
// and gwm/{gateway}/{socket}/{room}. A socket in more rooms than one etcd
// transaction can carry (2 keys per room, plus its record) cannot change
// lease at once, so a move goes in steps, each one transaction within the
// budget (txnbudget.go):
//
//  1. Begin: guarded on the record being on the lease it moves from with no
//     move marker (the fast path's guard, home.go), put the move marker
//     sockets/{socket}/move = {"from":…,"to":…} on the destination's lease.
//     From here every Join and Leave of the socket fails the one-compare
//     fast path and is routed (socketState.writeHome): a Join writes at the
//     destination, a Leave deletes the room key and the gwm/ key under both
//     homes; both are guarded on the record's and the marker's revisions.
//  2. Rooms, a chunk at a time: under the same guard, for each gwm/ key
//     still under the origin home, one nested transaction guarded by that
//     key's existence deletes it, puts its twin under the destination's
//     prefix and re-puts the room key, both on the destination's lease. A
//     membership's two keys thus always change together and stay on one
//     lease; one that a Leave deleted meanwhile is skipped.
//  3. Commit: guarded on the record and marker unchanged and on no gwm/ key
//     left under the origin home (one compare over that range), re-put the
//     record (gateway and lease of the destination) and the user index key
//     on the destination's lease, and delete the marker. The socket is now
//     fully moved.
//
// One transaction when it fits. A socket whose keys fit one transaction
// (at etcd's defaults, one in up to about 40 rooms: nearly all) moves in
// one, with no marker: guarded on the record (its mod revision, and the
// lease guard of home.go, which also tells that no marker exists) and on no
// gwm/ key under the origin home having changed since they were read (a
// Join meanwhile adds one), it moves every membership as step 2 does, then
// re-puts the record and the user index key as step 3 does. Every room
// then moves at one revision, the move is never seen half done, and an
// undone handoff has nothing to bring back: a handoff cut short after step
// 2 moved some rooms would leave the messages of those rooms between their
// move and their way back with neither gateway (handoff.go). The steps
// remain for sockets in more rooms.
//
// What a crash leaves. Each step is one transaction: it happened or not.
// Between steps 1 and 3 the record is still on the origin's lease and the
// marker says where the socket goes; each membership is on exactly one
// lease (the origin's, or the destination's for those step 2 moved), with
// both its keys. So:
//   - A membership-server (or caller) that dies mid-move leaves the marker;
//     MoveSocket with the same homes completes the move from any step, and
//     AbortMove brings the moved memberships back and leaves the socket on
//     its origin.
//   - A destination gateway that dies takes its lease along with the marker
//     and the memberships step 2 moved: the socket stays on its origin,
//     still resumable there, without those rooms (AbortMove, called before
//     the lease expires, keeps them).
//   - An origin gateway that dies before step 3 takes the socket (its
//     record) with it, as any gateway that crashes takes its sockets; the
//     marker and moved memberships left on the destination's lease are
//     removed by AbortMove, or go with that lease.
//
// Readers. A reader that meets a marker sees a half-moved socket: GetSocket
// and ListUserSockets read its rooms under both homes and report MovingTo;
// ListMembers shows the record's gateway (the origin) until step 3; the
// broadcast target index (targets.go) counts each membership under the
// gateway of its gwm/ key, so it follows each room as step 2 moves it; the
// membership stream (watchevents.go) emits nothing for a move.
//
// Gateways watch gwm/{gateway}/: the origin sees the moved memberships go,
// the destination sees them come, both in the step 2 transaction.
//
// Removal. RemoveSockets and Disconnect remove a socket wherever it lives
// now (its home, and both homes mid-move). So the origin gateway must stop
// counting a socket it handed off among its own before the move begins: a
// removal it makes afterwards would remove the moved socket. LeaseSockets
// (a gateway's reconciliation of its records) lists only records still on
// the lease, so it does not take a moved socket for a leaked record.

// ErrMoveConflict reports a move that cannot start or go on: the socket is
// not at the home it is said to move from, or another move of it (or an
// abort) is in progress.
var ErrMoveConflict = errors.New("socket is not where the move starts, or another move of it is in progress")

// moveAttempts bounds how often a move reads the socket again after a
// concurrent change (a Join, a Leave, another step) made a step's guard fail.
const moveAttempts = 16

// moveStep names the steps a move commits, for testHook.
const (
	moveStepWhole  = "whole"      // the move in one transaction
	moveReadWhole  = "whole-read" // before it, once the socket was read
	moveStepBegin  = "begin"
	moveStepRooms  = "rooms"
	moveStepCommit = "commit"
	abortStepBegin = "abort-begin"
	abortStepRooms = "abort-rooms"
)

// MoveSocket moves socket, with its record, user index key and memberships,
// from the home from to the home to (another gateway and its lease), in the
// steps described above. It returns nil once the socket is fully at to,
// also when it already was; ErrSocketNotFound when the socket is gone;
// ErrMoveConflict when it is not at from and not already moving from from
// to to; a *TxnTooLargeError when one room's keys cannot fit the budget. An
// error after step 1 leaves the move in progress: call MoveSocket again
// with the same homes to complete it, or AbortMove.
func (s *Store) MoveSocket(ctx context.Context, socket SocketID, from, to Home) error {
	if from == to || from.Lease == to.Lease || to.Lease == 0 || ValidateGatewayID(to.Gateway) != nil {
		return fmt.Errorf("move socket %s from %+v to %+v: the destination must be another gateway's lease", socket, from, to)
	}
	if done, err := s.moveWhole(ctx, socket, from, to); err != nil || done {
		return err
	}
	for attempt := 0; attempt < moveAttempts; attempt++ {
		st, err := s.socketState(ctx, socket)
		if err != nil {
			return err
		}
		switch {
		case !st.exists:
			if st.move != nil {
				// Its origin died mid-move: clear what the move left.
				if err := s.clearMove(ctx, socket, st); err != nil {
					return err
				}
			}
			return ErrSocketNotFound
		case st.move == nil && st.home == to:
			return nil
		case st.move == nil && st.home == from:
			ok, err := s.beginMove(ctx, socket, st, moveRecord{From: from, To: to})
			if err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
		case st.move != nil && *st.move == (moveRecord{From: from, To: to}):
		default:
			return fmt.Errorf("move socket %s: %w", socket, ErrMoveConflict)
		}
		if st, err = s.socketState(ctx, socket); err != nil {
			return err
		}
		if !st.exists || st.move == nil || *st.move != (moveRecord{From: from, To: to}) {
			continue
		}
		ok, err := s.moveRooms(ctx, socket, st, from, to, moveStepRooms)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if ok, err = s.commitMove(ctx, socket, st); err != nil || ok {
			return err
		}
	}
	return fmt.Errorf("move socket %s: %w", socket, ErrConflict)
}

// moveWhole moves socket from from to to in one transaction (see "One
// transaction when it fits" above). It reports false, having written
// nothing, when the socket is not at from without a move, when its keys do
// not fit one transaction, or when it kept changing under the guard: the
// caller then goes by steps, which tell each case apart.
func (s *Store) moveWhole(ctx context.Context, socket SocketID, from, to Home) (bool, error) {
	id := socket.String()
	prefix := s.k.socketRoomsPrefix(from.Gateway, socket)
	for attempt := 0; attempt < moveAttempts; attempt++ {
		resp, err := s.kv.Txn(ctx).Then(
			clientv3.OpGet(s.k.socket(id), clientv3.WithRange(s.k.socketRangeEnd(id))),
			clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(int64(s.budget.maxOps)))).Commit()
		if err != nil {
			return false, fmt.Errorf("move socket %s: read socket records: %w", socket, err)
		}
		st, err := s.decodeState(socket, resp.Responses[0].GetResponseRange().Kvs)
		if err != nil {
			return false, err
		}
		gwms := resp.Responses[1].GetResponseRange().Kvs
		if !st.exists || st.bad != nil || st.move != nil || st.home != from || len(gwms) >= s.budget.maxOps {
			return false, nil
		}
		cmps := append(s.pinnedGuard(socket, st), &etcdserverpb.Compare{
			Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix)),
			Target: etcdserverpb.Compare_MOD, Result: etcdserverpb.Compare_LESS,
			TargetUnion: &etcdserverpb.Compare_ModRevision{ModRevision: resp.Header.Revision + 1}})
		ops := make([]*etcdserverpb.RequestOp, 0, len(gwms)+2)
		for _, kv := range gwms {
			room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), prefix))
			if err != nil {
				return false, err
			}
			ops = append(ops, s.pbMoveMembership(kv.Key, socket, room, to))
		}
		if ops, err = s.recordAt(ops, socket, st.rec, to); err != nil {
			return false, err
		}
		shape := guardShape(cmps, nil)
		for _, op := range ops {
			shape = shape.withOp(opNeed(op), proto.Size(op))
		}
		if !s.budget.fits(shape) {
			return false, nil
		}
		if err := s.hook(moveReadWhole); err != nil {
			return false, err
		}
		r, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Compare: cmps, Success: ops})
		if err != nil {
			return false, fmt.Errorf("move socket %s: %w", socket, etcdError(ctx, err))
		}
		if r.Succeeded {
			return true, s.hook(moveStepWhole)
		}
	}
	return false, nil
}

// pbMoveMembership moves the membership whose gwm/ key is key (of socket,
// of room) to dst: guarded by that key's existence (a Leave may have
// deleted it), it deletes the key and puts its twin under dst's prefix and
// the room key, both on dst's lease.
func (s *Store) pbMoveMembership(key []byte, socket SocketID, room string, dst Home) *etcdserverpb.RequestOp {
	return pbTxn([]*etcdserverpb.Compare{pbExists(key)},
		pbDelete(key, nil),
		pbPut([]byte(s.k.gwm(dst.Gateway, socket, room)), int64(dst.Lease)),
		pbPut([]byte(s.k.room(room, socket.String())), int64(dst.Lease)))
}

// AbortMove undoes a move of socket in progress: the memberships already at
// the destination go back to the origin, then the marker goes, and the
// socket is as before the move. With no move in progress it changes
// nothing but the record's mod revision (it re-puts the record as it is):
// a move in one transaction whose caller stopped waiting for etcd's answer
// may still be on its way, and that fails its guard, so that the socket
// stays where AbortMove leaves it. Once a move committed, AbortMove does
// not undo it (moving back is another MoveSocket). A socket whose origin
// died mid-move has what the move left removed, and ErrSocketNotFound is
// returned.
func (s *Store) AbortMove(ctx context.Context, socket SocketID) error {
	for attempt := 0; attempt < moveAttempts; attempt++ {
		st, err := s.socketState(ctx, socket)
		if err != nil {
			return err
		}
		switch {
		case st.move == nil:
			if !st.exists {
				return ErrSocketNotFound
			}
			ok, err := s.fenceRecord(ctx, socket, st)
			if err != nil || ok {
				return err
			}
			continue
		case !st.exists:
			if err := s.clearMove(ctx, socket, st); err != nil {
				return err
			}
			return ErrSocketNotFound
		}
		m := *st.move
		if !m.Back {
			// Joins now write at the origin: the rooms step below then
			// has no new destination keys to chase.
			m.Back = true
			ok, err := s.putMarker(ctx, socket, st, m, abortStepBegin)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if st, err = s.socketState(ctx, socket); err != nil {
				return err
			}
			if !st.exists || st.move == nil || *st.move != m {
				continue
			}
		}
		ok, err := s.moveRooms(ctx, socket, st, m.To, m.From, abortStepRooms)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		// The marker goes once no membership is left at the destination.
		toPrefix := s.k.socketRoomsPrefix(m.To.Gateway, socket)
		resp, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{
			Compare: append(s.guard(socket, st), pbNoKeyUnder(toPrefix)),
			Success: []*etcdserverpb.RequestOp{pbDelete([]byte(s.k.moveMarker(socket.String())), nil)},
		})
		if err != nil {
			return fmt.Errorf("abort move of socket %s: %w", socket, etcdError(ctx, err))
		}
		if resp.Succeeded {
			return nil
		}
	}
	return fmt.Errorf("abort move of socket %s: %w", socket, ErrConflict)
}

// fenceRecord re-puts the record of socket, not moving, as it is (value and
// lease), guarded on st: a move in one transaction, or the first step of
// one in steps, read before it then fails its guard (moveWhole,
// putMarker). It reports false when st no longer held.
func (s *Store) fenceRecord(ctx context.Context, socket SocketID, st socketState) (bool, error) {
	recKey, _ := s.k.socketRange(socket.String())
	resp, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{
		Compare: s.pinnedGuard(socket, st),
		Success: []*etcdserverpb.RequestOp{{Request: &etcdserverpb.RequestOp_RequestPut{RequestPut: &etcdserverpb.PutRequest{
			Key: recKey, IgnoreValue: true, IgnoreLease: true}}}},
	})
	if err != nil {
		return false, fmt.Errorf("abort move of socket %s: %w", socket, etcdError(ctx, err))
	}
	return resp.Succeeded, nil
}

// pinnedGuard is guard plus, for a socket not moving, its record's mod
// revision (a moving socket's guard already compares it): it fails once
// AbortMove fenced the record (fenceRecord), which a write that moves the
// socket must.
func (s *Store) pinnedGuard(socket SocketID, st socketState) []*etcdserverpb.Compare {
	cmps := s.guard(socket, st)
	if st.move != nil {
		return cmps
	}
	recKey, _ := s.k.socketRange(socket.String())
	return append(cmps, pbModIs(recKey, st.recRev))
}

// recordAt appends to ops the puts that make rec, socket's record, its
// home's: the record (naming to) and the user index key on to's lease.
func (s *Store) recordAt(ops []*etcdserverpb.RequestOp, socket SocketID, rec SocketRecord, to Home) ([]*etcdserverpb.RequestOp, error) {
	rec.Gateway, rec.Lease = to.Gateway, to.Lease
	b, err := json.Marshal(rec)
	if err != nil {
		return ops, err
	}
	id := socket.String()
	ops = append(ops, &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestPut{RequestPut: &etcdserverpb.PutRequest{
		Key: []byte(s.k.socket(id)), Value: b, Lease: int64(to.Lease)}}})
	if rec.User != "" {
		ops = append(ops, pbPut([]byte(s.k.user(rec.User, id)), int64(to.Lease)))
	}
	return ops, nil
}

// socketState reads one socket's state.
func (s *Store) socketState(ctx context.Context, socket SocketID) (socketState, error) {
	states, err := s.socketStates(ctx, []SocketID{socket})
	if err != nil {
		return socketState{}, err
	}
	return states[0], nil
}

// beginMove is step 1: the marker, put while the record is at m.From and no
// marker exists. It reports false when that no longer held.
func (s *Store) beginMove(ctx context.Context, socket SocketID, st socketState, m moveRecord) (bool, error) {
	return s.putMarker(ctx, socket, st, m, moveStepBegin)
}

// putMarker puts the marker m (on the destination's lease) under the guard
// of st; it reports whether the guard held.
func (s *Store) putMarker(ctx context.Context, socket SocketID, st socketState, m moveRecord, step string) (bool, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	put := &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestPut{RequestPut: &etcdserverpb.PutRequest{
		Key: []byte(s.k.moveMarker(socket.String())), Value: b, Lease: int64(m.To.Lease)}}}
	// Beginning, also on the record's mod revision (pinnedGuard), so that a
	// begin still on its way after AbortMove's fence (fenceRecord) fails.
	resp, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Compare: s.pinnedGuard(socket, st), Success: []*etcdserverpb.RequestOp{put}})
	if err != nil {
		return false, fmt.Errorf("move socket %s: %w", socket, etcdError(ctx, err))
	}
	if !resp.Succeeded {
		return false, nil
	}
	return true, s.hook(step)
}

// moveRooms is step 2 (or its reverse for AbortMove): every membership
// whose gwm/ key is under src's prefix moves to dst's prefix and lease, in
// chunks within the budget, each guarded on st. It reports false when a
// chunk's guard failed (the socket changed: read it again).
func (s *Store) moveRooms(ctx context.Context, socket SocketID, st socketState, src, dst Home, step string) (bool, error) {
	guard := s.guard(socket, st)
	srcPrefix := s.k.socketRoomsPrefix(src.Gateway, socket)
	for {
		resp, err := s.kv.Get(ctx, srcPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(int64(s.budget.maxOps)))
		if err != nil {
			return false, fmt.Errorf("move socket %s: read rooms: %w", socket, err)
		}
		if len(resp.Kvs) == 0 {
			return true, nil
		}
		held := true
		chunks := s.budget.chunks(guardShape(guard, nil), func(ops []*etcdserverpb.RequestOp) error {
			r, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Compare: guard, Success: ops})
			if err != nil {
				return fmt.Errorf("move socket %s: %w", socket, etcdError(ctx, err))
			}
			if !r.Succeeded {
				held = false
				return errStopChunks
			}
			return s.hook(step)
		})
		var addErr error
		for _, kv := range resp.Kvs {
			room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), srcPrefix))
			if err != nil {
				return false, err
			}
			if addErr = chunks.add(s.pbMoveMembership(kv.Key, socket, room, dst)); addErr != nil {
				break
			}
		}
		if addErr == nil {
			addErr = chunks.flush()
		}
		err = addErr
		if !held {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// commitMove is step 3; it reports false when its guard failed.
func (s *Store) commitMove(ctx context.Context, socket SocketID, st socketState) (bool, error) {
	m := *st.move
	ops, err := s.recordAt([]*etcdserverpb.RequestOp{pbDelete([]byte(s.k.moveMarker(socket.String())), nil)}, socket, st.rec, m.To)
	if err != nil {
		return false, err
	}
	resp, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{
		Compare: append(s.guard(socket, st), pbNoKeyUnder(s.k.socketRoomsPrefix(m.From.Gateway, socket))),
		Success: ops,
	})
	if err != nil {
		return false, fmt.Errorf("move socket %s: %w", socket, etcdError(ctx, err))
	}
	if !resp.Succeeded {
		return false, nil
	}
	return true, s.hook(moveStepCommit)
}

// clearMove removes what a move left of a socket whose record is gone: the
// memberships at the destination, then the marker.
func (s *Store) clearMove(ctx context.Context, socket SocketID, st socketState) error {
	chunks := s.budget.chunks(txnShape{}, func(ops []*etcdserverpb.RequestOp) error {
		if _, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Success: ops}); err != nil {
			return fmt.Errorf("clear move of socket %s: %w", socket, etcdError(ctx, err))
		}
		return nil
	})
	prefix := s.k.socketRoomsPrefix(st.move.To.Gateway, socket)
	resp, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("clear move of socket %s: %w", socket, err)
	}
	if err := s.deleteMemberships(chunks, socket, []string{prefix},
		[]*etcdserverpb.ResponseOp{{Response: &etcdserverpb.ResponseOp_ResponseRange{ResponseRange: (*etcdserverpb.RangeResponse)(resp)}}}); err != nil {
		return err
	}
	if err := chunks.add(pbDelete([]byte(s.k.moveMarker(socket.String())), nil)); err != nil {
		return err
	}
	return chunks.flush()
}

// pbNoKeyUnder holds when no key exists under prefix: etcd compares the
// keys of a range one by one, and an empty range as one key that does not
// exist.
func pbNoKeyUnder(prefix string) *etcdserverpb.Compare {
	return &etcdserverpb.Compare{Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix)),
		Target: etcdserverpb.Compare_CREATE, Result: etcdserverpb.Compare_EQUAL,
		TargetUnion: &etcdserverpb.Compare_CreateRevision{CreateRevision: 0}}
}

// SetMoveHook makes hook run after each step a move (or an abort) commits,
// and between the read and the transaction of a move in one ("whole-read"):
// its error ends the move right there, as a caller that dies after that
// commit would. It is for tests (of this package, and of a gateway whose
// handoff must survive a move cut short); set it before the store is used.
func (s *Store) SetMoveHook(hook func(step string) error) { s.moveHook = hook }

// hook runs the test hook after a committed step; an error it returns ends
// the move there, as a crash of the caller would.
func (s *Store) hook(step string) error {
	if s.moveHook == nil {
		return nil
	}
	return s.moveHook(step)
}
