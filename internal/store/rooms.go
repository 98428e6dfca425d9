package store

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds the room-wide operations (Sails' leaveAll,
// addRoomMembersToRooms, removeRoomMembersFromRooms). Rooms can hold far more
// members than one etcd transaction can change, so each works in two steps:
// read who is affected at one revision, in pages; then apply per-membership
// nested transactions, maxTxnOps at a time, counting those that changed
// something. Each nested transaction re-checks its own guard, so a socket
// that goes meanwhile is skipped rather than resurrected.

// RoomMembers lists every member of room at revision rev (0: the current
// one), reading in pages, and returns the revision read at.
func (s *Store) RoomMembers(ctx context.Context, room string, rev int64) ([]SocketID, int64, error) {
	prefix := s.k.roomPrefix(room)
	var out []SocketID
	rev, err := s.scanKeys(ctx, prefix, prefix, rev, func(key string) bool {
		if sid, err := ParseSocketID(strings.TrimPrefix(key, prefix)); err == nil {
			out = append(out, sid)
		}
		return true
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list room members: %w", err)
	}
	return out, rev, nil
}

// AddToRooms joins every socket to every room, skipping sockets that are gone
// and memberships that exist, and returns how many memberships it added.
// Under a rooms-per-socket limit, a socket that would pass it joins none of
// the rooms and is counted in overLimit.
func (s *Store) AddToRooms(ctx context.Context, sockets []SocketID, rooms []string) (added, overLimit int64, err error) {
	if s.maxRooms > 0 {
		return s.addToRoomsLimited(ctx, sockets, rooms)
	}
	ops := make([]*etcdserverpb.RequestOp, 0, len(sockets)*len(rooms))
	for _, sock := range sockets {
		socketKey := []byte(s.k.socket(sock.String()))
		for _, room := range rooms {
			// Join's membership transaction, under the socket's guard: it
			// succeeds (and counts) only when it wrote.
			ops = append(ops, &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestTxn{RequestTxn: &etcdserverpb.TxnRequest{
				Compare: []*etcdserverpb.Compare{pbExists(socketKey)},
				Success: []*etcdserverpb.RequestOp{s.pbMembershipOp(sock, room, true)},
			}}})
		}
	}
	added, err = s.commitNested(ctx, ops, func(r *etcdserverpb.ResponseOp) bool {
		t := r.GetResponseTxn()
		return t.Succeeded && !t.Responses[0].GetResponseTxn().Succeeded
	})
	return added, 0, err
}

// RemoveFromRooms makes every socket leave every room and returns how many
// memberships it removed.
func (s *Store) RemoveFromRooms(ctx context.Context, sockets []SocketID, rooms []string) (int64, error) {
	ops := make([]*etcdserverpb.RequestOp, 0, len(sockets)*len(rooms))
	for _, sock := range sockets {
		for _, room := range rooms {
			ops = append(ops, s.pbMembershipOp(sock, room, false))
		}
	}
	return s.commitNested(ctx, ops, wasMember)
}

// LeaveAllRooms makes every socket leave every room it was in at revision rev
// and returns how many memberships it removed.
func (s *Store) LeaveAllRooms(ctx context.Context, sockets []SocketID, rev int64) (int64, error) {
	roomsOf := make([][]string, len(sockets))
	errs := make([]error, len(sockets))
	// Each socket's rooms are one range read; a few run at once.
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, sock := range sockets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			prefix := s.k.socketRoomsPrefix(sock)
			resp, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
			if err != nil {
				errs[i] = fmt.Errorf("list socket rooms: %w", err)
				return
			}
			for _, kv := range resp.Kvs {
				room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), prefix))
				if err != nil {
					errs[i] = err
					return
				}
				roomsOf[i] = append(roomsOf[i], room)
			}
		}()
	}
	wg.Wait()
	var ops []*etcdserverpb.RequestOp
	for i, sock := range sockets {
		if errs[i] != nil {
			return 0, errs[i]
		}
		for _, room := range roomsOf[i] {
			ops = append(ops, s.pbMembershipOp(sock, room, false))
		}
	}
	return s.commitNested(ctx, ops, wasMember)
}

// wasMember tells whether a membership transaction found the membership.
func wasMember(r *etcdserverpb.ResponseOp) bool { return r.GetResponseTxn().Succeeded }

// commitNested commits nested transactions, as many per etcd transaction as
// its operation limit allows, and counts those for which changed holds. etcd
// grants a nested transaction only the limit its parent leaves unused, and
// ours need at most two operations at each level below.
func (s *Store) commitNested(ctx context.Context, ops []*etcdserverpb.RequestOp, changed func(*etcdserverpb.ResponseOp) bool) (int64, error) {
	var n int64
	for len(ops) > 0 {
		k := min(len(ops), maxTxnOps-4)
		resp, err := s.pb.Txn(ctx, &etcdserverpb.TxnRequest{Success: ops[:k]})
		if err != nil {
			return n, fmt.Errorf("apply room-wide change (%d applied before): %w", n, etcdError(ctx, err))
		}
		for _, r := range resp.Responses {
			if changed(r) {
				n++
			}
		}
		ops = ops[k:]
	}
	return n, nil
}
