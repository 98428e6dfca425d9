package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/utils/third_party/forked/golang/btree"

	"github.com/socketrooms/membership/internal/revwait"
	"github.com/socketrooms/membership/internal/watchfollow"
)

// TargetIndex answers "which gateways hold members of these rooms" and
// "which rooms exist, in name order, with how many members" without reading
// the rooms' member keys on every call. It is derived from etcd alone: a
// listing of gwm/ (memberships, under the gateway holding each socket),
// users/, gateways/ and sockets/ (gatewaycounts.go) at one revision, then a
// watch from the next (internal/watchfollow), so it can always be rebuilt,
// and every replica has its own. A watch interrupted by an election or a lost connection resumes
// from the applied revision; only a compaction of the history it needs makes
// it list again.
//
// Consistency: Targets and ListRooms first read etcd's current revision R
// with a linearizable request, then wait until the index has applied every
// change up to R (asking for watch progress when nothing changes). Any
// membership committed before the call began is therefore counted, exactly
// as if the member keys had been read at R.
type TargetIndex struct {
	s   *Store
	cli *clientv3.Client
	log *slog.Logger

	mu      sync.RWMutex
	rooms   map[string]*roomEntry    // room → its entry, also in byName
	byName  *btree.BTree[*roomEntry] // rooms with members, by name (byte-wise)
	total   int                      // memberships, the sum of members
	records map[string]GatewayRecord // gateway → record
	sockets socketCounts             // sockets per home gateway (gatewaycounts.go)
	// socketUsers holds the user of each socket with one (presence.go).
	socketUsers map[string]*userRef
	rev         int64 // the revision the fields above reflect
	// applied is 0 until the first listing is in; etcd revisions start at 1.
	// It is advanced after rev, outside mu.
	applied *revwait.Waiter
	follow  *watchfollow.Follower
	stopped chan struct{} // closed when Run returns: waiters stop waiting
	// gatewaysChanged receives (without blocking, coalesced) after a
	// gateways/ record is put or deleted, or the index lists again.
	gatewaysChanged chan struct{}
	loaded          chan struct{} // closed once the first listing is in
	load            sync.Once
	// gone remembers, for a while, where rooms had members: see
	// TargetTombstoneTTL.
	gone tombstones
}

// TargetTombstoneTTL is how long the index remembers that a gateway's last
// member of a room went, at which revision D (a tombstone): Targets of a
// Broadcast whose revision R is below D still names that gateway. A socket
// resumed on another gateway moves its memberships there (move.go), and the
// old gateway delivers to it every Broadcast with R below the move's
// revision (docs/ARCHITECTURE.md, "Connection state recovery"); an index
// that has applied the move before such a Broadcast resolves its targets
// would otherwise leave that gateway out, and the message would reach
// neither. Any Broadcast resolved later than this after the move names a
// revision above D (Targets reads etcd's current revision first), unless its
// caller stalled that long between reading the revision and the index: the
// gateway then no longer holds the socket either.
const TargetTombstoneTTL = 2 * time.Minute

// maxTargetTombstones bounds the tombstones kept: past it the oldest go
// first. A tombstone costs a few dozen bytes; this is far more rooms than
// gateways empty in TargetTombstoneTTL when sockets move a few at a time
// (a gateway that dies empties all its rooms at once; its record goes with
// its lease, and a gateway without a record is never a target anyway).
const maxTargetTombstones = 1 << 16

// tombstones are the (room, gateway, revision) triples of rooms a gateway
// stopped holding members of, oldest first. Guarded by TargetIndex.mu.
type tombstones struct {
	byRoom map[string]map[string]int64 // room → gateway → revision
	queue  []tombstoneEntry            // oldest first
	head   int                         // queue[head:] are live
}

type tombstoneEntry struct {
	room, gateway string
	rev           int64
	at            time.Time
}

