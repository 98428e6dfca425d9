// Package store is the only code that knows the etcd keyspace of the membership
// service. Its API speaks the domain (join a socket to a room, register a
// gateway); keys, transactions and leases stay inside.
//
// Keyspace, under a configurable prefix (default "/membership/"):
//
//	gateways/{gateway}                  gateway record (JSON)     gateway's lease
//	sockets/{socket}                    socket record (JSON)      gateway's lease
//	sockets/{socket}/move               move in progress (JSON)   destination's lease
//	gwm/{gateway}/{socket}/{room}       membership, per gateway   gateway's lease
//	rooms/{room}/{socket}               membership, per room      gateway's lease
//	users/{user}/{socket}               user index (empty value)  gateway's lease
//	gwm/{gateway}/!disconnect/{socket}  Disconnect's notice       gateway's lease
//
// Every key of a socket lives on the lease of the gateway holding it (its
// home, which its record names: a socket id names only the gateway that
// created it, and a socket can move, move.go), so a dead gateway's sockets
// and memberships vanish with its lease. A membership change writes both
// membership keys in one transaction guarded by the socket record (home.go),
// so no membership can outlive or predate its socket. A socket with a user
// (its token's subject) has a user index key, written and deleted in the
// transaction that writes and deletes its record. Room and user names are
// escaped reversibly ("%" and "/" percent-encoded) so that each is one key
// segment.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is the key prefix used when none is configured.
const DefaultPrefix = "/membership/"

// ErrSocketNotFound reports a socket that is not connected (never was, or its
// gateway removed it or died).
var ErrSocketNotFound = errors.New("socket not found")

// Store reads and writes the membership keyspace.
type Store struct {
	kv clientv3.KV
	// pb sends the Join/Leave transactions, built as etcd's protobuf requests
	// directly: clientv3's Op builders deep-copy every compare through
	// reflection, which was an eighth of the membership-server's CPU.
	pb    etcdserverpb.KVClient
	k     keys
	batch *batcher // nil: one etcd transaction per Join/Leave
	// budget sizes every transaction within etcd's limits; see txnbudget.go.
	budget txnBudget
	// maxRooms limits the rooms a socket may be in (0: no limit); see limit.go.
	maxRooms int
	locks    *socketLocks // with a limit: limited changes of a socket take turns
	// tw retries Join/Leave transactions lost to an etcd leader change; see retry.go.
	tw *termWatch
	// moveHook, when set (by tests), runs after each committed step of a
	// move (move.go); its error ends the move there.
	moveHook func(step string) error
}

// New returns a Store over cli with all keys under prefix ("" means DefaultPrefix).
func New(cli *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	pb := clientv3.RetryKVClient(cli)
	return &Store{kv: cli, pb: pb, k: keys{prefix: prefix}, tw: newTermWatch(pb, prefix), budget: newTxnBudget(TxnLimits{})}
}

// GatewayRecord is what a gateway publishes about itself.
type GatewayRecord struct {
	ID        string           `json:"id"`
	GRPCAddr  string           `json:"grpc_addr"`
	Version   string           `json:"version"`
	StartedAt time.Time        `json:"started_at"`
	Lease     clientv3.LeaseID `json:"lease"`
	// DrainingSince is when the gateway began to drain (a SIGTERM with
	// --drain-timeout): it takes no new sockets and its detached sockets
	// wait to be resumed elsewhere. nil while it serves.
	DrainingSince *time.Time `json:"draining_since,omitempty"`
}

// SocketRecord is what is stored about a connected socket.
type SocketRecord struct {
	ID string `json:"-"`
	// Gateway and Lease are the socket's home: the gateway holding it now
	// and the lease its keys are on. A record written before Lease existed
	// has none; its home is then the one its id names (Home).
	Gateway     string           `json:"gateway"`
	Lease       clientv3.LeaseID `json:"lease,omitempty"`
	ConnectedAt time.Time        `json:"connected_at"`
	User        string           `json:"user,omitempty"`
	// DetachedSince is when the socket's connection dropped while it stays
	// resumable (detached.go); nil while a connection is attached.
	DetachedSince *time.Time `json:"detached_since,omitempty"`
}

// Home is where the socket id lives now: the record's gateway and lease, or
// the id's own (SocketID.Origin) for a record without a lease.
func (r SocketRecord) Home(id SocketID) Home {
	if r.Gateway == "" || r.Lease == 0 {
		return id.Origin()
	}
	return Home{Gateway: r.Gateway, Lease: r.Lease}
}

