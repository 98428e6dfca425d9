package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// The ordered stream of membership changes (WatchMembership).
//
// One etcd watch per stream covers rooms/ and sockets/ (one key range: the
// keyspace holds nothing between them), so events arrive in revision order
// and every revision's events in one response. Socket records give
// CONNECTED (a record created) and DISCONNECTED (deleted); room keys give
// JOINED and LEFT.
//
// Users. A room key carries no user, and a deleted socket record's value is
// gone from the event, so the stream keeps a socket → user map, seeded at
// its start revision from the socket records and kept by the events. That
// was chosen over the watch's prev_kv: prev_kv would give the user of a
// deleted record only, not of a room key (JOINED and LEFT need it too), and
// would make etcd read the previous value of every key the watch sees.
//
// Moves (move.go). A socket moved to another gateway keeps its id: moving
// its keys re-puts its record and room keys on another lease, which is no
// CONNECTED or JOINED (only a creation is), so a move emits nothing; the
// events after it name the socket's new gateway, which its record holds. The
// seed needs the start revision itself not compacted, which resuming needs
// anyway. A socket's room keys go after its record (a gateway's removal and
// Disconnect delete the record first), so an entry stays while the socket
// has memberships the stream may still see leave: the seed counts them, and
// the entry goes when the socket has neither record nor counted membership.
// Memory: one entry per socket the filters can match (every socket without
// a user or socket filter), and per stream; the seed reads those records,
// and the memberships the room filter can match.
//
// A membership whose record was already gone at the seed revision (the
// socket mid-removal: a stream resumed from the revision of a DISCONNECTED
// batch) gets its user from its record as of the membership's creation
// revision or, when that is compacted, as of the compaction revision; only
// a record deleted before the compaction leaves its LEFT without a user.

// WatchEventType is the kind of a MembershipEvent.
type WatchEventType int

// The event types, as in the API.
const (
	EventConnected WatchEventType = iota + 1
	EventDisconnected
	EventJoined
	EventLeft
)

// MembershipEvent is one change of the keyspace, as a consumer sees it.
type MembershipEvent struct {
	Type     WatchEventType
	Socket   string
	User     string
	Gateway  string
	Room     string // JOINED and LEFT only
	Revision int64
}

// WatchFilter selects events; empty fields match everything, set ones
// combine with AND. A room filter matches only JOINED and LEFT.
type WatchFilter struct {
	Room, User, Socket string
}

// WatchBatch is what a stream hands its consumer: the matching events of one
// revision, or (Events empty) progress: no matching event at or before
// Revision is still to come.
type WatchBatch struct {
	Revision int64
	Events   []MembershipEvent
}

// CompactedError reports a start revision etcd has compacted.
type CompactedError struct {
	// CompactRevision is etcd's compaction revision: the oldest revision
	// still readable.
	CompactRevision int64
}

func (e *CompactedError) Error() string {
	return "revision compacted; the oldest revision etcd keeps is " + strconv.FormatInt(e.CompactRevision, 10)
}

// ErrFutureRevision reports a start revision etcd has not reached.
var ErrFutureRevision = errors.New("revision is past etcd's current revision")

// WatchOptions tune WatchMembership.
type WatchOptions struct {
	// After: stream the events after this revision; 0: from now.
	After int64
	// ProgressEvery is how often, while no batch goes out, progress is
	// asked of etcd and handed on.
	ProgressEvery time.Duration
	// Resume, called after emit returned ErrPause, returns once the
	// consumer has room again (the etcd watch is then opened anew from the
	// next revision), or with the error that ends the stream.
	Resume func(ctx context.Context) error
}

// ErrPause, returned by emit, says the batch was taken but the consumer's
// buffer is full: the etcd watch is closed, dropping whatever etcd has
// sent ahead (memory stays bounded however fast etcd replays history), and
// opened again from the next revision once opts.Resume returns.
var ErrPause = errors.New("consumer buffer full")

// streamSeq names each stream's own etcd watch stream (see WatchMembership).
var streamSeq atomic.Int64

// WatchMembership streams the changes matching f to emit, from opts.After
// (exclusive) or now, until ctx ends or emit fails; it returns ctx's error,
// emit's, a *CompactedError, or ErrFutureRevision. emit gets first a
// progress batch at the start revision, then batches in revision order. A
// watch interrupted by an etcd failure resumes where it stopped.
func (s *Store) WatchMembership(ctx context.Context, cli *clientv3.Client, f WatchFilter, opts WatchOptions, emit func(WatchBatch) error) error {
	w := &memberWatch{s: s, cli: cli, f: f, users: map[string]*userEntry{}}
	start, err := w.seed(ctx, opts.After)
	if err != nil {
		var ce *CompactedError
		if errors.Is(err, rpctypes.ErrCompacted) && !errors.As(err, &ce) {
			return &CompactedError{CompactRevision: compactRevision(ctx, cli, s.k.prefix)}
		}
		if errors.Is(err, rpctypes.ErrFutureRev) {
			return ErrFutureRevision
		}
		return err
	}
	if err := emit(WatchBatch{Revision: start}); err != nil {
		return err
	}
	// A stream of its own: a progress request answers this watch only, and
	// no other watch waits on this consumer.
	wctx := metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "membership-watch", strconv.FormatInt(streamSeq.Add(1), 10))
	next := start + 1
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		got, err := w.watch(wctx, cli, next, opts.ProgressEvery, emit)
		if got > next {
			next, backoff = got, 50*time.Millisecond
		}
		var ce *CompactedError
		if errors.As(err, &ce) || ctx.Err() != nil {
			return err
		}
		if errors.Is(err, ErrPause) {
			if err := opts.Resume(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, errWatchEnded) {
			return err // emit's
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 2*time.Second)
	}
	return ctx.Err()
}

