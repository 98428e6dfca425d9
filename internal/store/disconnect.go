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

// Disconnecting sockets from the back end.
//
// A Disconnect must close sockets held by gateways it does not talk to, and
// must not be lost if the membership-server dies once it has answered. So it
// is written to etcd, where the gateway already looks:
//
//  1. One transaction per group of sockets (as many as the budget allows,
//     all of them when they fit) holds, for each socket, a nested
//     transaction guarded by its record: delete the record, put a disconnect
//     notice gwm/{gateway}/!disconnect/{socket} on the socket's lease (value:
//     the close code and reason), and read the socket's rooms. A socket whose
//     record is gone is reported, not an error. From this commit on the
//     socket is gone to every reader (Join's guard fails, GetSocket finds
//     nothing), and the close is durable.
//  2. The membership keys read in step 1 are deleted in transactions within
//     the budget (as RemoveSockets does), so the call returns with none of
//     the socket's keys left but the notice.
//  3. The gateway's watch of gwm/{gateway}/ sees the notice and closes the
//     socket with its code and reason; its removal of the closed socket
//     (RemoveSockets) deletes the notice, and step 2's keys if this call did
//     not live to delete them. The notice lives on the socket's lease, so a
//     gateway that dies takes it along with its sockets.
//
// "!" cannot start a socket id, so the notice never reads as a membership
// (decodeMembershipKey skips it) and no socket's key range contains it.

// disconnectSegment is the gwm/{gateway}/ segment under which notices live.
const disconnectSegment = "!disconnect/"

// disconnectNotice is socket s's notice for gateway gw: the gateway that
// holds it (its home, or during a move the destination, which holds the
// client's connection).
func (k keys) disconnectNotice(gw string, s SocketID) string {
	return k.gwmPrefix(gw) + disconnectSegment + s.String()
}

// DisconnectNotice is what a disconnected socket's client is told.
type DisconnectNotice struct {
	// Code is the WebSocket close code (4000–4999 from the API).
	Code int `json:"code"`
	// Reason is the close frame's reason.
	Reason string `json:"reason,omitempty"`
}

// DisconnectResult reports a Disconnect.
type DisconnectResult struct {
	// Closed tells, per socket in call order, whether this call removed it
	// (false: it was already gone).
	Closed []bool
	// Disconnected counts the sockets removed.
	Disconnected int64
	// Revision is the revision from which none of the sockets' keys exist
	// (but the notices, which their gateways delete).
	Revision int64
	// Holders are the homes of the sockets removed (the gateways told to
	// close them), each once: whom to wait for to see them closed.
	Holders []Home
}

func (r *DisconnectResult) held(h Home) {
	for _, x := range r.Holders {
		if x == h {
			return
		}
	}
	r.Holders = append(r.Holders, h)
}

// Disconnect removes sockets and leaves each a disconnect notice its
// gateway acts on (see the top of this file). Sockets are removed
// atomically when they fit one transaction under the budget, in successive
// transactions otherwise. On an error, groups committed before stay
// committed: each removed socket's gateway still closes it.
func (s *Store) Disconnect(ctx context.Context, sockets []SocketID, n DisconnectNotice) (DisconnectResult, error) {
	res := DisconnectResult{Closed: make([]bool, 0, len(sockets))}
	val, err := json.Marshal(n)
	if err != nil {
		return res, err
	}
	for done := 0; done < len(sockets); {
		batch := sockets[done:min(len(sockets), done+s.budget.maxOps)]
		states, err := s.socketStates(ctx, batch)
		if err != nil {
			return res, fmt.Errorf("disconnect sockets: %w", err)
		}
		group, resp, err := s.disconnectRecords(ctx, batch, val, states)
		if err != nil {
			return res, err
		}
		res.Revision = resp.Header.Revision
		send := func(ops []*etcdserverpb.RequestOp) error {
			r, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{Success: ops})
			if err != nil {
				return fmt.Errorf("remove memberships of disconnected sockets: %w", etcdError(ctx, err))
			}
			res.Revision = r.Header.Revision
			return nil
		}
		chunks := s.budget.chunks(txnShape{}, send)
		for i, socket := range group {
			t := resp.Responses[i].GetResponseTxn()
			if !t.Succeeded && states[i].exists {
				// It moved (move.go) since its state was read: again, alone.
				r, err := s.Disconnect(ctx, []SocketID{socket}, n)
				res.Closed = append(res.Closed, r.Closed...)
				res.Disconnected += r.Disconnected
				res.Revision = max(res.Revision, r.Revision)
				for _, h := range r.Holders {
					res.held(h)
				}
				if err != nil {
					return res, err
				}
				continue
			}
			res.Closed = append(res.Closed, t.Succeeded)
			reads := t.Responses // already gone: what its removal left (the failure branch)
			if t.Succeeded {
				res.Disconnected++
				res.held(states[i].writeHome())
				reads = t.Responses[2:]
			} else if !anyKeys(reads) {
				continue
			}
			if err := s.deleteMemberships(chunks, socket, s.roomPrefixes(socket, states[i]), reads); err != nil {
				return res, err
			}
		}
		if err := chunks.flush(); err != nil {
			return res, err
		}
		done += len(group)
	}
	return res, nil
}