// SocketInfo is a socket with the rooms it is in.
type SocketInfo struct {
	SocketRecord
	Rooms []string
	// MovingTo is the home a move in progress takes the socket to (move.go);
	// nil when none is. Its rooms then lie under both homes.
	MovingTo *Home
}

// ChangeResult reports a committed Join or Leave of several sockets.
type ChangeResult struct {
	// WasMember tells, per socket in call order, whether it was in the room
	// before the call.
	WasMember []bool
	Revision  int64
	// Homes are, per socket in call order, the home the change was written
	// at (the gateway that applies it): the socket's current home, or, for
	// a socket being moved, the home it moves to.
	Homes []Home
}

// SocketsNotFoundError names the sockets that made a Join or Leave fail.
type SocketsNotFoundError struct{ IDs []string }

func (e *SocketsNotFoundError) Error() string {
	return fmt.Sprintf("%d socket(s) not connected: %s", len(e.IDs), strings.Join(e.IDs, ", "))
}

// Is makes errors.Is(err, ErrSocketNotFound) hold.
func (e *SocketsNotFoundError) Is(target error) bool { return target == ErrSocketNotFound }

// MaxSocketsPerChange is how many distinct sockets one Join or Leave may
// name under etcd's default --max-txn-ops (128), and the most under any:
// each takes one compare and one two-operation nested transaction of the
// single etcd transaction that makes the call atomic, and etcd grants nested
// ones only what the parent does not use. Store.SocketsPerChange is the
// number under the configured limits.
const MaxSocketsPerChange = 100

// SocketsPerChange is how many distinct sockets one Join or Leave may name
// under the configured TxnLimits: MaxSocketsPerChange at etcd's default
// --max-txn-ops, proportionally fewer under a smaller one.
func (s *Store) SocketsPerChange() int { return s.budget.socketsPerChange() }

func socketExists(key string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
}

// Join adds sockets to room in one transaction: if every socket record exists,
// each socket's membership keys are written on its lease unless it already is
// a member. Joining twice writes nothing the second time. If any socket is
// missing nothing is written and the error is a *SocketsNotFoundError.
func (s *Store) Join(ctx context.Context, sockets []SocketID, room string) (ChangeResult, error) {
	return s.change(ctx, sockets, room, true)
}

// Leave removes sockets from room in one transaction guarded like Join.
func (s *Store) Leave(ctx context.Context, sockets []SocketID, room string) (ChangeResult, error) {
	return s.change(ctx, sockets, room, false)
}

func (s *Store) change(ctx context.Context, sockets []SocketID, room string, join bool) (ChangeResult, error) {
	if n := s.SocketsPerChange(); len(sockets) == 0 || len(sockets) > n {
		return ChangeResult{}, fmt.Errorf("%d sockets in one change: 1 to %d allowed", len(sockets), n)
	}
	if join && s.maxRooms > 0 {
		return s.joinLimited(ctx, sockets, room)
	}
	a, err := s.commitChange(ctx, sockets, room, join)
	if err != nil {
		return ChangeResult{}, err
	}
	if !a.applied {
		if err := notFound(a.states, sockets); err != nil {
			return ChangeResult{}, err
		}
		return ChangeResult{}, fmt.Errorf("change membership: %w", ErrConflict)
	}
	return a.result(), nil
}

// changeAnswer is what the attempt of a change that ended it answered.
type changeAnswer struct {
	rev int64 // the revision of the transaction that carried the attempt
	// states are those the attempt was guarded on when applied, or those its
	// failure branch read when not.
	states []socketState
	// applied tells that every socket's guard (and every extra compare)
	// held, so the change took effect: etcd's answer succeeded, or a flat
	// Join's only failed compare was the room key's (the socket was a
	// member already; nothing was written).
	applied bool
	// wasMember is, when applied, per socket in call order, whether it was
	// in the room before the attempt.
	wasMember []bool
}

// changeAttempts bounds how often a change is retried against the homes its
// failed guards read: each retry follows a move (or a move's step) that
// committed in between, and moves are rare.
const changeAttempts = 8