// put records that room's last member on gateway went at rev.
func (t *tombstones) put(room, gateway string, rev int64, now time.Time) {
	if t.byRoom == nil {
		t.byRoom = map[string]map[string]int64{}
	}
	m := t.byRoom[room]
	if m == nil {
		m = map[string]int64{}
		t.byRoom[room] = m
	}
	m[gateway] = max(m[gateway], rev)
	t.queue = append(t.queue, tombstoneEntry{room: room, gateway: gateway, rev: rev, at: now})
	t.expire(now)
}

// expire drops the tombstones older than TargetTombstoneTTL, and the oldest
// past maxTargetTombstones.
func (t *tombstones) expire(now time.Time) {
	for t.head < len(t.queue) && (len(t.queue)-t.head > maxTargetTombstones || now.Sub(t.queue[t.head].at) > TargetTombstoneTTL) {
		e := t.queue[t.head]
		t.queue[t.head] = tombstoneEntry{}
		t.head++
		if m := t.byRoom[e.room]; m != nil && m[e.gateway] == e.rev {
			delete(m, e.gateway)
			if len(m) == 0 {
				delete(t.byRoom, e.room)
			}
		}
	}
	if t.head > 0 && t.head*2 >= len(t.queue) {
		// Compact once half the queue is spent: amortized O(1) per entry.
		t.queue = append(t.queue[:0], t.queue[t.head:]...)
		t.head = 0
	}
}

// after calls f for each gateway whose last member of room went at a
// revision above rev.
func (t *tombstones) after(room string, rev int64, f func(gateway string)) {
	for gw, d := range t.byRoom[room] {
		if rev < d {
			f(gw)
		}
	}
}

// roomEntry is one room with members: how many, and on which gateways.
type roomEntry struct {
	name     string
	members  int
	gateways map[string]int // gateway → members there
	users    map[string]int // user → member sockets of that user (presence.go)
}

// btreeDegree is the B-tree's degree: nodes of up to 63 rooms.
const btreeDegree = 32

func newRoomTree() *btree.BTree[*roomEntry] {
	return btree.New(btreeDegree, func(a, b *roomEntry) bool { return a.name < b.name })
}

// NewTargetIndex returns an index over s; Run keeps it current.
func (s *Store) NewTargetIndex(cli *clientv3.Client, log *slog.Logger) *TargetIndex {
	x := &TargetIndex{s: s, cli: cli, log: log, applied: revwait.New(), stopped: make(chan struct{}),
		rooms: map[string]*roomEntry{}, byName: newRoomTree(), records: map[string]GatewayRecord{},
		socketUsers: map[string]*userRef{}, sockets: newSocketCounts(), gatewaysChanged: make(chan struct{}, 1)}
	// One watch over the whole keyspace: gwm/, users/, gateways/ and
	// sockets/ changes, in revision order, on one stream whose progress
	// covers all.
	x.follow = watchfollow.New(watchfollow.Config{
		Client:  cli,
		Prefix:  s.k.prefix,
		List:    x.list,
		Apply:   x.apply,
		Applied: x.applied,
		Logger:  log.With("view", "broadcast target index"),
	})
	x.loaded = make(chan struct{})
	return x
}

// Loaded is closed once the index holds its first listing of etcd: before
// that, Targets and ListRooms wait for it, so a replica should not report
// itself serving.
func (x *TargetIndex) Loaded() <-chan struct{} { return x.loaded }

// Run lists and watches until ctx ends; see watchfollow.Follower.Run.
// Once it returns, calls waiting for the index fail with ErrShuttingDown
// instead of waiting out their deadlines. Call it once.
func (x *TargetIndex) Run(ctx context.Context) {
	defer close(x.stopped)
	_ = x.follow.Run(ctx) // retries listings forever: ends only with ctx
}

// Listings is how many times the index has listed etcd: once at start, then
// once per compaction that outran its watch.
func (x *TargetIndex) Listings() int64 { return x.follow.Listings() }