var errWatchEnded = errors.New("etcd watch ended")

type memberWatch struct {
	s     *Store
	cli   *clientv3.Client
	f     WatchFilter
	users map[string]*userEntry // socket → entry, for sockets f can match
	// compactRev is etcd's compaction revision once the seed needed it
	// (compactRead), 0 if etcd did not say.
	compactRev  int64
	compactRead bool
}

type userEntry struct {
	user string
	// gateway is the socket's home (home.go) as its record last said; ""
	// before any record was seen: then its id's.
	gateway string
	record  bool // the socket's record exists
	rooms   int  // memberships (f.Room's only, with a room filter) that exist
}

// gatewayOf is the gateway events of socket sid name: its current home's.
func (e *userEntry) gatewayOf(sid SocketID) string {
	if e.gateway != "" {
		return e.gateway
	}
	return sid.Gateway
}

// tracked tells whether a socket of user can match the filter at all.
func (w *memberWatch) tracked(socket, user string) bool {
	return (w.f.Socket == "" || w.f.Socket == socket) && (w.f.User == "" || w.f.User == user)
}

func (w *memberWatch) drop(socket string, e *userEntry) {
	if !e.record && e.rooms <= 0 {
		delete(w.users, socket)
	}
}

// seed fills the user map at revision after (0: now) and returns it.
func (w *memberWatch) seed(ctx context.Context, after int64) (int64, error) {
	s := w.s
	rev := after
	recPrefix := s.k.socketsPrefix()
	if w.f.Socket != "" {
		recPrefix = s.k.socket(w.f.Socket) // the one record (and ids it prefixes: none, ids are fixed-length)
	}
	var err error
	rev, err = s.scanValues(ctx, recPrefix, rev, func(key string, value []byte, _ int64) error {
		id := strings.TrimPrefix(key, s.k.socketsPrefix())
		sid, err := ParseSocketID(id)
		if err != nil {
			return nil // a move marker (move.go), no record
		}
		var rec SocketRecord
		if err := json.Unmarshal(value, &rec); err != nil {
			return corrupt("socket record", []byte(key), err)
		}
		if w.tracked(id, rec.User) {
			w.users[id] = &userEntry{user: rec.User, gateway: rec.Home(sid).Gateway, record: true}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	roomPrefix := s.k.roomsPrefix()
	if w.f.Room != "" {
		roomPrefix = s.k.roomPrefix(w.f.Room)
	}
	_, err = s.scanValues(ctx, roomPrefix, rev, func(key string, _ []byte, created int64) error {
		_, socket, ok := strings.Cut(strings.TrimPrefix(key, s.k.roomsPrefix()), "/")
		if !ok {
			return nil
		}
		if w.f.Socket != "" && socket != w.f.Socket {
			return nil
		}
		e := w.users[socket]
		if e == nil {
			// Mid-removal: the record went first. Its user as of the
			// membership's creation, when it existed.
			user := w.removedUser(ctx, socket, created)
			if !w.tracked(socket, user) {
				return nil
			}
			e = &userEntry{user: user}
			w.users[socket] = e
		}
		e.rooms++
		return nil
	})
	return rev, err
}

// removedUser reads the user of a socket whose record is gone at the seed
// revision while its memberships are not: from its record as of the
// membership's creation revision, created, or, when etcd has compacted that,
// as of the compaction revision, which the record outlived unless it was
// deleted before it. "" when neither is readable.
func (w *memberWatch) removedUser(ctx context.Context, socket string, created int64) string {
	key := w.s.k.socket(socket)
	r, err := w.s.kv.Get(ctx, key, clientv3.WithRev(created))
	if errors.Is(err, rpctypes.ErrCompacted) {
		if !w.compactRead {
			w.compactRev, w.compactRead = compactRevision(ctx, w.cli, w.s.k.prefix), true
		}
		if w.compactRev > created {
			r, err = w.s.kv.Get(ctx, key, clientv3.WithRev(w.compactRev))
		}
	}
	if err != nil || len(r.Kvs) == 0 {
		return ""
	}
	var rec SocketRecord
	if json.Unmarshal(r.Kvs[0].Value, &rec) != nil {
		return ""
	}
	return rec.User
}

// scanValues visits every key under prefix with its value and creation
// revision at revision rev (0: now), 1,000 at a time, and returns rev.
func (s *Store) scanValues(ctx context.Context, prefix string, rev int64, visit func(key string, value []byte, created int64) error) (int64, error) {
	var verr error
	rev, err := s.scan(ctx, prefix, prefix, rev, false, func(kv *mvccpb.KeyValue) bool {
		verr = visit(string(kv.Key), kv.Value, kv.CreateRevision)
		return verr == nil
	})
	if err == nil {
		err = verr
	}
	return rev, err
}

// watch follows the keyspace from revision next and returns the revision to
// resume from with the reason the watch ended.
func (w *memberWatch) watch(ctx context.Context, cli *clientv3.Client, next int64, every time.Duration, emit func(WatchBatch) error) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := w.s
	wch := cli.Watch(ctx, s.k.roomsPrefix(), clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.k.socketsPrefix())),
		clientv3.WithRev(next), clientv3.WithProgressNotify())
	tick := time.NewTicker(every)
	defer tick.Stop()
	sent := false // a batch went out since the last tick
	for {
		select {
		case <-ctx.Done():
			return next, ctx.Err()
		case <-tick.C:
			if !sent {
				rctx, rcancel := context.WithTimeout(ctx, every)
				_ = cli.RequestProgress(rctx) // unanswered: asked again at the next tick
				rcancel()
			}
			sent = false
		case resp, ok := <-wch:
			if !ok {
				return next, errWatchEnded
			}
			if resp.CompactRevision != 0 {
				return next, &CompactedError{CompactRevision: resp.CompactRevision}
			}
			if err := resp.Err(); err != nil {
				return next, fmt.Errorf("%w: %w", errWatchEnded, err)
			}
			if resp.IsProgressNotify() {
				// The same revision again, when nothing changed, still
				// tells an idle consumer the stream is alive.
				if rev := resp.Header.Revision; rev >= next-1 {
					next = max(next, rev+1)
					if err := emit(WatchBatch{Revision: rev}); err != nil {
						return next, err
					}
				}
				continue
			}
			evs := resp.Events
			for len(evs) > 0 {
				rev := evs[0].Kv.ModRevision
				n := 1
				for n < len(evs) && evs[n].Kv.ModRevision == rev {
					n++
				}
				if rev >= next {
					next = rev + 1 // decoded once: a pause resumes after it
					if out := w.decode(evs[:n]); len(out) > 0 {
						if err := emit(WatchBatch{Revision: rev, Events: out}); err != nil {
							return next, err
						}
						sent = true
					}
				}
				evs = evs[n:]
			}
		}
	}
}