// commitChange commits one Join or Leave: guarded by every socket's home
// (home.go) and by extra compares, with a membership transaction per socket,
// or flat for one socket without extra (buildFlatChange).
// It first assumes every socket at its origin; when a socket's guard fails
// because it lives elsewhere, the failure branch has read where, and the
// change is sent again against that (a socket that never moved costs one
// round trip). An answer not applied (changeAnswer) is returned when a
// socket is gone or only extra failed. A
// transaction lost to an etcd leader change is retried within ctx's
// deadline (retry.go); the result is then that of the attempt that
// committed.
func (s *Store) commitChange(ctx context.Context, sockets []SocketID, room string, join bool) (changeAnswer, error) {
	states := make([]socketState, len(sockets))
	for i, sock := range sockets {
		states[i] = originState(sock)
	}
	return s.commitChangeFrom(ctx, sockets, states, room, join, nil)
}

// commitChangeFrom is commitChange guarded on states read by the caller,
// and on extra compares built from them: then an answer not applied is
// returned with the states it read, for the caller to build extra again.
func (s *Store) commitChangeFrom(ctx context.Context, sockets []SocketID, states []socketState, room string, join bool, extra []*etcdserverpb.Compare) (changeAnswer, error) {
	flat := flatChange(len(sockets), extra)
	for attempt := 0; ; attempt++ {
		resp, rev, err := s.sendChange(ctx, sockets, states, room, join, extra)
		if err != nil {
			return changeAnswer{}, err
		}
		if resp.Succeeded {
			return changeAnswer{rev: rev, states: states, applied: true, wasMember: wasMembers(resp, flat, join)}, nil
		}
		moved, gone := false, false
		now := make([]socketState, len(sockets))
		for i, sock := range sockets {
			if now[i], err = s.decodeState(sock, resp.Responses[i].GetResponseRange().Kvs); err != nil {
				return changeAnswer{}, err
			}
			gone = gone || !now[i].exists
			moved = moved || !states[i].holdsOn(now[i])
		}
		if flat && join && !moved && resp.Responses[1].GetResponseRange().GetCount() > 0 {
			// The guard held (holdsOn implies it), so the room key's compare
			// failed: the socket is a member already, at the home the guard
			// names, and the answer's revision is the one it was read at.
			return changeAnswer{rev: rev, states: states, applied: true, wasMember: []bool{true}}, nil
		}
		if gone || !moved || extra != nil || attempt+1 == changeAttempts {
			return changeAnswer{rev: rev, states: now}, nil
		}
		states = now
	}
}

// wasMembers reads, from the succeeded answer of a change, whether each
// socket was in the room before it: the nested membership transaction
// succeeded (its compare is the room key's existence); for a flat Leave,
// the room key's delete (the last operation) deleted it; a flat Join
// succeeds only for a socket that was not a member.
func wasMembers(resp *etcdserverpb.TxnResponse, flat, join bool) []bool {
	if flat {
		if join {
			return []bool{false}
		}
		last := resp.Responses[len(resp.Responses)-1]
		return []bool{last.GetResponseDeleteRange().GetDeleted() > 0}
	}
	was := make([]bool, len(resp.Responses))
	for i, r := range resp.Responses {
		was[i] = r.GetResponseTxn().Succeeded
	}
	return was
}

// sendChange sends one attempt of commitChange, guarded on states.
func (s *Store) sendChange(ctx context.Context, sockets []SocketID, states []socketState, room string, join bool, extra []*etcdserverpb.Compare) (*etcdserverpb.TxnResponse, int64, error) {
	call, keys := s.buildChange(sockets, states, room, join, extra, s.batch != nil)
	need, size, err := s.budget.nestedCost(call)
	if err != nil {
		return nil, 0, err
	}
	var resp *etcdserverpb.TxnResponse
	var rev int64
	if s.batch != nil {
		resp, rev, err = s.batch.do(ctx, call, keys, need, size)
	} else {
		resp, err = s.tw.txnRetrying(ctx, s.pb, call)
		if err == nil {
			rev = resp.Header.Revision
		}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("change membership: %w", etcdError(ctx, err))
	}
	return resp, rev, nil
}

