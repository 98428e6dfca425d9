package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds what a gateway does with the keyspace: publish itself and its
// sockets on its lease, and follow the memberships of its sockets.

// RegisterGateway publishes rec on rec.Lease and returns the revision of the write.
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

// AddSocket publishes a connected socket on its lease.
func (s *Store) AddSocket(ctx context.Context, socket SocketID, rec SocketRecord) (int64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	resp, err := s.kv.Put(ctx, s.k.socket(socket.String()), string(b), clientv3.WithLease(socket.Lease))
	if err != nil {
		return 0, fmt.Errorf("add socket: %w", err)
	}
	return resp.Header.Revision, nil
}

// RemoveSocket deletes a socket and all its memberships. The socket record goes
// first, in the same transaction that reads the socket's rooms: from then on
// the Join guard fails, so the room list read there is complete and the second
// step leaves nothing behind.
func (s *Store) RemoveSocket(ctx context.Context, socket SocketID) error {
	id := socket.String()
	roomsPrefix := s.k.socketRoomsPrefix(socket)
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpDelete(s.k.socket(id)),
		clientv3.OpGet(roomsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return fmt.Errorf("remove socket: %w", err)
	}
	// Room keys in transactions within the budget, the socket's own
	// membership keys last: until then the room list above can be read
	// again, so a RemoveSocket that fails midway can be repeated.
	send := func(ops []*etcdserverpb.RequestOp) error {
		if _, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Success: ops}); err != nil {
			return fmt.Errorf("remove memberships of socket: %w", etcdError(ctx, err))
		}
		return nil
	}
	chunks := s.budget.chunks(txnShape{}, send)
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), roomsPrefix))
		if err != nil {
			return err
		}
		if err := chunks.add(pbDelete([]byte(s.k.room(room, id)), nil)); err != nil {
			return err
		}
	}
	if err := chunks.add(pbDelete([]byte(roomsPrefix), []byte(clientv3.GetPrefixRangeEnd(roomsPrefix)))); err != nil {
		return err
	}
	return chunks.flush()
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
	if !ok {
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