// disconnectRecords commits step 1 for the first of sockets that fit one
// transaction; resp.Responses[i] answers group[i].
func (s *Store) disconnectRecords(ctx context.Context, sockets []SocketID, notice []byte, states []socketState) (group []SocketID, resp *etcdserverpb.TxnResponse, err error) {
	return s.commitFirstThatFit(ctx, "disconnect sockets", sockets, func(i int, socket SocketID) *etcdserverpb.RequestOp {
		st, id := states[i], socket.String()
		guard := []*etcdserverpb.Compare{pbExists([]byte(s.k.socket(id)))}
		if st.exists {
			guard = s.guard(socket, st)
		}
		h := st.writeHome()
		ops := []*etcdserverpb.RequestOp{
			pbDelete([]byte(s.k.socket(id)), []byte(s.k.socketRangeEnd(id))),
			{Request: &etcdserverpb.RequestOp_RequestPut{RequestPut: &etcdserverpb.PutRequest{
				Key: []byte(s.k.disconnectNotice(h.Gateway, socket)), Value: notice, Lease: int64(h.Lease)}}},
		}
		var reads []*etcdserverpb.RequestOp
		for _, prefix := range s.roomPrefixes(socket, st) {
			reads = append(reads, pbRangeKeys(prefix))
		}
		op := pbTxn(guard, append(append(ops, reads...), s.pbDeleteUserKey(socket, st.rec.User)...)...)
		if !st.exists {
			// A socket already gone may still have memberships: its removal
			// (by its gateway, or by a Disconnect whose answer was lost or
			// whose server died) committed its first step only. They are
			// read here too, so that this call deletes them.
			op.GetRequestTxn().Failure = reads
		}
		return op
	})
}

// anyKeys tells whether any of reads (range responses) found a key.
func anyKeys(reads []*etcdserverpb.ResponseOp) bool {
	for _, r := range reads {
		if len(r.GetResponseRange().GetKvs()) > 0 {
			return true
		}
	}
	return false
}

// DisconnectRoom disconnects every member of room as of one revision, a
// page of members at a time; members joining after that revision stay. It
// returns how many it removed and the revision of its last transaction (the
// revision read at, for an empty room).
func (s *Store) DisconnectRoom(ctx context.Context, room string, n DisconnectNotice) (DisconnectResult, error) {
	var res DisconnectResult
	_, rev, err := s.forEachMemberPage(ctx, room, 0, func(page []SocketID, _ int64) error {
		r, err := s.Disconnect(ctx, page, n)
		res.Disconnected += r.Disconnected
		res.Revision = max(res.Revision, r.Revision)
		for _, h := range r.Holders {
			res.held(h)
		}
		return err
	})
	res.Revision = max(res.Revision, rev)
	return res, err
}

// DisconnectRequest is a notice a gateway found: close Socket with Notice.
type DisconnectRequest struct {
	Socket SocketID
	Notice DisconnectNotice
}

// DecodeDisconnectEvent tells whether ev, seen under
// MembershipWatchPrefix(gateway), is a disconnect notice being written.
func (s *Store) DecodeDisconnectEvent(gateway string, ev *clientv3.Event) (DisconnectRequest, bool) {
	if ev.Type != mvccpb.PUT {
		return DisconnectRequest{}, false
	}
	return s.decodeNotice(gateway, ev.Kv)
}

func (s *Store) decodeNotice(gateway string, kv *mvccpb.KeyValue) (DisconnectRequest, bool) {
	id, ok := strings.CutPrefix(string(kv.Key), s.k.gwmPrefix(gateway)+disconnectSegment)
	if !ok {
		return DisconnectRequest{}, false
	}
	sid, err := ParseSocketID(id)
	if err != nil {
		return DisconnectRequest{}, false
	}
	var n DisconnectNotice
	if json.Unmarshal(kv.Value, &n) != nil {
		n = DisconnectNotice{Code: 4000} // the socket goes all the same
	}
	return DisconnectRequest{Socket: sid, Notice: n}, true
}

// GatewayDisconnects lists the disconnect notices of gateway's sockets at
// revision rev (0: the current one). A gateway re-listing after a
// compaction closes these sockets too: their notices may be among the
// history it lost.
func (s *Store) GatewayDisconnects(ctx context.Context, gateway string, rev int64) ([]DisconnectRequest, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.kv.Get(ctx, s.k.gwmPrefix(gateway)+disconnectSegment, opts...)
	if err != nil {
		return nil, fmt.Errorf("list disconnect notices: %w", err)
	}
	out := make([]DisconnectRequest, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if d, ok := s.decodeNotice(gateway, kv); ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// CurrentRevision is etcd's revision now (a linearizable read).
func (s *Store) CurrentRevision(ctx context.Context) (int64, error) {
	resp, err := s.kv.Get(ctx, s.k.gatewaysPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return resp.Header.Revision, nil
}
