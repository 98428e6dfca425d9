package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The user index.
//
// A socket whose token named a user has, besides its record, a key
// users/{user}/{socket} (the user escaped like a room, so it is one key
// segment; the value is empty) on the same lease, written in the same
// transaction as the record and deleted in the same transaction as the
// record. So the user's sockets at a revision are one range read of
// users/{user}/, and a crashed gateway's entries vanish with its lease. A
// socket's user never changes: a socket id names its user for life.

// MaxUserBytes bounds a user name: the JWT subject a gateway accepts
// (wsauth.MaxSubjectBytes).
const MaxUserBytes = 256

// ErrInvalidUser reports a user name outside 1–256 bytes of UTF-8 without
// control characters, the subjects a gateway accepts.
var ErrInvalidUser = errors.New("user must be 1 to 256 bytes of UTF-8 without control characters")

// ValidateUser checks a user name against what a gateway accepts as a
// token's subject (internal/wsauth): 1 to MaxUserBytes bytes of UTF-8
// without control characters.
func ValidateUser(user string) error {
	if user == "" || len(user) > MaxUserBytes || !utf8.ValidString(user) || strings.ContainsFunc(user, unicode.IsControl) {
		return ErrInvalidUser
	}
	return nil
}

func (k keys) usersPrefix() string             { return k.prefix + "users/" }
func (k keys) userPrefix(user string) string   { return k.usersPrefix() + escapeRoom(user) + "/" }
func (k keys) user(user, socket string) string { return k.userPrefix(user) + socket }
func pbPut(key []byte, lease int64) *etcdserverpb.RequestOp {
	return &etcdserverpb.RequestOp{Request: &etcdserverpb.RequestOp_RequestPut{
		RequestPut: &etcdserverpb.PutRequest{Key: key, Lease: lease}}}
}

// decodeUserKey splits users/{user}/{socket}.
func (s *Store) decodeUserKey(key string) (user, socket string, ok bool) {
	rest, ok := strings.CutPrefix(key, s.k.usersPrefix())
	if !ok {
		return "", "", false
	}
	seg, socket, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", false
	}
	if _, err := ParseSocketID(socket); err != nil {
		return "", "", false
	}
	user, err := unescapeRoom(seg)
	if err != nil {
		return "", "", false
	}
	return user, socket, true
}

// socketRecordOps are the writes that publish a socket: its record and, when
// it has a user, its user index key, both on the socket's lease.
func (s *Store) socketRecordOps(socket SocketID, rec SocketRecord) ([]clientv3.Op, error) {
	// A new socket's home is its origin (home.go).
	rec.Gateway, rec.Lease = socket.Gateway, socket.Lease
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	ops := []clientv3.Op{clientv3.OpPut(s.k.socket(socket.String()), string(b), clientv3.WithLease(socket.Lease))}
	if rec.User != "" {
		ops = append(ops, clientv3.OpPut(s.k.user(rec.User, socket.String()), "", clientv3.WithLease(socket.Lease)))
	}
	return ops, nil
}

