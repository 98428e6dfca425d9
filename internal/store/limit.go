package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Rooms per socket.
//
// etcd cannot count keys inside a transaction, and a counter key would cost
// every Join and Leave a read-modify-write. Instead, with a limit set, a Join
// reads each socket's rooms (a count, and whether it is in the room) and then
// commits the usual guarded transaction with one more compare per socket:
// every key under the socket's rooms prefix has a mod revision at or before
// that read. A room the socket joined meanwhile makes the compare fail, and
// the Join reads again; a room it left meanwhile only lowers the count, which
// is safe. The limit is thus exact, never overshot by concurrent Joins, and
// costs one extra read per Join, only when it is set. Because each socket
// adds a compare to the call's transaction, a limited Join takes at most
// MaxSocketsPerLimitedJoin sockets.
//
// Concurrent Joins of one socket (an app joining a new socket to its rooms in
// parallel) would invalidate each other's reads, so within one process they
// take turns: a striped lock per socket is held from the read to the commit.
// Only Joins through other membership-servers can then make the guard fail,
// and those are retried a few times with jittered pauses.

// MaxSocketsPerLimitedJoin is MaxSocketsPerChange when rooms per socket are
// limited, under etcd's default --max-txn-ops (128), and the most under any:
// two compares per socket must fit etcd's operations per transaction level,
// with room for the coalescing transaction above it.
// Store.SocketsPerLimitedJoin is the number under the configured limits.
const MaxSocketsPerLimitedJoin = 60

// SocketsPerLimitedJoin is how many sockets a Join may name while rooms per
// socket are limited, under the configured TxnLimits.
func (s *Store) SocketsPerLimitedJoin() int { return s.budget.socketsPerLimitedJoin() }

// limitAttempts bounds the read-and-commit rounds of a limited Join whose
// sockets keep joining other rooms through other membership-servers.
const limitAttempts = 8

// socketLocks serialise limited changes of the same socket in this process.
// Striped: sockets that share a stripe merely wait for each other. Each
// stripe is a one-slot semaphore rather than a mutex so that a change waiting
// behind a holder (one retrying across an etcd leader change, say) gives up
// at its own deadline.
type socketLocks [1024]chan struct{}

func newSocketLocks() *socketLocks {
	l := new(socketLocks)
	for i := range l {
		l[i] = make(chan struct{}, 1)
	}
	return l
}

