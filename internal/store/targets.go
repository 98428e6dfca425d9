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

	"github.com/socketrooms/membership/internal/revwait"
)

// TargetIndex answers "which gateways hold members of these rooms" without
// reading the rooms' member keys on every broadcast. It is derived from etcd
// alone: a listing of rooms/ and gateways/ at one revision, then a watch from
// the next, so it can always be rebuilt, and every replica has its own.
//
// Consistency: Targets first reads etcd's current revision R with a
// linearizable request, then waits until the index has applied every change
// up to R (asking for watch progress when nothing changes). Any membership
// committed before the broadcast began is therefore counted, exactly as if
// the member keys had been read at R.
type TargetIndex struct {
	s   *Store
	cli *clientv3.Client
	log *slog.Logger

	mu      sync.RWMutex
	counts  map[string]map[string]int // room → gateway → members
	total   int                       // memberships, the sum of counts
	records map[string]GatewayRecord  // gateway → record
	// applied is 0 until the first listing is in; etcd revisions start at 1.
	applied *revwait.Waiter

	watchMu  sync.Mutex
	watchCtx context.Context // the live watch's, for progress requests
}

// NewTargetIndex returns an index over s; Run keeps it current.
func (s *Store) NewTargetIndex(cli *clientv3.Client, log *slog.Logger) *TargetIndex {
	return &TargetIndex{s: s, cli: cli, log: log, applied: revwait.New()}
}

// Run lists and watches until ctx ends, rebuilding after any watch failure.
func (x *TargetIndex) Run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := x.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		x.log.Warn("broadcast target index rebuilding", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// follow loads the index at one revision and applies the watch from there
// until the watch fails.
func (x *TargetIndex) follow(ctx context.Context) error {
	counts := map[string]map[string]int{}
	total := 0
	records := map[string]GatewayRecord{}
	roomsPrefix := x.s.k.roomsPrefix()
	rev, err := x.s.scanKeys(ctx, roomsPrefix, roomsPrefix, 0, func(key string) bool {
		if room, gw, ok := x.s.decodeRoomKey(key); ok {
			add(counts, room, gw, 1)
			total++
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("list rooms: %w", err)
	}
	gws, err := x.cli.Get(ctx, x.s.k.gatewaysPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return fmt.Errorf("list gateways: %w", err)
	}
	for _, kv := range gws.Kvs {
		var rec GatewayRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			records[rec.ID] = rec
		}
	}
	x.mu.Lock()
	x.counts, x.total, x.records = counts, total, records
	x.mu.Unlock()
	x.applied.Advance(rev)

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	x.watchMu.Lock()
	x.watchCtx = wctx
	x.watchMu.Unlock()
	// One watch over the whole keyspace: rooms/ and gateways/ changes, in
	// revision order, on one stream whose progress covers both.
	for resp := range x.cli.Watch(wctx, x.s.k.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify()) {
		if err := resp.Err(); err != nil {
			return err
		}
		last := int64(0)
		if len(resp.Events) > 0 {
			x.mu.Lock()
			for _, ev := range resp.Events {
				x.applyLocked(ev)
				last = ev.Kv.ModRevision
			}
			x.mu.Unlock()
		}
		if resp.IsProgressNotify() {
			last = resp.Header.Revision
		}
		x.applied.Advance(last)
	}
	return errors.New("watch ended")
}

func (x *TargetIndex) applyLocked(ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	if room, gw, ok := x.s.decodeRoomKey(key); ok {
		switch {
		case ev.Type == mvccpb.DELETE:
			add(x.counts, room, gw, -1)
			x.total--
		case ev.IsCreate():
			add(x.counts, room, gw, 1)
			x.total++
		}
		return
	}
	if id, ok := strings.CutPrefix(key, x.s.k.gatewaysPrefix()); ok {
		if ev.Type == mvccpb.DELETE {
			delete(x.records, id)
			return
		}
		var rec GatewayRecord
		if json.Unmarshal(ev.Kv.Value, &rec) == nil {
			x.records[rec.ID] = rec
		}
	}
}

func add(counts map[string]map[string]int, room, gw string, d int) {
	m := counts[room]
	if m == nil {
		m = map[string]int{}
		counts[room] = m
	}
	if m[gw] += d; m[gw] <= 0 {
		delete(m, gw)
		if len(m) == 0 {
			delete(counts, room)
		}
	}
}

// Sizes returns how many rooms have members, how many memberships there are
// and how many gateways are registered, as of the index's applied revision.
func (x *TargetIndex) Sizes() (rooms, memberships, gateways int) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.counts), x.total, len(x.records)
}

// Targets returns the gateways holding members of any of rooms (every
// gateway when rooms is nil), as of a revision at least etcd's current one
// when the call began.
func (x *TargetIndex) Targets(ctx context.Context, rooms []string) (Targets, error) {
	resp, err := x.cli.Get(clientv3.WithRequireLeader(ctx), x.s.k.gatewaysPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return Targets{}, fmt.Errorf("read revision: %w", err)
	}
	rev := resp.Header.Revision
	if _, err := x.applied.Wait(ctx, nil, rev, 50*time.Millisecond, x.requestProgress); err != nil {
		return Targets{}, err
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	t := Targets{Revision: rev, Gateways: map[string]GatewayRecord{}}
	if rooms == nil {
		for id, rec := range x.records {
			t.Gateways[id] = rec
		}
	}
	for _, room := range rooms {
		for gw := range x.counts[room] {
			if rec, ok := x.records[gw]; ok {
				t.Gateways[gw] = rec
			}
		}
	}
	return t, nil
}

func (x *TargetIndex) requestProgress() {
	x.watchMu.Lock()
	wctx := x.watchCtx
	x.watchMu.Unlock()
	if wctx != nil {
		_ = x.cli.RequestProgress(wctx)
	}
}

// decodeRoomKey splits rooms/{room}/{socket} into the room and the socket's
// gateway.
func (s *Store) decodeRoomKey(key string) (room, gateway string, ok bool) {
	rest, ok := strings.CutPrefix(key, s.k.roomsPrefix())
	if !ok {
		return "", "", false
	}
	seg, socket, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", false
	}
	sid, err := ParseSocketID(socket)
	if err != nil {
		return "", "", false
	}
	room, err = unescapeRoom(seg)
	if err != nil {
		return "", "", false
	}
	return room, sid.Gateway, true
}