// buildChange builds the transaction of one attempt of a change guarded on
// states, and, when withKeys, the keys that keep it apart from other calls
// in a batch (batcher.do).
func (s *Store) buildChange(sockets []SocketID, states []socketState, room string, join bool, extra []*etcdserverpb.Compare, withKeys bool) (*etcdserverpb.TxnRequest, []string) {
	if flatChange(len(sockets), extra) {
		return s.buildFlatChange(sockets[0], states[0], room, join, withKeys)
	}
	call := &etcdserverpb.TxnRequest{
		Compare: make([]*etcdserverpb.Compare, 0, len(sockets)+len(extra)),
		Success: make([]*etcdserverpb.RequestOp, len(sockets)),
		Failure: make([]*etcdserverpb.RequestOp, len(sockets)),
	}
	var keys []string
	if withKeys {
		keys = make([]string, len(sockets), 2*len(sockets))
	}
	// Each socket's id is encoded once, and each key built once: the guard
	// and the failure branch's read share the record's range, the batch
	// keys and the membership transaction the room key.
	for i, sock := range sockets {
		id := sock.String()
		rec, end := s.k.socketRange(id)
		roomKey := s.k.room(room, id)
		call.Compare = append(call.Compare, s.guardOf(id, rec, end, states[i])...)
		call.Failure[i] = pbRange(rec, end, false)
		call.Success[i] = s.pbMembershipOpOf(id, states[i], room, []byte(roomKey), join)
		if withKeys {
			keys[i] = roomKey
			if len(extra) > 0 {
				// etcd evaluates every compare of a transaction, nested ones
				// included, before it writes anything: two limited Joins of
				// one socket in one transaction would both pass their guard.
				// The socket's record keeps them in separate transactions.
				keys = append(keys, string(rec))
			}
		}
	}
	call.Compare = append(call.Compare, extra...)
	return call, keys
}

// flatChange tells whether a change of n sockets guarded by extra is built
// flat (buildFlatChange): the common case, one socket and no extra compares.
func flatChange(n int, extra []*etcdserverpb.Compare) bool { return n == 1 && len(extra) == 0 }

// flatChangeParts are the messages of a flat change, allocated together.
type flatChangeParts struct {
	call  etcdserverpb.TxnRequest
	cmps  [3]*etcdserverpb.Compare // the guard (one compare, two during a move), a Join's room compare
	guard leaseGuard
	// absent is a Join's compare: the room key does not exist.
	absent  etcdserverpb.Compare
	create  etcdserverpb.Compare_CreateRevision
	failure [2]*etcdserverpb.RequestOp
	reads   [2]rangeParts
	keys    [1]string
	membershipWrites
}

// buildFlatChange is buildChange for one socket without extra compares: one
// transaction, the membership's writes directly under the guard, where the
// general shape nests a membership transaction (pbMembershipOp) per socket
// guarded by the room key. A level fewer is an unmarshal, a compare and a
// response fewer for etcd.
//
//	Leave: Compare [guard]; Success [delete gwm/ (both homes during a move),
//	       delete rooms/]; Failure [range record..marker]
//	Join:  Compare [guard, rooms/ CREATE == 0]; Success [put gwm/, put
//	       rooms/]; Failure [range record..marker, count rooms/]
//
// A Leave of a socket not in the room deletes nothing, which etcd neither
// writes nor watches; the room key's delete tells was_member. A Join of a
// member fails with the guard holding (commitChangeFrom).
func (s *Store) buildFlatChange(sock SocketID, st socketState, room string, join, withKeys bool) (*etcdserverpb.TxnRequest, []string) {
	p := &flatChangeParts{}
	id := sock.String()
	rec, end := s.k.socketRange(id)
	roomKey := s.k.room(room, id)
	rk := []byte(roomKey)
	cmps := p.cmps[:0]
	if st.move == nil {
		cmps = append(cmps, p.guard.fill(rec, end, st.home.Lease))
	} else {
		cmps = append(cmps, s.guardOf(id, rec, end, st)...)
	}
	p.failure[0] = p.reads[0].fill(rec, end)
	if join {
		p.absent.Key, p.absent.Target, p.absent.Result = rk, etcdserverpb.Compare_CREATE, etcdserverpb.Compare_EQUAL
		p.absent.TargetUnion = &p.create // CreateRevision 0
		cmps = append(cmps, &p.absent)
		p.reads[1].req.CountOnly = true
		p.failure[1] = p.reads[1].fill(rk, nil)
		p.call.Success = p.join(s, id, st, room, rk)
		p.call.Failure = p.failure[:2:2]
	} else {
		p.call.Success = p.leave(s, id, st, room, rk)
		p.call.Failure = p.failure[:1:1]
	}
	p.call.Compare = cmps
	if !withKeys {
		return &p.call, nil
	}
	p.keys[0] = roomKey
	return &p.call, p.keys[:1:1]
}