// lock takes the stripes of sockets in ascending order (no deadlock between
// calls naming several sockets) and returns the function releasing them. If
// ctx ends first, it releases what it took and returns ctx's error.
func (l *socketLocks) lock(ctx context.Context, sockets []SocketID) (unlock func(), err error) {
	idx := make([]int, 0, len(sockets))
	for _, sock := range sockets {
		h := fnv.New32a()
		h.Write([]byte(sock.String()))
		idx = append(idx, int(h.Sum32()%uint32(len(l))))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	release := func(taken []int) {
		for _, i := range taken {
			<-l[i]
		}
	}
	for n, i := range idx {
		select {
		case l[i] <- struct{}{}:
		case <-ctx.Done():
			release(idx[:n])
			return nil, ctx.Err()
		}
	}
	return func() { release(idx) }, nil
}

// conflictPause waits a random time that grows with attempt before a limited
// change reads again, so that replicas racing on one socket fall out of step.
func conflictPause(ctx context.Context, attempt int) error {
	t := time.NewTimer(time.Duration(rand.Int64N(int64(attempt+1) * int64(2*time.Millisecond))))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// missingSockets names those of sockets whose record does not exist.
func (s *Store) missingSockets(ctx context.Context, sockets []SocketID) ([]string, error) {
	ids := make([]string, len(sockets))
	for i, sock := range sockets {
		ids[i] = sock.String()
	}
	records, err := s.readSocketRecords(ctx, ids, clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	var missing []string
	for i, r := range records {
		if r.Count == 0 {
			missing = append(missing, ids[i])
		}
	}
	return missing, nil
}

// ErrRoomLimit is matched (errors.Is) by a *RoomLimitError.
var ErrRoomLimit = errors.New("rooms per socket limit reached")

// ErrConflict is returned when concurrent Joins of the same sockets kept a
// limited Join from committing; retrying later can succeed.
var ErrConflict = errors.New("the sockets' rooms changed concurrently on every attempt")

// RoomLimitError names the sockets a Join would take past the limit.
type RoomLimitError struct {
	IDs   []string
	Limit int
}

func (e *RoomLimitError) Error() string {
	return fmt.Sprintf("%d socket(s) already in %d rooms, the most allowed: %s", len(e.IDs), e.Limit, strings.Join(e.IDs, ", "))
}

// Is makes errors.Is(err, ErrRoomLimit) hold.
func (e *RoomLimitError) Is(target error) bool { return target == ErrRoomLimit }

// SetMaxRoomsPerSocket limits how many rooms a socket may be in (0: no
// limit). Call it before the Store is used.
func (s *Store) SetMaxRoomsPerSocket(n int) {
	s.maxRooms = n
	if n > 0 && s.locks == nil {
		s.locks = newSocketLocks()
	}
}

// MaxRoomsPerSocket is the limit set by SetMaxRoomsPerSocket.
func (s *Store) MaxRoomsPerSocket() int { return s.maxRooms }

// roomsUnchangedSince holds when no key under a socket's rooms prefix (one
// of roomPrefixes) was written after rev (true for an empty prefix).
func roomsUnchangedSince(prefix string, rev int64) *etcdserverpb.Compare {
	return &etcdserverpb.Compare{
		Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix)),
		Target: etcdserverpb.Compare_MOD, Result: etcdserverpb.Compare_LESS,
		TargetUnion: &etcdserverpb.Compare_ModRevision{ModRevision: rev + 1},
	}
}

func (s *Store) joinLimited(ctx context.Context, sockets []SocketID, room string) (ChangeResult, error) {
	if n := s.SocketsPerLimitedJoin(); len(sockets) > n {
		return ChangeResult{}, fmt.Errorf("%d sockets in one limited join: at most %d allowed", len(sockets), n)
	}
	unlock, err := s.locks.lock(ctx, sockets)
	if err != nil {
		return ChangeResult{}, err
	}
	defer unlock()
	for attempt := range limitAttempts {
		if attempt > 0 {
			if err := conflictPause(ctx, attempt); err != nil {
				return ChangeResult{}, err
			}
		}
		// Read-only transactions of --max-txn-ops gets (one unless the
		// limit is small): each socket's state (home.go), room count at its
		// origin and whether it is in room, at one revision per
		// transaction, which guards that socket's rooms; a socket living
		// elsewhere has its rooms counted again there.
		over := &RoomLimitError{Limit: s.maxRooms}
		nf := &SocketsNotFoundError{}
		states := make([]socketState, len(sockets))
		var guards []*etcdserverpb.Compare
		per := max(1, s.budget.maxOps/3)
		for start := 0; start < len(sockets); start += per {
			chunk := sockets[start:min(start+per, len(sockets))]
			ops := make([]clientv3.Op, 0, 3*len(chunk))
			for _, sock := range chunk {
				id := sock.String()
				ops = append(ops,
					clientv3.OpGet(s.k.socket(id), clientv3.WithRange(s.k.socketRangeEnd(id))),
					clientv3.OpGet(s.k.socketRoomsPrefix(sock.Gateway, sock), clientv3.WithPrefix(), clientv3.WithCountOnly()),
					clientv3.OpGet(s.k.room(room, id), clientv3.WithCountOnly()))
			}
			read, err := readRetrying(ctx, func(ctx context.Context) (*clientv3.TxnResponse, error) {
				return s.kv.Txn(ctx).Then(ops...).Commit()
			})
			if err != nil {
				return ChangeResult{}, fmt.Errorf("read rooms per socket: %w", err)
			}
			rev := read.Header.Revision
			for j, sock := range chunk {
				i := start + j
				if states[i], err = s.decodeState(sock, read.Responses[3*j].GetResponseRange().Kvs); err != nil {
					return ChangeResult{}, err
				}
				if !states[i].exists {
					// A socket that is gone is NOT_FOUND, as for any Join,
					// even while its memberships are still being removed.
					nf.IDs = append(nf.IDs, sock.String())
					continue
				}
				rooms := read.Responses[3*j+1].GetResponseRange().Count
				prefixes := s.roomPrefixes(sock, states[i])
				if len(prefixes) > 1 || prefixes[0] != s.k.socketRoomsPrefix(sock.Gateway, sock) {
					if rooms, err = s.countRooms(ctx, prefixes, rev); err != nil {
						return ChangeResult{}, err
					}
				}
				member := read.Responses[3*j+2].GetResponseRange().Count > 0
				if !member && rooms >= int64(s.maxRooms) {
					over.IDs = append(over.IDs, sock.String())
				}
				for _, prefix := range prefixes {
					guards = append(guards, roomsUnchangedSince(prefix, rev))
				}
			}
		}
		if len(nf.IDs) > 0 {
			return ChangeResult{}, nf
		}
		if len(over.IDs) > 0 {
			return ChangeResult{}, over
		}
		a, err := s.commitChangeFrom(ctx, sockets, states, room, true, guards)
		if err != nil {
			return ChangeResult{}, err
		}
		if a.applied {
			return a.result(), nil
		}
		if err := notFound(a.states, sockets); err != nil {
			return ChangeResult{}, err
		}
		// A socket joined another room since the read: read again.
	}
	return ChangeResult{}, ErrConflict
}

// addToRoomsLimited is AddToRooms under the rooms-per-socket limit: each
// socket joins all of its missing rooms in one transaction guarded like a
// limited Join, or none when that would take it past the limit.
func (s *Store) addToRoomsLimited(ctx context.Context, sockets []SocketID, rooms []string) (added, overLimit int64, err error) {
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, sock := range sockets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, over, err := s.addSocketToRooms(ctx, sock, rooms)
			mu.Lock()
			defer mu.Unlock()
			added += n
			if over {
				overLimit++
			}
			if err != nil && firstErr == nil {
				firstErr = err
			}
		}()
	}
	wg.Wait()
	return added, overLimit, firstErr
}