// list loads the index at one revision, replacing what it held.
func (x *TargetIndex) list(ctx context.Context) (int64, error) {
	rooms := map[string]*roomEntry{}
	byName := newRoomTree()
	total := 0
	records := map[string]GatewayRecord{}
	// The user index first, then the rooms at the same revision: every
	// member's user is known when its membership is counted.
	tmp := &TargetIndex{s: x.s, rooms: rooms, socketUsers: map[string]*userRef{}}
	usersPrefix := x.s.k.usersPrefix()
	rev, err := x.s.scanKeys(ctx, usersPrefix, usersPrefix, 0, func(key string) bool {
		if user, socket, ok := x.s.decodeUserKey(key); ok {
			tmp.userKeyLocked(socket, user, 1)
		} else {
			x.corrupt(key)
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("list users: %w", err)
	}
	gwmRoot := x.s.k.gwmRoot()
	_, err = x.s.scanKeys(ctx, gwmRoot, gwmRoot, rev, func(key string) bool {
		if room, gw, socket, ok, notice := x.s.decodeGwmKey(key); ok {
			add(rooms, byName, room, gw, 1)
			tmp.membershipUserLocked(room, socket, 1)
			total++
		} else if !notice {
			x.corrupt(key)
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("list rooms: %w", err)
	}
	gws, err := x.cli.Get(ctx, x.s.k.gatewaysPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return 0, fmt.Errorf("list gateways: %w", err)
	}
	for _, kv := range gws.Kvs {
		var rec GatewayRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			records[rec.ID] = rec
		} else {
			x.corrupt(string(kv.Key))
		}
	}
	sockets, err := x.listSockets(ctx, rev)
	if err != nil {
		return 0, err
	}
	x.mu.Lock()
	x.rooms, x.byName, x.total, x.records, x.rev = rooms, byName, total, records, rev
	x.sockets = sockets
	x.socketUsers = tmp.socketUsers
	x.mu.Unlock()
	x.signalGateways() // records may have gone while the watch was behind
	x.load.Do(func() { close(x.loaded) })
	return rev, nil
}

// apply applies watch events; the index then reflects rev.
func (x *TargetIndex) apply(events []*clientv3.Event, rev int64) {
	x.mu.Lock()
	gateways := false
	for _, ev := range events {
		gateways = x.applyLocked(ev) || gateways
	}
	x.rev = max(x.rev, rev)
	x.gone.expire(time.Now())
	x.mu.Unlock()
	if gateways {
		x.signalGateways()
	}
}

// GatewayChanges receives a value after gateway records changed: a record
// put or deleted (a registration, a lease's expiry or revocation), or the
// index listed again. Values coalesce (one pending at most) and are sent
// after the change is visible to Gateway; a reader that reads the records
// after each receive misses no change. Meant for one reader.
func (x *TargetIndex) GatewayChanges() <-chan struct{} { return x.gatewaysChanged }

func (x *TargetIndex) signalGateways() {
	select {
	case x.gatewaysChanged <- struct{}{}:
	default:
	}
}

// Gateway returns a gateway's record as the index holds it now; ok is false
// when the gateway is not registered as of the index's applied revision.
func (x *TargetIndex) Gateway(id string) (rec GatewayRecord, ok bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	rec, ok = x.records[id]
	return rec, ok
}

// GatewayAsOf is Gateway for a caller that needs a record at least as recent
// as revision rev: ok is false unless the index has applied rev or later and
// holds the gateway. It does not wait.
func (x *TargetIndex) GatewayAsOf(id string, rev int64) (rec GatewayRecord, ok bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.rev < rev {
		return GatewayRecord{}, false
	}
	rec, ok = x.records[id]
	return rec, ok
}

// applyLocked applies one event; it reports whether a gateway record changed.
func (x *TargetIndex) applyLocked(ev *clientv3.Event) bool {
	key := string(ev.Kv.Key)
	if x.applySocketLocked(key, ev) {
		return false
	}
	room, gw, socket, ok, notice := x.s.decodeGwmKey(key)
	if ok {
		switch {
		case ev.Type == mvccpb.DELETE:
			x.membershipUserLocked(room, socket, -1)
			add(x.rooms, x.byName, room, gw, -1)
			x.total--
			if e := x.rooms[room]; e == nil || e.gateways[gw] == 0 {
				x.gone.put(room, gw, ev.Kv.ModRevision, time.Now())
			}
		case ev.IsCreate():
			add(x.rooms, x.byName, room, gw, 1)
			x.membershipUserLocked(room, socket, 1)
			x.total++
		}
		return false
	}
	if user, socket, ok := x.s.decodeUserKey(key); ok {
		switch {
		case ev.Type == mvccpb.DELETE:
			x.userKeyLocked(socket, user, -1)
		case ev.IsCreate():
			x.userKeyLocked(socket, user, 1)
		}
		return false
	}
	if id, ok := strings.CutPrefix(key, x.s.k.gatewaysPrefix()); ok {
		if ev.Type == mvccpb.DELETE {
			delete(x.records, id)
			return true
		}
		var rec GatewayRecord
		if json.Unmarshal(ev.Kv.Value, &rec) == nil {
			x.records[rec.ID] = rec
		} else {
			x.corrupt(key)
		}
		return true
	}
	if strings.HasPrefix(key, x.s.k.gwmRoot()) && !notice {
		x.corrupt(key)
	}
	return false
}

// corrupt reports a key the index skips because it does not decode: a
// broadcast must not fail for every room because one key is bad, so the key
// is left out (its room is not listed, its gateway not targeted) and named
// in the log for the operator.
func (x *TargetIndex) corrupt(key string) {
	x.log.Error("broadcast target index skips a key that does not decode", "key", key, "err", ErrCorruptRecord)
}

// add changes the members of room on gateway gw by d, keeping rooms and
// byName holding exactly the rooms with members.
func add(rooms map[string]*roomEntry, byName *btree.BTree[*roomEntry], room, gw string, d int) {
	e := rooms[room]
	if e == nil {
		if d <= 0 {
			return
		}
		e = &roomEntry{name: room, gateways: map[string]int{}}
		rooms[room] = e
		byName.ReplaceOrInsert(e)
	}
	n := e.gateways[gw] + d
	if n <= 0 {
		e.members -= e.gateways[gw]
		delete(e.gateways, gw)
	} else {
		e.members += d
		e.gateways[gw] = n
	}
	if len(e.gateways) == 0 {
		delete(rooms, room)
		byName.Delete(e)
	}
}

// Sizes returns how many rooms have members, how many memberships there are
// and how many gateways are registered, as of the index's applied revision.
func (x *TargetIndex) Sizes() (rooms, memberships, gateways int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.rooms), x.total, len(x.records)
}

// Targets returns the gateways holding members of any of rooms (every
// gateway when rooms is nil), as of a revision at least etcd's current one
// when the call began; Revision is that revision.
//
// A gateway whose last member of a room went at a revision above Revision
// (within TargetTombstoneTTL) is named too: it may hold a member as of
// Revision, which is what it delivers by (a socket that moved to another
// gateway gets from the old one every message below the move's revision).
func (x *TargetIndex) Targets(ctx context.Context, rooms []string) (Targets, error) {
	rev, err := x.catchUp(ctx)
	if err != nil {
		return Targets{}, err
	}
	return x.targetsAt(rooms, rev), nil
}

// targetsAt is Targets as of revision rev, from the index as it is (which
// has applied rev or later).
func (x *TargetIndex) targetsAt(rooms []string, rev int64) Targets {
	x.mu.RLock()
	defer x.mu.RUnlock()
	t := Targets{Revision: rev, Gateways: map[string]GatewayRecord{}}
	if rooms == nil {
		for id, rec := range x.records {
			t.Gateways[id] = rec
		}
	}
	for _, room := range rooms {
		x.gone.after(room, rev, func(gw string) {
			if rec, ok := x.records[gw]; ok {
				t.Gateways[gw] = rec
			}
		})
		e := x.rooms[room]
		if e == nil {
			continue
		}
		for gw := range e.gateways {
			if rec, ok := x.records[gw]; ok {
				t.Gateways[gw] = rec
			}
		}
	}
	return t
}

// ListRooms returns up to limit (≥ 1) rooms that have members, with their
// member counts, in byte-wise order of their names, starting after the room
// named after ("" for the first page); next is the last room of the page when
// more follow ("" on the last page). The page is one snapshot of the index at
// revision rev, at least etcd's current revision when the call began. Paging
// with next visits every room that has members throughout exactly once, in
// order, whatever joins and leaves happen between pages. A page costs
// O(log rooms + limit).
func (x *TargetIndex) ListRooms(ctx context.Context, after string, limit int) (rooms []RoomCount, next string, rev int64, err error) {
	if _, err := x.catchUp(ctx); err != nil {
		return nil, "", 0, err
	}
	rooms, next, rev = x.page(after, limit)
	return rooms, next, rev, nil
}

// page reads one page of ListRooms from the index as it is.
func (x *TargetIndex) page(after string, limit int) (rooms []RoomCount, next string, rev int64) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	rooms = make([]RoomCount, 0, min(limit, x.byName.Len()))
	x.byName.AscendGreaterOrEqual(&roomEntry{name: after}, func(e *roomEntry) bool {
		if e.name == after {
			return true
		}
		if len(rooms) == limit {
			next = rooms[limit-1].Room // a further room exists
			return false
		}
		rooms = append(rooms, RoomCount{Room: e.name, Members: int64(e.members), Users: int64(len(e.users))})
		return true
	})
	return rooms, next, x.rev
}

// catchUp reads etcd's current revision with a linearizable request and
// waits until the index has applied it; it returns that revision.
func (x *TargetIndex) catchUp(ctx context.Context) (int64, error) {
	// A stopped index may already hold etcd's current revision; it must
	// still refuse, since it will follow no change from now on.
	select {
	case <-x.stopped:
		return 0, errIndexStopped
	default:
	}
	resp, err := x.cli.Get(clientv3.WithRequireLeader(ctx), x.s.k.gatewaysPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	rev := resp.Header.Revision
	if _, err := x.applied.Wait(ctx, x.stopped, rev, 50*time.Millisecond, x.follow.RequestProgress); err != nil {
		if errors.Is(err, revwait.ErrStopped) {
			err = errIndexStopped
		}
		return 0, err
	}
	return rev, nil
}

var errIndexStopped = fmt.Errorf("broadcast target index stopped: %w", ErrShuttingDown)

// decodeGwmKey splits gwm/{gateway}/{socket}/{room} into the room, the
// gateway holding the socket (its home: the key's gateway, not the one its
// id names, so the index follows a socket that moved) and the socket.
// notice is true for a Disconnect's notice (disconnect.go), which is no
// membership.
//
// The index counts memberships by their gwm/ keys, not their rooms/ keys:
// each membership has exactly one of each, but only the gwm/ key names its
// home, and a move (move.go) replaces it by one under the new home in the
// transaction that moves the membership.
func (s *Store) decodeGwmKey(key string) (room, gateway, socket string, ok, notice bool) {
	rest, ok := strings.CutPrefix(key, s.k.gwmRoot())
	if !ok {
		return "", "", "", false, false
	}
	gateway, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return "", "", "", false, false
	}
	if strings.HasPrefix(rest, disconnectSegment) {
		return "", "", "", false, true
	}
	socket, seg, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", "", false, false
	}
	if _, err := ParseSocketID(socket); err != nil {
		return "", "", "", false, false
	}
	room, err := unescapeRoom(seg)
	if err != nil {
		return "", "", "", false, false
	}
	return room, gateway, socket, true, false
}