// countRooms counts the keys under prefixes at revision rev.
func (s *Store) countRooms(ctx context.Context, prefixes []string, rev int64) (int64, error) {
	var n int64
	for _, prefix := range prefixes {
		resp, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
		if err != nil {
			return 0, fmt.Errorf("read rooms per socket: %w", err)
		}
		n += resp.Count
	}
	return n, nil
}

// notFound names the sockets whose records a change not applied found
// missing (states, as commitChange read them); nil when all were there
// (another compare failed).
func notFound(states []socketState, sockets []SocketID) error {
	nf := &SocketsNotFoundError{}
	for i, st := range states {
		if !st.exists {
			nf.IDs = append(nf.IDs, sockets[i].String())
		}
	}
	if len(nf.IDs) == 0 {
		return nil
	}
	return nf
}

// result is the ChangeResult of an applied answer.
func (a changeAnswer) result() ChangeResult {
	res := ChangeResult{Revision: a.rev, WasMember: a.wasMember, Homes: make([]Home, len(a.states))}
	for i, st := range a.states {
		res.Homes[i] = st.writeHome()
	}
	return res
}

// etcdError turns what the raw protobuf client returns into what clientv3
// would: the caller's own context error, or etcd's typed errors.
func etcdError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return rpctypes.Error(err)
}

func pbExists(key []byte) *etcdserverpb.Compare {
	return &etcdserverpb.Compare{Key: key, Target: etcdserverpb.Compare_CREATE,
		Result: etcdserverpb.Compare_GREATER, TargetUnion: &etcdserverpb.Compare_CreateRevision{CreateRevision: 0}}
}

// GetSocket reads a socket record and its rooms at one revision. A socket
// being moved (move.go) has MovingTo set and its rooms read under both homes.
func (s *Store) GetSocket(ctx context.Context, socket SocketID) (SocketInfo, int64, error) {
	id := socket.String()
	// Rooms are read under the id's origin in the same request: for a socket
	// that never moved, one round trip.
	origin := s.k.socketRoomsPrefix(socket.Gateway, socket)
	resp, err := s.kv.Txn(ctx).
		If(socketExists(s.k.socket(id))).
		Then(
			clientv3.OpGet(s.k.socket(id), clientv3.WithRange(s.k.socketRangeEnd(id))),
			clientv3.OpGet(origin, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		).
		Commit()
	if err != nil {
		return SocketInfo{}, 0, fmt.Errorf("get socket: %w", err)
	}
	if !resp.Succeeded {
		return SocketInfo{}, 0, ErrSocketNotFound
	}
	rev := resp.Header.Revision
	st, err := s.decodeState(socket, resp.Responses[0].GetResponseRange().Kvs)
	if err == nil {
		err = st.bad
	}
	if err != nil {
		return SocketInfo{}, 0, err
	}
	info := SocketInfo{SocketRecord: st.rec}
	if st.move != nil {
		to := st.move.To
		info.MovingTo = &to
	}
	for _, prefix := range s.roomPrefixes(socket, st) {
		kvs := resp.Responses[1].GetResponseRange().Kvs
		if prefix != origin {
			r, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
			if err != nil {
				return SocketInfo{}, 0, fmt.Errorf("get socket: %w", err)
			}
			kvs = r.Kvs
		}
		for _, kv := range kvs {
			room, err := unescapeRoom(strings.TrimPrefix(string(kv.Key), prefix))
			if err != nil {
				return SocketInfo{}, 0, err
			}
			info.Rooms = append(info.Rooms, room)
		}
	}
	sort.Strings(info.Rooms)
	return info, rev, nil
}

// RoomCount is a room and how many sockets are in it. TargetIndex.ListRooms
// lists them in name order: the keyspace's order of escaped room segments is
// not the order of names (' ' < '/' < "%2F"), so etcd cannot page by name.
type RoomCount struct {
	Room    string
	Members int64
	// Users counts the distinct users among the members (presence.go).
	Users int64
}

// scanKeys visits the keys from start to the end of prefix, in order, at one
// revision (rev 0: the current one), reading a page at a time, until visit
// returns false. It returns the revision read at.
func (s *Store) scanKeys(ctx context.Context, prefix, start string, rev int64, visit func(key string) bool) (int64, error) {
	return s.scan(ctx, prefix, start, rev, true, func(kv *mvccpb.KeyValue) bool { return visit(string(kv.Key)) })
}

// scan is scanKeys over whole key-values (values too unless keysOnly).
func (s *Store) scan(ctx context.Context, prefix, start string, rev int64, keysOnly bool, visit func(*mvccpb.KeyValue) bool) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, start, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if !visit(kv) {
				return rev, nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Member is a socket in a room.
type Member struct {
	SocketID string
	Gateway  string
	User     string // the socket's authenticated user, if any
	// DetachedSince is the socket record's: when its connection dropped,
	// nil while one is attached.
	DetachedSince *time.Time
}

// ListMembers returns up to limit members of room ordered by socket id,
// starting after socket id after; next is the cursor of the following page.
func (s *Store) ListMembers(ctx context.Context, room, after string, limit int) (members []Member, next string, rev int64, err error) {
	prefix := s.k.roomPrefix(room)
	start := prefix
	if after != "" {
		start = prefix + after + "\x00"
	}
	resp, err := s.kv.Get(ctx, start,
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)),
		clientv3.WithKeysOnly(),
		clientv3.WithLimit(int64(limit)+1))
	if err != nil {
		return nil, "", 0, fmt.Errorf("list members: %w", err)
	}
	for i, kv := range resp.Kvs {
		if i == limit {
			next = members[limit-1].SocketID
			break
		}
		members = append(members, Member{SocketID: strings.TrimPrefix(string(kv.Key), prefix)})
	}
	if err := s.fillUsers(ctx, members, resp.Header.Revision); err != nil {
		return nil, "", 0, err
	}
	return members, next, resp.Header.Revision, nil
}