// UserSockets returns the sockets of user (ordered by socket id) at revision
// rev (0: the current one) and the revision read at. A user with no sockets
// has none: no error.
func (s *Store) UserSockets(ctx context.Context, user string, rev int64) ([]SocketID, int64, error) {
	prefix := s.k.userPrefix(user)
	var out []SocketID
	rev, err := s.scanKeys(ctx, prefix, prefix, rev, func(key string) bool {
		if sid, err := ParseSocketID(strings.TrimPrefix(key, prefix)); err == nil {
			out = append(out, sid)
		}
		return true
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list sockets of user: %w", err)
	}
	return out, rev, nil
}

// ListUserSockets returns up to limit of user's sockets, ordered by socket
// id, after the socket id after, each with its record and rooms, all read at
// one revision (returned); next is the cursor of the following page. A key
// under the user's prefix that names no socket is ErrCorruptRecord.
func (s *Store) ListUserSockets(ctx context.Context, user, after string, limit int) (sockets []SocketInfo, next string, rev int64, err error) {
	prefix := s.k.userPrefix(user)
	start := prefix
	if after != "" {
		start = prefix + after + "\x00"
	}
	resp, err := s.kv.Get(ctx, start, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)),
		clientv3.WithKeysOnly(), clientv3.WithLimit(int64(limit)+1))
	if err != nil {
		return nil, "", 0, fmt.Errorf("list sockets of user: %w", err)
	}
	rev = resp.Header.Revision
	var sids []SocketID
	for i, kv := range resp.Kvs {
		if i == limit {
			next = sids[len(sids)-1].String()
			break
		}
		sid, err := ParseSocketID(strings.TrimPrefix(string(kv.Key), prefix))
		if err != nil {
			// Skipping it would lose the page cursor when no socket precedes it.
			return nil, "", 0, corrupt("user index key", kv.Key, err)
		}
		sids = append(sids, sid)
	}
	// Each socket's record and rooms, at rev: two gets a socket, in
	// read-only transactions within --max-txn-ops.
	per := max(1, s.budget.maxOps/2)
	for startAt := 0; startAt < len(sids); startAt += per {
		chunk := sids[startAt:min(startAt+per, len(sids))]
		ops := make([]clientv3.Op, 0, 2*len(chunk))
		for _, sid := range chunk {
			ops = append(ops, clientv3.OpGet(s.k.socket(sid.String()), clientv3.WithRange(s.k.socketRangeEnd(sid.String())), clientv3.WithRev(rev)),
				clientv3.OpGet(s.k.socketRoomsPrefix(sid.Gateway, sid), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev)))
		}
		tr, err := s.kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, "", 0, fmt.Errorf("read sockets of user: %w", err)
		}
		for i, sid := range chunk {
			st, err := s.decodeState(sid, tr.Responses[2*i].GetResponseRange().Kvs)
			if err == nil && st.exists {
				err = st.bad
			}
			if err != nil {
				return nil, "", 0, err
			}
			if !st.exists {
				continue // the record went after the key was read, or a leftover key (RemoveSockets)
			}
			info := SocketInfo{SocketRecord: st.rec}
			if st.move != nil {
				to := st.move.To
				info.MovingTo = &to
			}
			// Rooms under the origin came with the record; those under another
			// home (a moved socket's, home.go) are read at rev too.
			origin := s.k.socketRoomsPrefix(sid.Gateway, sid)
			for _, roomsPrefix := range s.roomPrefixes(sid, st) {
				kvs := tr.Responses[2*i+1].GetResponseRange().Kvs
				if roomsPrefix != origin {
					r, err := s.kv.Get(ctx, roomsPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
					if err != nil {
						return nil, "", 0, fmt.Errorf("read sockets of user: %w", err)
					}
					kvs = r.Kvs
				}
				for _, kv := range kvs {
					room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), roomsPrefix))
					if err != nil {
						return nil, "", 0, err
					}
					info.Rooms = append(info.Rooms, room)
				}
			}
			sort.Strings(info.Rooms)
			sockets = append(sockets, info)
		}
	}
	return sockets, next, rev, nil
}

// UserChangeResult reports a Join or Leave of a user's sockets.
type UserChangeResult struct {
	// Sockets are the sockets changed, ordered by socket id, and WasMember
	// tells for each whether it was in the room before.
	Sockets   []SocketID
	WasMember []bool
	// Homes are, per socket, where the change was written (ChangeResult.Homes).
	Homes []Home
	// Revision is the revision of the last transaction (the read revision
	// when the user had no sockets): every change is in effect from it on.
	Revision int64
	// Transactions is how many etcd transactions applied the change.
	Transactions int
}

// ChangeUser makes every socket of user, as of one revision R read first,
// join (or leave) room. perTxn is how many sockets one transaction may take
// (SocketsPerChange, or SocketsPerLimitedJoin under a rooms-per-socket limit);
// up to that many, the change is one Join or Leave: atomic, all or nothing.
// More are split into transactions of perTxn sockets in socket id order,
// each atomic and committed before the next. A socket that disconnected
// after R is left out of the result (the transaction that found it gone
// changed nothing and is retried without it); a socket that connected after R
// is not selected. A user with no sockets gives an empty result at R.
func (s *Store) ChangeUser(ctx context.Context, user, room string, join bool, perTxn int) (UserChangeResult, error) {
	sockets, rev, err := s.UserSockets(ctx, user, 0)
	if err != nil {
		return UserChangeResult{}, err
	}
	res := UserChangeResult{Revision: rev}
	for len(sockets) > 0 {
		chunk := sockets[:min(perTxn, len(sockets))]
		var cr ChangeResult
		// Each retry drops the sockets found gone (at least one), so the
		// loop ends.
		for len(chunk) > 0 {
			if join {
				cr, err = s.Join(ctx, chunk, room)
			} else {
				cr, err = s.Leave(ctx, chunk, room)
			}
			var nf *SocketsNotFoundError
			if !errors.As(err, &nf) || len(nf.IDs) == 0 {
				break
			}
			chunk, err = without(chunk, nf.IDs), nil
		}
		if err != nil {
			if len(res.Sockets) == 0 {
				return res, err // nothing applied
			}
			return res, partial(int64(len(res.Sockets)), err)
		}
		if len(chunk) > 0 {
			res.Sockets = append(res.Sockets, chunk...)
			res.WasMember = append(res.WasMember, cr.WasMember...)
			res.Homes = append(res.Homes, cr.Homes...)
			res.Revision = max(res.Revision, cr.Revision)
			res.Transactions++
		}
		sockets = sockets[min(perTxn, len(sockets)):]
	}
	return res, nil
}

// without returns sockets less those whose ids are in gone, keeping order.
func without(sockets []SocketID, gone []string) []SocketID {
	drop := make(map[string]bool, len(gone))
	for _, id := range gone {
		drop[id] = true
	}
	out := make([]SocketID, 0, len(sockets))
	for _, sock := range sockets {
		if !drop[sock.String()] {
			out = append(out, sock)
		}
	}
	return out
}
