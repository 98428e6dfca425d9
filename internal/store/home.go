package store

import (
	"context"
	"encoding/json"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A socket's home.
//
// A socket id names the gateway and lease that created the socket (its
// origin), but a socket can move to another gateway (move.go) and keep its
// id. So every change and read of a socket's keys goes by its current home,
// which its record holds (SocketRecord.Home), while a move in progress is
// told by its move marker (keys.moveMarker), the key right after the record.
//
// The fast path needs no read: a Join or Leave guards each socket on the
// range [record, marker] having exactly the id's lease (one compare: the
// record exists, is on the origin's lease, and no move marker exists, since
// a marker lives on the lease of the home the socket moves to), and writes
// at the origin. A socket that moved, or is moving, fails that guard; the
// failure branch of the same transaction reads the range, and the change is
// retried against the home read there (socketState.guard). A socket that
// never moved therefore costs one round trip, as before.

// socketState is a socket's record and move marker as read at one revision,
// or as assumed before any read (originState).
type socketState struct {
	exists bool
	rec    SocketRecord
	recRev int64 // the record's mod revision; 0 when assumed
	home   Home
	// rangeLease is the lease every key of the range [record, marker] is on,
	// or -1 when they differ: what the lease guard compares.
	rangeLease clientv3.LeaseID
	move       *moveRecord // the move in progress, if any
	moveRev    int64
	// bad is why the record does not decode: its socket is then taken to be
	// at its origin, so that it can still be changed and removed, and a
	// reader that shows the record reports bad.
	bad error
}

// originState is the state a change assumes before reading: the socket at
// its origin, not moving.
func originState(id SocketID) socketState {
	o := id.Origin()
	return socketState{exists: true, home: o, rangeLease: o.Lease}
}

// moveRecord is the value of a move marker: the move under way (move.go).
type moveRecord struct {
	From Home `json:"from"`
	To   Home `json:"to"`
	// Back is set while AbortMove brings the memberships back to From.
	Back bool `json:"back,omitempty"`
}

// decodeState reads a socket's state from the keys of its range [record,
// marker] (pbSocketRange's answer). A record that does not decode is
// st.bad, not an error; a marker that does not decode is an error.
func (s *Store) decodeState(id SocketID, kvs []*mvccpb.KeyValue) (socketState, error) {
	st := socketState{rangeLease: -1}
	recKey, markerKey := s.k.socket(id.String()), s.k.moveMarker(id.String())
	for i, kv := range kvs {
		if i == 0 {
			st.rangeLease = clientv3.LeaseID(kv.Lease)
		} else if clientv3.LeaseID(kv.Lease) != st.rangeLease {
			st.rangeLease = -1
		}
		switch string(kv.Key) {
		case recKey:
			if err := json.Unmarshal(kv.Value, &st.rec); err != nil {
				st.bad, st.rec = corrupt("socket record", kv.Key, err), SocketRecord{}
			}
			st.exists, st.recRev = true, kv.ModRevision
		case markerKey:
			st.move = &moveRecord{}
			if err := json.Unmarshal(kv.Value, st.move); err != nil {
				return st, corrupt("move marker", kv.Key, err)
			}
			st.moveRev = kv.ModRevision
		}
	}
	st.home = id.Origin() // where a socket without a record may have left keys
	if st.exists {
		st.rec.ID = id.String()
		st.home = st.rec.Home(id)
		st.rec.Gateway, st.rec.Lease = st.home.Gateway, st.home.Lease // as readers show it
	}
	return st, nil
}

// holdsOn tells whether the guard built from st (guard) holds on now, a
// state read at one revision: whether a change guarded on st would apply.
func (st socketState) holdsOn(now socketState) bool {
	if st.move == nil {
		return now.exists && now.move == nil && now.rangeLease == st.home.Lease
	}
	return now.exists && now.recRev == st.recRev && now.move != nil && now.moveRev == st.moveRev
}

// writeHome is where a Join on a socket in state st writes: its home, or
// during a move the home it moves to (and during an abort, its home).
func (st socketState) writeHome() Home {
	if st.move != nil && !st.move.Back {
		return st.move.To
	}
	return st.home
}

// pbSocketRange reads a socket's record and move marker.
func (s *Store) pbSocketRange(id SocketID, keysOnly bool) *etcdserverpb.RequestOp {
	rec, end := s.k.socketRange(id.String())
	return pbRange(rec, end, keysOnly)
}

// pbRange reads the keys [key, end), its request's parts in one allocation.
func pbRange(key, end []byte, keysOnly bool) *etcdserverpb.RequestOp {
	p := &rangeParts{}
	p.req.KeysOnly = keysOnly
	return p.fill(key, end)
}

// rangeParts are the messages of one range read.
type rangeParts struct {
	op  etcdserverpb.RequestOp
	rng etcdserverpb.RequestOp_RequestRange
	req etcdserverpb.RangeRequest
}

// fill makes p a read of the keys [key, end), keeping the request's flags.
func (p *rangeParts) fill(key, end []byte) *etcdserverpb.RequestOp {
	p.req.Key, p.req.RangeEnd = key, end
	p.rng.RequestRange = &p.req
	p.op.Request = &p.rng
	return &p.op
}

// guard returns the compares that hold while st is still socket id's state
// (holdsOn): one compare (the lease of its range) when it is not moving,
// two (the record's and the marker's mod revisions) while it is.
func (s *Store) guard(id SocketID, st socketState) []*etcdserverpb.Compare {
	sid := id.String()
	rec, end := s.k.socketRange(sid)
	return s.guardOf(sid, rec, end, st)
}

// guardOf is guard for the socket whose id encodes as id, with its range
// rec, end (keys.socketRange). The compare and its slice are one
// allocation; the slice is capped, so that a caller's append copies it.
func (s *Store) guardOf(id string, rec, end []byte, st socketState) []*etcdserverpb.Compare {
	if st.move == nil {
		p := &struct {
			cmps [1]*etcdserverpb.Compare
			leaseGuard
		}{}
		p.cmps[0] = p.fill(rec, end, st.home.Lease)
		return p.cmps[:1:1]
	}
	return []*etcdserverpb.Compare{pbModIs(rec, st.recRev), pbModIs([]byte(s.k.moveMarker(id)), st.moveRev)}
}

// leaseGuard is the guard of a socket not moving: every key of its range
// [rec, end) is on lease.
type leaseGuard struct {
	cmp   etcdserverpb.Compare
	lease etcdserverpb.Compare_Lease
}

func (p *leaseGuard) fill(rec, end []byte, lease clientv3.LeaseID) *etcdserverpb.Compare {
	p.lease.Lease = int64(lease)
	p.cmp.Key, p.cmp.RangeEnd = rec, end
	p.cmp.Target, p.cmp.Result, p.cmp.TargetUnion = etcdserverpb.Compare_LEASE, etcdserverpb.Compare_EQUAL, &p.lease
	return &p.cmp
}

func pbModIs(key []byte, rev int64) *etcdserverpb.Compare {
	return &etcdserverpb.Compare{Key: key, Target: etcdserverpb.Compare_MOD, Result: etcdserverpb.Compare_EQUAL,
		TargetUnion: &etcdserverpb.Compare_ModRevision{ModRevision: rev}}
}

// pbMembershipOp is the nested transaction that makes sock, in state st,
// join or leave room: guarded by the room key (the one key a membership has
// whatever its home), it writes both keys at st's write home, or deletes the
// room key and the gwm/ key under every home the socket may have (both homes
// of a move, so none outlives the membership).
func (s *Store) pbMembershipOp(sock SocketID, st socketState, room string, join bool) *etcdserverpb.RequestOp {
	id := sock.String()
	return s.pbMembershipOpOf(id, st, room, []byte(s.k.room(room, id)), join)
}

// membershipOpParts are the messages of one pbMembershipOp, allocated
// together: a Join or Leave builds one per socket.
type membershipOpParts struct {
	op     etcdserverpb.RequestOp
	txn    etcdserverpb.RequestOp_RequestTxn
	req    etcdserverpb.TxnRequest
	cmps   [1]*etcdserverpb.Compare
	exists etcdserverpb.Compare
	create etcdserverpb.Compare_CreateRevision
	membershipWrites
}

// membershipWrites are the writes of one socket's membership change: at
// most three (a Leave during a move deletes under both homes).
type membershipWrites struct {
	ops    [3]*etcdserverpb.RequestOp
	writes [3]struct {
		op     etcdserverpb.RequestOp
		put    etcdserverpb.RequestOp_RequestPut
		putReq etcdserverpb.PutRequest
		del    etcdserverpb.RequestOp_RequestDeleteRange
		delReq etcdserverpb.DeleteRangeRequest
	}
}

// put makes write i a put of key on lease.
func (p *membershipWrites) put(i int, key []byte, lease clientv3.LeaseID) *etcdserverpb.RequestOp {
	w := &p.writes[i]
	w.putReq.Key, w.putReq.Lease = key, int64(lease)
	w.put.RequestPut = &w.putReq
	w.op.Request = &w.put
	p.ops[i] = &w.op
	return &w.op
}

// del makes write i a delete of key.
func (p *membershipWrites) del(i int, key []byte) *etcdserverpb.RequestOp {
	w := &p.writes[i]
	w.delReq.Key = key
	w.del.RequestDeleteRange = &w.delReq
	w.op.Request = &w.del
	p.ops[i] = &w.op
	return &w.op
}

// join fills the writes of sock id, in state st, joining room (room key
// roomKey): both keys at st's write home. It returns them.
func (p *membershipWrites) join(s *Store, id string, st socketState, room string, roomKey []byte) []*etcdserverpb.RequestOp {
	h := st.writeHome()
	p.put(0, []byte(s.k.gwmOf(h.Gateway, id, room)), h.Lease)
	p.put(1, roomKey, h.Lease)
	return p.ops[:2:2]
}

// leave fills the deletes of sock id, in state st, leaving room: its gwm/
// key under every home it may have, then the room key (last, so that its
// answer is the last response). It returns them.
func (p *membershipWrites) leave(s *Store, id string, st socketState, room string, roomKey []byte) []*etcdserverpb.RequestOp {
	n := 0
	p.del(n, []byte(s.k.gwmOf(st.home.Gateway, id, room)))
	n++
	if st.move != nil {
		p.del(n, []byte(s.k.gwmOf(st.move.To.Gateway, id, room)))
		n++
	}
	p.del(n, roomKey)
	n++
	return p.ops[:n:n]
}

// pbMembershipOpOf is pbMembershipOp for the socket whose id encodes as id,
// with its room key roomKey (keys.room).
func (s *Store) pbMembershipOpOf(id string, st socketState, room string, roomKey []byte, join bool) *etcdserverpb.RequestOp {
	p := &membershipOpParts{}
	p.exists.Key, p.exists.Target, p.exists.Result = roomKey, etcdserverpb.Compare_CREATE, etcdserverpb.Compare_GREATER
	p.exists.TargetUnion = &p.create // CreateRevision 0
	p.cmps[0] = &p.exists
	p.req.Compare = p.cmps[:1:1]
	if join {
		p.req.Failure = p.join(s, id, st, room, roomKey)
	} else {
		p.req.Success = p.leave(s, id, st, room, roomKey)
	}
	p.txn.RequestTxn = &p.req
	p.op.Request = &p.txn
	return &p.op
}

// roomPrefixes are the gwm/ prefixes socket id's memberships lie under in
// state st: its home's, and during a move the destination's too.
func (s *Store) roomPrefixes(id SocketID, st socketState) []string {
	out := []string{s.k.socketRoomsPrefix(st.home.Gateway, id)}
	if st.move != nil && st.move.To.Gateway != st.home.Gateway {
		out = append(out, s.k.socketRoomsPrefix(st.move.To.Gateway, id))
	}
	return out
}

// socketStates reads the states of sockets (in order) at one revision per
// read-only transaction of at most --max-txn-ops ranges; opts may fix the
// revision. A socket without a record has exists false.
func (s *Store) socketStates(ctx context.Context, sockets []SocketID, opts ...clientv3.OpOption) ([]socketState, error) {
	out := make([]socketState, 0, len(sockets))
	per := s.budget.maxOps
	for start := 0; start < len(sockets); start += per {
		chunk := sockets[start:min(start+per, len(sockets))]
		ops := make([]clientv3.Op, len(chunk))
		for i, id := range chunk {
			ops[i] = clientv3.OpGet(s.k.socket(id.String()), append([]clientv3.OpOption{clientv3.WithRange(s.k.socketRangeEnd(id.String()))}, opts...)...)
		}
		resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read socket records: %w", err)
		}
		for i, r := range resp.Responses {
			st, err := s.decodeState(chunk[i], r.GetResponseRange().Kvs)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
	}
	return out, nil
}