// addSocketToRooms joins one socket to the rooms it is not in yet, if it
// stays within the limit; a socket that is gone is skipped. The joins go in
// one transaction when the budget allows (all or none), else in several,
// each guarded by the socket's rooms being unchanged since the one before:
// a room joined meanwhile through another membership-server makes the socket
// read its rooms again and re-check the limit for the rest.
func (s *Store) addSocketToRooms(ctx context.Context, sock SocketID, rooms []string) (added int64, over bool, err error) {
	failure := []*etcdserverpb.RequestOp{s.pbSocketRange(sock, true)}
	unlock, err := s.locks.lock(ctx, []SocketID{sock})
	if err != nil {
		return 0, false, err
	}
	defer unlock()
	for attempt := range limitAttempts {
		if attempt > 0 {
			if err := conflictPause(ctx, attempt); err != nil {
				return added, false, err
			}
		}
		// Where it lives (home.go), then its rooms there; the guard below
		// holds only if it has not moved in between.
		states, err := s.socketStates(ctx, []SocketID{sock})
		if err != nil {
			return added, false, err
		}
		st := states[0]
		if !st.exists {
			return added, false, nil // a socket that is gone is skipped
		}
		prefixes := s.roomPrefixes(sock, st)
		ops := make([]clientv3.Op, len(prefixes))
		for i, prefix := range prefixes {
			ops[i] = clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		}
		resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return added, false, err
		}
		in := map[string]bool{}
		for i, prefix := range prefixes {
			for _, kv := range resp.Responses[i].GetResponseRange().Kvs {
				in[strings.TrimPrefix(string(kv.Key), prefix)] = true
			}
		}
		var missing []string
		for _, room := range rooms {
			if !in[escapeRoom(room)] {
				missing = append(missing, room)
			}
		}
		switch {
		case len(missing) == 0:
			return added, false, nil
		case len(in)+len(missing) > s.maxRooms:
			// A socket that is gone is skipped, not counted over the limit.
			gone, err := s.missingSockets(ctx, []SocketID{sock})
			return added, err == nil && len(gone) == 0, err
		}
		since := resp.Header.Revision
		guard := func(since int64) []*etcdserverpb.Compare {
			cmps := s.guard(sock, st)
			for _, prefix := range prefixes {
				cmps = append(cmps, roomsUnchangedSince(prefix, since))
			}
			return cmps
		}
		var stale, gone bool
		// Sized with the largest revision the guard can carry.
		chunks := s.budget.chunks(guardShape(guard(math.MaxInt64-1), failure), func(ops []*etcdserverpb.RequestOp) error {
			txn, err := s.tw.txnRetrying(ctx, s.pb, &etcdserverpb.TxnRequest{
				Compare: guard(since),
				Success: ops,
				Failure: failure,
			})
			if err != nil {
				return etcdError(ctx, err)
			}
			if !txn.Succeeded {
				gone = true
				for _, kv := range txn.Responses[0].GetResponseRange().Kvs {
					gone = gone && string(kv.Key) != s.k.socket(sock.String())
				}
				stale = !gone
				return errStopChunks
			}
			// Only this transaction wrote the socket's rooms at its
			// revision: the next chunk is guarded from there.
			since = txn.Header.Revision
			for _, r := range txn.Responses {
				if !wasMember(r) {
					added++
				}
			}
			return nil
		})
		for _, room := range missing {
			if err = chunks.add(s.pbMembershipOp(sock, st, room, true)); err != nil {
				break
			}
		}
		if err == nil {
			err = chunks.flush()
		}
		switch {
		case gone:
			return added, false, nil
		case stale:
			continue // it joined a room meanwhile: read again
		case err != nil:
			return added, false, err
		}
		return added, false, nil
	}
	return added, false, ErrConflict
}

// errStopChunks ends a chunked change whose guard failed; the caller knows why.
var errStopChunks = errors.New("guard failed")