// decode turns one revision's events into the matching MembershipEvents,
// keeping the user map.
func (w *memberWatch) decode(evs []*clientv3.Event) []MembershipEvent {
	s := w.s
	var out []MembershipEvent
	for _, ev := range evs {
		key := string(ev.Kv.Key)
		rev := ev.Kv.ModRevision
		if id, ok := strings.CutPrefix(key, s.k.socketsPrefix()); ok {
			sid, err := ParseSocketID(id)
			if err != nil {
				continue
			}
			e := w.users[id]
			if ev.Type == mvccpb.PUT {
				var rec SocketRecord
				if json.Unmarshal(ev.Kv.Value, &rec) != nil || !w.tracked(id, rec.User) {
					continue
				}
				if e == nil {
					e = &userEntry{}
					w.users[id] = e
				}
				// A put of an existing record is a move (move.go): its
				// gateway changes, and no event says so.
				e.user, e.gateway = rec.User, rec.Home(sid).Gateway
				created := !e.record
				e.record = true
				if created && w.f.Room == "" {
					out = append(out, MembershipEvent{Type: EventConnected, Socket: id, User: rec.User, Gateway: e.gateway, Revision: rev})
				}
				continue
			}
			if e == nil {
				continue // a socket the filters cannot match
			}
			e.record = false
			w.drop(id, e)
			if w.f.Room == "" {
				out = append(out, MembershipEvent{Type: EventDisconnected, Socket: id, User: e.user, Gateway: e.gatewayOf(sid), Revision: rev})
			}
			continue
		}
		rest, ok := strings.CutPrefix(key, s.k.roomsPrefix())
		if !ok {
			continue
		}
		seg, id, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		room, err := unescapeRoom(seg)
		if err != nil {
			continue
		}
		sid, err := ParseSocketID(id)
		if err != nil || (w.f.Room != "" && room != w.f.Room) {
			continue
		}
		if ev.Type == mvccpb.PUT && !ev.IsCreate() {
			continue // the membership moved to another lease (move.go): no change
		}
		e := w.users[id]
		if e == nil {
			continue
		}
		typ := EventJoined
		if ev.Type == mvccpb.PUT {
			e.rooms++
		} else {
			typ = EventLeft
			e.rooms--
			w.drop(id, e)
		}
		out = append(out, MembershipEvent{Type: typ, Socket: id, User: e.user, Gateway: e.gatewayOf(sid), Room: room, Revision: rev})
	}
	return out
}

// compactRevision asks etcd for its compaction revision: a watch from
// revision 1 is refused with it. 0 when etcd does not answer.
func compactRevision(ctx context.Context, cli *clientv3.Client, key string) int64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for resp := range cli.Watch(ctx, key, clientv3.WithRev(1)) {
		return resp.CompactRevision
	}
	return 0
}
