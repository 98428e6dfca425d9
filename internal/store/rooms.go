package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds the room-wide operations (Sails' leaveAll,
// addRoomMembersToRooms, removeRoomMembersFromRooms). Rooms can hold far more
// members than one etcd transaction can change, or than is worth holding in
// memory, so each streams: it reads the source room's members a page at a
// time at one pinned revision, and applies each page's per-membership nested
// transactions in transactions within the budget (txnbudget.go) before it
// reads the next page, counting those that changed something. Memory stays
// that of one page and one transaction however large the room.
//
// Changes are applied page by page, so a call that fails midway leaves the
// part before applied (PartialChangeError says how much). Each nested
// transaction is idempotent and re-checks its own guard (a socket that went
// meanwhile is skipped, not resurrected), so re-running the call finishes it.
// A page read at the pinned revision after etcd compacted it fails with
// rpctypes.ErrCompacted, wrapped the same way.

// memberPageSize is how many members of the source room are read, and then
// changed, at a time.
const memberPageSize = 500

// RoomWideResult reports a room-wide change.
type RoomWideResult struct {
	// Sockets is how many members the source room had at Revision.
	Sockets int64
	// Changed is how many memberships were added or removed.
	Changed int64
	// OverLimit counts, for an add under a rooms-per-socket limit, the
	// sockets that joined none of the rooms because they would pass it.
	OverLimit int64
	// Revision is the etcd revision the source room was read at.
	Revision int64
}

// PartialChangeError is a room-wide change that failed after applying Applied
// membership changes, which stay applied; re-running the call finishes it.
// Err is the cause (rpctypes.ErrCompacted when the pinned read revision was
// compacted during the call).
type PartialChangeError struct {
	Applied int64
	// Revision is the revision the source room was read at (0: none yet, or
	// a change of given sockets).
	Revision int64
	Err      error
}

func (e *PartialChangeError) Error() string {
	return fmt.Sprintf("apply room-wide change (%d applied before): %v", e.Applied, e.Err)
}

func (e *PartialChangeError) Unwrap() error { return e.Err }

// partial wraps err, the failure of a room-wide change after applied changes.
func partial(applied int64, err error) error { return partialAt(applied, 0, err) }

// partialAt is partial for a change of a room's members read at revision rev.
func partialAt(applied, rev int64, err error) error {
	if err == nil {
		return nil
	}
	return &PartialChangeError{Applied: applied, Revision: rev, Err: err}
}

// RoomMembers lists every member of room at revision rev (0: the current
// one), reading in pages, and returns the revision read at. It holds the
// whole room in memory: room-wide changes stream instead (forEachMemberPage).
func (s *Store) RoomMembers(ctx context.Context, room string, rev int64) ([]SocketID, int64, error) {
	var out []SocketID
	_, rev, err := s.forEachMemberPage(ctx, room, rev, func(page []SocketID, _ int64) error {
		out = append(out, page...)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// forEachMemberPage calls fn with the members of room, up to memberPageSize
// at a time, all read at one revision (rev 0: the current one, pinned at the
// first page), and returns how many there were and the revision. fn runs
// before the next page is read; its error ends the walk.
func (s *Store) forEachMemberPage(ctx context.Context, room string, rev int64, fn func(page []SocketID, rev int64) error) (members int64, _ int64, err error) {
	prefix := s.k.roomPrefix(room)
	end := clientv3.GetPrefixRangeEnd(prefix)
	start := prefix
	page := make([]SocketID, 0, memberPageSize)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(memberPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, start, opts...)
		if err != nil {
			return members, rev, fmt.Errorf("list room members at revision %d: %w", rev, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		page = page[:0]
		for _, kv := range resp.Kvs {
			if sid, err := ParseSocketID(strings.TrimPrefix(string(kv.Key), prefix)); err == nil {
				page = append(page, sid)
			}
		}
		members += int64(len(page))
		if len(page) > 0 {
			if err := fn(page, rev); err != nil {
				return members, rev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return members, rev, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// AddMembersToRooms joins every member of source, as of one revision, to
// every room in rooms, a page of members at a time (see the top of this
// file). Under a rooms-per-socket limit a socket that would pass it joins
// none of the rooms and is counted in OverLimit. A failure after changes were
// applied is a *PartialChangeError.
func (s *Store) AddMembersToRooms(ctx context.Context, source string, rooms []string) (RoomWideResult, error) {
	return s.changeRoomMembers(ctx, source, func(page []SocketID, _ int64) (int64, int64, error) {
		return s.addToRooms(ctx, page, rooms)
	})
}

// RemoveMembersFromRooms makes every member of source, as of one revision,
// leave every room in rooms, a page of members at a time. A failure after
// changes were applied is a *PartialChangeError.
func (s *Store) RemoveMembersFromRooms(ctx context.Context, source string, rooms []string) (RoomWideResult, error) {
	return s.changeRoomMembers(ctx, source, func(page []SocketID, _ int64) (int64, int64, error) {
		removed, err := s.removeFromRooms(ctx, page, rooms)
		return removed, 0, err
	})
}

// LeaveAll makes every member of room, as of one revision, leave every room
// it was in at that revision, a page of members at a time. A failure after
// changes were applied is a *PartialChangeError.
func (s *Store) LeaveAll(ctx context.Context, room string) (RoomWideResult, error) {
	return s.changeRoomMembers(ctx, room, func(page []SocketID, rev int64) (int64, int64, error) {
		removed, err := s.leaveAllRooms(ctx, page, rev)
		return removed, 0, err
	})
}

// changeRoomMembers applies change to the members of room, a page at a time
// at one revision, and sums what the pages changed and left over the limit.
// A failure after changes were applied is a *PartialChangeError.
func (s *Store) changeRoomMembers(ctx context.Context, room string, change func(page []SocketID, rev int64) (changed, overLimit int64, err error)) (RoomWideResult, error) {
	var res RoomWideResult
	n, rev, err := s.forEachMemberPage(ctx, room, 0, func(page []SocketID, rev int64) error {
		changed, over, err := change(page, rev)
		res.Changed += changed
		res.OverLimit += over
		return err
	})
	res.Sockets, res.Revision = n, rev
	return res, partialAt(res.Changed, rev, err)
}

// AddToRooms joins every socket to every room, skipping sockets that are gone
// and memberships that exist, and returns how many memberships it added.
// Under a rooms-per-socket limit, a socket that would pass it joins none of
// the rooms and is counted in overLimit. A failure is a *PartialChangeError.
func (s *Store) AddToRooms(ctx context.Context, sockets []SocketID, rooms []string) (added, overLimit int64, err error) {
	added, overLimit, err = s.addToRooms(ctx, sockets, rooms)
	return added, overLimit, partial(added, err)
}

func (s *Store) addToRooms(ctx context.Context, sockets []SocketID, rooms []string) (added, overLimit int64, err error) {
	if s.maxRooms > 0 {
		return s.addToRoomsLimited(ctx, sockets, rooms)
	}
	c := s.nestedChunks(ctx, &added, func(r *etcdserverpb.ResponseOp) bool {
		t := r.GetResponseTxn()
		return t.Succeeded && !t.Responses[0].GetResponseTxn().Succeeded
	})
	// Each socket's home (home.go), read first: the joins go there, guarded
	// on it. A socket that moves in between (move.go) is skipped like one
	// that went.
	states, err := s.socketStates(ctx, sockets)
	if err != nil {
		return 0, 0, err
	}
	for i, sock := range sockets {
		if !states[i].exists {
			continue
		}
		for _, room := range rooms {
			// Join's membership transaction, under the socket's guard: it
			// succeeds (and counts) only when it wrote.
			err := c.add(pbTxn(s.guard(sock, states[i]), s.pbMembershipOp(sock, states[i], room, true)))
			if err != nil {
				return added, 0, err
			}
		}
	}
	return added, 0, c.flush()
}

// RemoveFromRooms makes every socket leave every room and returns how many
// memberships it removed. A failure is a *PartialChangeError.
func (s *Store) RemoveFromRooms(ctx context.Context, sockets []SocketID, rooms []string) (int64, error) {
	removed, err := s.removeFromRooms(ctx, sockets, rooms)
	return removed, partial(removed, err)
}

func (s *Store) removeFromRooms(ctx context.Context, sockets []SocketID, rooms []string) (removed int64, err error) {
	c := s.nestedChunks(ctx, &removed, guardedWasMember)
	states, err := s.socketStates(ctx, sockets)
	if err != nil {
		return 0, err
	}
	for i, sock := range sockets {
		if !states[i].exists {
			continue // its memberships went with it
		}
		for _, room := range rooms {
			if err := c.add(s.pbGuardedLeave(sock, states[i], room)); err != nil {
				return removed, err
			}
		}
	}
	return removed, c.flush()
}

// pbGuardedLeave is a Leave of one membership under the guard of the
// socket's state (home.go): the keys it deletes are those of that home.
func (s *Store) pbGuardedLeave(sock SocketID, st socketState, room string) *etcdserverpb.RequestOp {
	return pbTxn(s.guard(sock, st), s.pbMembershipOp(sock, st, room, false))
}

// guardedWasMember tells whether a pbGuardedLeave found the membership.
func guardedWasMember(r *etcdserverpb.ResponseOp) bool {
	t := r.GetResponseTxn()
	return t.Succeeded && wasMember(t.Responses[0])
}

// LeaveAllRooms makes every socket leave every room it was in at revision rev
// and returns how many memberships it removed. A failure is a
// *PartialChangeError.
func (s *Store) LeaveAllRooms(ctx context.Context, sockets []SocketID, rev int64) (int64, error) {
	removed, err := s.leaveAllRooms(ctx, sockets, rev)
	return removed, partial(removed, err)
}

// roomReaders is how many sockets' rooms LeaveAll reads at once; their rooms
// are changed before the next ones are read.
const roomReaders = 16

func (s *Store) leaveAllRooms(ctx context.Context, sockets []SocketID, rev int64) (removed int64, err error) {
	c := s.nestedChunks(ctx, &removed, guardedWasMember)
	for len(sockets) > 0 {
		group := sockets[:min(len(sockets), roomReaders)]
		sockets = sockets[len(group):]
		roomsOf := make([][]string, len(group))
		errs := make([]error, len(group))
		var wg sync.WaitGroup
		for i, sock := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				roomsOf[i], errs[i] = s.socketRoomsAt(ctx, sock, rev)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return removed, err
		}
		// The leaves go where the sockets are now (home.go).
		states, err := s.socketStates(ctx, group)
		if err != nil {
			return removed, err
		}
		for i, sock := range group {
			if !states[i].exists {
				continue
			}
			for _, room := range roomsOf[i] {
				if err := c.add(s.pbGuardedLeave(sock, states[i], room)); err != nil {
					return removed, err
				}
			}
		}
	}
	return removed, c.flush()
}

// socketRoomsAt lists the rooms sock was in at revision rev, under the
// homes it had then (home.go).
func (s *Store) socketRoomsAt(ctx context.Context, sock SocketID, rev int64) ([]string, error) {
	states, err := s.socketStates(ctx, []SocketID{sock}, clientv3.WithRev(rev))
	if err != nil {
		return nil, err
	}
	var rooms []string
	for _, prefix := range s.roomPrefixes(sock, states[0]) {
		resp, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
		if err != nil {
			return nil, fmt.Errorf("list socket rooms at revision %d: %w", rev, err)
		}
		for _, kv := range resp.Kvs {
			room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), prefix))
			if err != nil {
				return nil, err
			}
			rooms = append(rooms, room)
		}
	}
	return rooms, nil
}

// wasMember tells whether a membership transaction found the membership.
func wasMember(r *etcdserverpb.ResponseOp) bool { return r.GetResponseTxn().Succeeded }

// nestedChunks commits nested transactions, as many per etcd transaction as
// the budget allows, adding to *counted those for which changed holds.
func (s *Store) nestedChunks(ctx context.Context, counted *int64, changed func(*etcdserverpb.ResponseOp) bool) *txnChunks {
	return s.budget.chunks(txnShape{}, func(ops []*etcdserverpb.RequestOp) error {
		resp, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Success: ops})
		if err != nil {
			return etcdError(ctx, err)
		}
		for _, r := range resp.Responses {
			if changed(r) {
				*counted++
			}
		}
		return nil
	})
}
