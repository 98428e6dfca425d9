package store

import (
	"context"
	"fmt"
	"strings"
	"sync"

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
	end := clientv3.GetPrefixRangeEnd(prefix)
	start := prefix
	var out []SocketID
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(), clientv3.WithLimit(1000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, start, opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("list room members: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if sid, err := ParseSocketID(strings.TrimPrefix(string(kv.Key), prefix)); err == nil {
				out = append(out, sid)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// AddToRooms joins every socket to every room, skipping sockets that are gone
// and memberships that exist, and returns how many memberships it added.
func (s *Store) AddToRooms(ctx context.Context, sockets []SocketID, rooms []string) (int64, error) {
	ops := make([]clientv3.Op, 0, len(sockets)*len(rooms))
	for _, sock := range sockets {
		id := sock.String()
		for _, room := range rooms {
			roomKey := s.k.room(room, id)
			ops = append(ops, clientv3.OpTxn(
				[]clientv3.Cmp{
					socketExists(s.k.socket(id)),
					clientv3.Compare(clientv3.CreateRevision(roomKey), "=", 0),
				},
				[]clientv3.Op{
					clientv3.OpPut(s.k.gwm(sock, room), "", clientv3.WithLease(sock.Lease)),
					clientv3.OpPut(roomKey, "", clientv3.WithLease(sock.Lease)),
				}, nil))
		}
	}
	return s.commitNested(ctx, ops)
}

// RemoveFromRooms makes every socket leave every room and returns how many
// memberships it removed.
func (s *Store) RemoveFromRooms(ctx context.Context, sockets []SocketID, rooms []string) (int64, error) {
	ops := make([]clientv3.Op, 0, len(sockets)*len(rooms))
	for _, sock := range sockets {
		for _, room := range rooms {
			ops = append(ops, s.membershipOp(sock, room, false))
		}
	}
	return s.commitNested(ctx, ops)
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
	var ops []clientv3.Op
	for i, sock := range sockets {
		if errs[i] != nil {
			return 0, errs[i]
		}
		for _, room := range roomsOf[i] {
			ops = append(ops, s.membershipOp(sock, room, false))
		}
	}
	return s.commitNested(ctx, ops)
}

// commitNested commits nested transactions, as many per etcd transaction as
// its operation limit allows, and counts those whose guard held. etcd grants
// a nested transaction only the limit its parent leaves unused, and ours need
// two operations each.
func (s *Store) commitNested(ctx context.Context, ops []clientv3.Op) (int64, error) {
	var n int64
	for len(ops) > 0 {
		k := min(len(ops), maxTxnOps-2)
		resp, err := s.kv.Txn(ctx).Then(ops[:k]...).Commit()
		if err != nil {
			return n, fmt.Errorf("apply room-wide change (%d applied before): %w", n, err)
		}
		for _, r := range resp.Responses {
			if r.GetResponseTxn().Succeeded {
				n++
			}
		}
		ops = ops[k:]
	}
	return n, nil
}
