package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// benchWatch: how many events per second one WatchMembership stream (no
// filter) delivers. --watch-sockets socket records on one lease (as a
// gateway would hold them) join and leave a room of their own, all at once,
// through AddRoomMembersToRooms and RemoveRoomMembersFromRooms from a source
// room, for --duration: each call commits a page of 500 memberships per
// transaction, so revisions carry many events, as room-wide calls and lease
// expiries make them. The consumer counts events until it has the last
// revision written; events/s is that count over the time from the first
// write to the last event received, next to the rate etcd committed them.
func benchWatch(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	sto, lease, err := st.fakeGateway(ctx, "wb")
	if err != nil {
		return err
	}
	n := cfg.watchSockets
	ids := make([]string, n)
	if err := parallel(16, n/100, func(batch int) error {
		for i := batch * 100; i < batch*100+100; i++ {
			sid := store.NewSocketID("wb", lease)
			if _, err := sto.AddSocket(ctx, sid, store.SocketRecord{Gateway: "wb", ConnectedAt: time.Now(), User: fmt.Sprintf("u%d", i%50)}); err != nil {
				return err
			}
			ids[i] = sid.String()
		}
		_, err := st.api.Join(ctx, &membershipv1.JoinRequest{SocketIds: ids[batch*100 : batch*100+100], Room: "wb-src"})
		return err
	}); err != nil {
		return err
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := st.api.WatchMembership(sctx, &membershipv1.WatchMembershipRequest{})
	if err != nil {
		return err
	}
	first, err := stream.Recv() // the starting progress
	if err != nil {
		return err
	}
	startRev := first.GetProgress().GetRevision()
	var events atomic.Int64
	var lastRev atomic.Int64
	var lastAt atomic.Int64 // unix nanos of the last event received
	var wg sync.WaitGroup
	wg.Add(1)
	var recvErr atomic.Pointer[error] // set by the receiving goroutine, read by this one
	go func() {
		defer wg.Done()
		for {
			m, err := stream.Recv()
			if err != nil {
				if sctx.Err() == nil {
					recvErr.Store(&err)
				}
				return
			}
			if b := m.GetEvents(); b != nil {
				events.Add(int64(len(b.Events)))
				lastRev.Store(b.Revision)
				lastAt.Store(time.Now().UnixNano())
			}
		}
	}()

	start := time.Now()
	var written int64
	var final int64
	for time.Since(start) < cfg.duration {
		add, err := st.api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "wb-src", DestRooms: []string{"wb-dst"}})
		if err != nil {
			return err
		}
		rm, err := st.api.RemoveRoomMembersFromRooms(ctx, &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: "wb-src", DestRooms: []string{"wb-dst"}})
		if err != nil {
			return err
		}
		written += add.Changed + rm.Changed
	}
	writeTime := time.Since(start)
	resp, err := st.cli.Get(ctx, "x")
	if err != nil {
		return err
	}
	final = resp.Header.Revision
	if err := waitUntil(5*time.Minute, func() bool { return lastRev.Load() >= final || recvErr.Load() != nil }); err != nil {
		return fmt.Errorf("stream did not catch up: %w", err)
	}
	cancel()
	wg.Wait()
	if err := recvErr.Load(); err != nil {
		return *err
	}
	deliverTime := time.Unix(0, lastAt.Load()).Sub(start)

	// Replay: the same history from after_revision, as fast as the stream
	// goes, without waiting for writes.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	replay, err := st.api.WatchMembership(rctx, &membershipv1.WatchMembershipRequest{AfterRevision: startRev})
	if err != nil {
		return err
	}
	rstart := time.Now()
	var replayed int64
	for {
		m, err := replay.Recv()
		if err != nil {
			return err
		}
		if b := m.GetEvents(); b != nil {
			replayed += int64(len(b.Events))
			if b.Revision >= lastRev.Load() {
				break
			}
		}
	}
	replayTime := time.Since(rstart)
	rcancel()
	fmt.Printf("## watch: one WatchMembership stream, no filter (%d sockets, rooms changed 500 memberships per transaction)\n\n", n)
	fmt.Printf("| events written | written in | written/s | events received | received in | received/s |\n|---|---|---|---|---|---|\n")
	fmt.Printf("| %d | %v | %.0f | %d | %v | %.0f |\n\n", written, writeTime.Round(time.Millisecond), float64(written)/writeTime.Seconds(),
		events.Load(), deliverTime.Round(time.Millisecond), float64(events.Load())/deliverTime.Seconds())
	fmt.Printf("Replayed from after_revision %d (the history already written): %d events in %v, %.0f events/s.\n\n",
		startRev, replayed, replayTime.Round(time.Millisecond), float64(replayed)/replayTime.Seconds())
	fmt.Fprintln(os.Stderr, "watch: done")
	return nil
}

// fakeGateway registers a gateway record id on a lease this process keeps
// alive, as a gateway holds its sockets, and returns a store to write
// socket records on it.
func (s *stack) fakeGateway(ctx context.Context, id string) (*store.Store, clientv3.LeaseID, error) {
	lease, err := s.cli.Grant(ctx, 60)
	if err != nil {
		return nil, 0, err
	}
	keep, err := s.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, 0, err
	}
	go func() {
		for range keep {
		}
	}()
	sto := store.New(s.cli, "")
	if _, err := sto.RegisterGateway(ctx, store.GatewayRecord{ID: id, GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		return nil, 0, err
	}
	return sto, lease.ID, nil
}
