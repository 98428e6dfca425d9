package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// proxiedStore is a Store whose etcd client reaches etcd through a proxy the
// test can cut, with one socket connected while it was up.
func proxiedStore(t *testing.T) (*store.Store, *testutil.Proxy, *testutil.Etcd, *clientv3.Client, store.SocketID) {
	t.Helper()
	e := testutil.StartEtcd(t)
	p := testutil.StartProxy(t, e.Endpoint)
	cli := testutil.NewClient(t, p.Endpoint())
	s := store.New(cli, "/t/")
	return s, p, e, cli, connect(t, cli, s, "gw1")
}

// waitTxns waits up to within for the store to have sent n coalesced
// transactions.
func waitTxns(t *testing.T, s *store.Store, n int64, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if txns, _ := s.BatchStats(); txns >= n {
			return
		}
	}
	txns, _ := s.BatchStats()
	t.Fatalf("%d coalesced transactions sent within %v; want %d", txns, within, n)
}

// inRoom reads through etcd directly (not the proxy) whether sock is in room.
func inRoom(t *testing.T, e *testutil.Etcd, sock store.SocketID, room string) bool {
	t.Helper()
	s := store.New(e.Client, "/t/")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, _, err := s.GetSocket(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(info.Rooms, room)
}

// Stopping the batcher while etcd is unreachable returns at once rather than
// at the deadlines of the calls in flight (a membership-server shutting down
// during an etcd outage): the call in flight and the one waiting behind it
// are answered with ErrShuttingDown, and nothing is sent once etcd is back.
func TestBatchStopDuringEtcdOutage(t *testing.T) {
	s, p, e, cli, sock := proxiedStore(t)
	stop := s.StartBatching(1)
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	p.Pause()

	// Deadlines far beyond the bound below: stop must not wait for them.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 2)
	go func() {
		_, err := s.Join(ctx, []store.SocketID{sock}, "inflight")
		errs <- err
	}()
	waitTxns(t, s, 1, 10*time.Second) // the attempt is in flight, waiting for a connection
	go func() {
		_, err := s.Join(ctx, []store.SocketID{sock}, "pending")
		errs <- err
	}()
	time.Sleep(200 * time.Millisecond) // the second call queues behind the first

	const bound = 5 * time.Second // generous; stop needs no etcd round trip
	done := make(chan struct{})
	begin := time.Now()
	go func() { stop(); close(done) }()
	select {
	case <-done:
		stopped = true
		t.Logf("stop returned after %v", time.Since(begin))
	case <-time.After(bound):
		t.Fatalf("stop has not returned %v after it was called, with etcd unreachable", bound)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, store.ErrShuttingDown) {
				t.Errorf("a call carried or queued at stop: %v; want ErrShuttingDown", err)
			}
		case <-time.After(bound):
			t.Fatal("a call was not answered after stop")
		}
	}
	if _, err := s.Join(ctx, []store.SocketID{sock}, "after"); !errors.Is(err, store.ErrShuttingDown) {
		t.Errorf("a call after stop: %v; want ErrShuttingDown", err)
	}

	// The cancelled attempt is not sent when etcd comes back.
	p.Resume()
	// A write through the same client succeeds: it is connected again, and
	// an attempt still waiting for it would have been sent by now.
	if _, err := store.New(cli, "/t/").Leave(ctx, []store.SocketID{sock}, "unrelated"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if inRoom(t, e, sock, "inflight") {
		t.Error("the attempt in flight at stop was applied after etcd came back")
	}
}

// An attempt whose only caller gave up is cancelled, not left in flight
// until a deadline nobody waits for any more: here the attempt is stuck on a
// connection that black-holes it (so it never reaches etcd), and once its
// caller cancels, the only committer is free for the next call at once.
func TestBatchAbandonedAttemptIsCancelled(t *testing.T) {
	s, p, _, _, sock := proxiedStore(t)
	defer s.StartBatching(1)()
	p.Stall()

	ctx, cancel := context.WithCancel(context.Background()) // no deadline: retried for up to 10 s
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Join(ctx, []store.SocketID{sock}, "abandoned")
		errc <- err
	}()
	waitTxns(t, s, 1, 10*time.Second)
	time.Sleep(300 * time.Millisecond) // stalled: the term watch probes, and cancels nothing
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned Join: %v; want its context's error", err)
	}

	nctx, ncancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ncancel()
	go func() {
		_, err := s.Join(nctx, []store.SocketID{sock}, "next") // stalled too; only its sending matters
		errc <- err
	}()
	waitTxns(t, s, 2, 3*time.Second)
	if txns, calls := s.BatchStats(); txns != 2 || calls != 2 {
		t.Errorf("%d transactions carrying %d calls; want 2 and 2 (the abandoned call is not retried)", txns, calls)
	}
	ncancel()
	<-errc
}

// A limited Join waiting for a socket's turn behind another one that is
// stuck (etcd unreachable, as during a leader change) returns by its own
// deadline, not when the other one gives up.
func TestRoomLimitWaitingJoinKeepsItsDeadline(t *testing.T) {
	s, p, _, _, sock := proxiedStore(t)
	s.SetMaxRoomsPerSocket(4)
	p.Pause()
	defer p.Resume()

	hctx, hcancel := context.WithTimeout(context.Background(), time.Minute)
	defer hcancel()
	held := make(chan error, 1)
	go func() {
		_, err := s.Join(hctx, []store.SocketID{sock}, "holder")
		held <- err
	}()
	time.Sleep(300 * time.Millisecond) // the holder takes the socket's turn and waits for etcd

	const timeout = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Join(ctx, []store.SocketID{sock}, "waiter")
		errc <- err
	}()
	const slack = 3 * time.Second // generous for a loaded machine
	select {
	case err := <-errc:
		if late := time.Since(deadline); late > slack {
			t.Errorf("the waiting Join returned %v after its deadline", late)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the waiting Join: %v; want its deadline", err)
		}
	case <-time.After(timeout + slack):
		t.Errorf("the waiting Join has not returned %v after its deadline", slack)
	}
	hcancel()
	if err := <-held; !errors.Is(err, context.Canceled) {
		t.Errorf("the holder: %v; want its context's error", err)
	}
}