// fillUsers reads the socket records of members at revision rev, the one
// their memberships were listed at, and copies each socket's user and
// gateway: its current home's, which a moved socket's id does not name (a
// socket being moved shows the gateway it moves from until the move ends).
func (s *Store) fillUsers(ctx context.Context, members []Member, rev int64) error {
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.SocketID
	}
	records, err := s.readSocketRecords(ctx, ids, clientv3.WithRev(rev))
	if err != nil {
		return fmt.Errorf("list members: %w", err)
	}
	for i, r := range records {
		kvs := r.GetKvs()
		if len(kvs) == 0 {
			continue // memberships go with their socket in one transaction; this cannot happen, and no user is shown if it does
		}
		var rec SocketRecord
		if err := json.Unmarshal(kvs[0].Value, &rec); err != nil {
			return corrupt("socket record", kvs[0].Key, err)
		}
		members[i].User, members[i].DetachedSince = rec.User, rec.DetachedSince
		if sid, err := ParseSocketID(ids[i]); err == nil {
			members[i].Gateway = rec.Home(sid).Gateway
		}
	}
	return nil
}

// readSocketRecords gets the records of the sockets ids (one range response
// each, in order) in read-only transactions of at most --max-txn-ops gets.
// (Read-only transactions are not raft requests: --max-request-bytes does not
// apply, and a socket key is small.)
func (s *Store) readSocketRecords(ctx context.Context, ids []string, opts ...clientv3.OpOption) ([]*etcdserverpb.RangeResponse, error) {
	out := make([]*etcdserverpb.RangeResponse, 0, len(ids))
	per := s.budget.maxOps
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		ops := make([]clientv3.Op, len(chunk))
		for i, id := range chunk {
			ops[i] = clientv3.OpGet(s.k.socket(id), opts...)
		}
		resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read socket records: %w", err)
		}
		for _, r := range resp.Responses {
			out = append(out, r.GetResponseRange())
		}
	}
	return out, nil
}

// Targets is who must receive a broadcast, read at one revision.
type Targets struct {
	Revision int64
	// Gateways maps each gateway holding at least one target socket to its record.
	Gateways map[string]GatewayRecord
}

// Gateway reads one gateway's record.
func (s *Store) Gateway(ctx context.Context, id string) (GatewayRecord, error) {
	resp, err := s.kv.Get(ctx, s.k.gateway(id))
	if err != nil {
		return GatewayRecord{}, fmt.Errorf("get gateway: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return GatewayRecord{}, fmt.Errorf("gateway %q: %w", id, ErrGatewayNotFound)
	}
	var rec GatewayRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return GatewayRecord{}, corrupt("gateway record", resp.Kvs[0].Key, err)
	}
	return rec, nil
}

// ErrGatewayNotFound reports a gateway with no live record.
var ErrGatewayNotFound = errors.New("gateway not registered")
