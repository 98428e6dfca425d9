package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// ev is an event as compared: what the API sends, or what etcd's history
// says the API must send.
type ev struct {
	typ          membershipv1.EventType
	socket, user string
	gw, room     string
	rev          int64
}

func (e ev) String() string {
	return fmt.Sprintf("%d:%s %s(%s)@%s %s", e.rev, strings.TrimPrefix(e.typ.String(), "EVENT_TYPE_"), e.socket, e.user, e.gw, e.room)
}

// etcdHistory reads etcd's own history of rooms/ and sockets/ in (from, to]
// with a raw watch, and turns it into the events a stream with filter f must
// send; users are the test's own record of who dialed each socket.
func etcdHistory(t *testing.T, e *testutil.Etcd, from, to int64, f *membershipv1.WatchMembershipRequest, users map[string]string) []ev {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []ev
	for resp := range e.Client.Watch(ctx, "/membership/", clientv3.WithPrefix(), clientv3.WithRev(from+1)) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		for _, x := range resp.Events {
			if x.Kv.ModRevision > to {
				return out
			}
			key := strings.TrimPrefix(string(x.Kv.Key), "/membership/")
			var got ev
			switch {
			case strings.HasPrefix(key, "sockets/"):
				got.socket = strings.TrimPrefix(key, "sockets/")
				got.typ = membershipv1.EventType_EVENT_TYPE_CONNECTED
				if x.Type == mvccpb.DELETE {
					got.typ = membershipv1.EventType_EVENT_TYPE_DISCONNECTED
				}
			case strings.HasPrefix(key, "rooms/"):
				got.room, got.socket, _ = strings.Cut(strings.TrimPrefix(key, "rooms/"), "/")
				got.typ = membershipv1.EventType_EVENT_TYPE_JOINED
				if x.Type == mvccpb.DELETE {
					got.typ = membershipv1.EventType_EVENT_TYPE_LEFT
				}
			default:
				continue
			}
			got.user, got.gw, got.rev = users[got.socket], strings.Split(got.socket, ".")[0], x.Kv.ModRevision
			if (f.Room != "" && got.room != f.Room) || (f.User != "" && got.user != f.User) || (f.SocketId != "" && got.socket != f.SocketId) {
				continue
			}
			out = append(out, got)
		}
		if resp.Header.Revision >= to && len(resp.Events) > 0 && resp.Events[len(resp.Events)-1].Kv.ModRevision >= to {
			return out
		}
	}
	return out
}

var debugWatch = false

// consumer reads a WatchMembership stream, is killed after killAfter
// batches, and resumes from the last revision it saw, until it has seen
// revision until.
type consumer struct {
	t       *testing.T
	api     membershipv1.MembershipServiceClient
	req     *membershipv1.WatchMembershipRequest
	start   int64         // the first stream's first progress
	started chan struct{} // closed once start is set, or the stream failed
	got     []ev
	resumes int
	err     error
}

func (c *consumer) run(killAfter int, until func() int64) {
	defer func() {
		select {
		case <-c.started:
		default:
			close(c.started) // failed before it started
		}
	}()
	var last int64
	batches := 0
	seen := map[int64]bool{}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		req := proto.Clone(c.req).(*membershipv1.WatchMembershipRequest)
		req.AfterRevision = last
		stream, err := c.api.WatchMembership(ctx, req)
		if err != nil {
			cancel()
			c.err = err
			return
		}
		for {
			m, err := stream.Recv()
			if err != nil {
				cancel()
				c.err = err
				return
			}
			if debugWatch {
				c.t.Logf("%v got %v", c.req, m)
			}
			switch k := m.Kind.(type) {
			case *membershipv1.WatchMembershipResponse_Progress:
				if c.start == 0 {
					c.start = k.Progress.Revision
					close(c.started)
				}
				if k.Progress.Revision < last {
					c.err = fmt.Errorf("progress went back from %d to %d", last, k.Progress.Revision)
				}
				last = max(last, k.Progress.Revision)
			case *membershipv1.WatchMembershipResponse_Events:
				rev := k.Events.Revision
				if rev <= last || seen[rev] {
					c.err = fmt.Errorf("revision %d after %d, or twice", rev, last)
				}
				seen[rev] = true
				for _, x := range k.Events.Events {
					if x.Revision != rev {
						c.err = fmt.Errorf("event of revision %d in the batch of %d", x.Revision, rev)
					}
					c.got = append(c.got, ev{x.Type, x.SocketId, x.User, x.Gateway, x.Room, x.Revision})
				}
				last = rev
				batches++
			}
			if u := until(); u > 0 && last >= u {
				cancel()
				return
			}
			if batches == killAfter && c.resumes == 0 {
				cancel() // the consumer dies; it resumes from last
				c.resumes++
				break
			}
		}
	}
}

// A consumer killed mid-stream and resumed from the last revision it saw
// gets exactly etcd's history of the keys its filters select, once, in
// revision order, each revision's events in one response: with no filter,
// a room, a user and a socket.
func TestWatchResumedMatchesEtcdHistory(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _, _ := startAPIWithOptions(t, e.Client, service.Options{Watch: service.WatchOptions{ProgressInterval: 100 * time.Millisecond}})
	g1, g2 := userGateway(t, e, "gw1"), userGateway(t, e, "gw2")
	ctx := context.Background()
	users := map[string]string{}
	var umu sync.Mutex
	dialAs := func(g int, user string) *sock {
		s := dialUser(t, []*stacktest.Gateway{g1, g2}[g], user)
		umu.Lock()
		users[s.ID] = user
		umu.Unlock()
		return s
	}
	join := func(id, room string) {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: id, Room: room}); err != nil {
			t.Fatal(err)
		}
	}
	s0 := dialAs(0, "alice")
	join(s0.ID, "x")

	filters := map[string]*membershipv1.WatchMembershipRequest{
		"none": {}, "room": {Room: "x"}, "user": {User: "alice"}, "socket": {SocketId: s0.ID},
	}
	var until sync.Map // "until" → int64
	untilRev := func() int64 { v, _ := until.Load("until"); n, _ := v.(int64); return n }
	cons := map[string]*consumer{}
	var wg sync.WaitGroup
	for name, f := range filters {
		c := &consumer{t: t, api: api, req: f, started: make(chan struct{})}
		cons[name] = c
		wg.Add(1)
		go func() { defer wg.Done(); c.run(3, untilRev) }()
	}
	for _, c := range cons {
		select {
		case <-c.started:
		case <-time.After(5 * time.Second):
			t.Fatal("a stream did not start")
		}
	}

	var closing []string
	for i := 0; i < 24; i++ {
		user := []string{"alice", "bob"}[i%2]
		s := dialAs(i%3%2, user)
		join(s.ID, "x")
		join(s.ID, "y")
		switch {
		case i%4 == 0:
			s.Close() // the gateway removes it: DISCONNECTED, then LEFT
		case i%4 == 1:
			if _, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: "x"}); err != nil {
				t.Fatal(err)
			}
		case i%4 == 2:
			closing = append(closing, s.ID)
		}
		if i == 12 {
			join(s0.ID, "y")
			if _, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s0.ID, Room: "x"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Several sockets in one transaction: one revision, one response.
	if _, err := api.Disconnect(ctx, &membershipv1.DisconnectRequest{SocketIds: closing}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Disconnect(ctx, &membershipv1.DisconnectRequest{Room: "y", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the gateways' removals of closed sockets
	resp, err := e.Client.Get(ctx, "/membership/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	final := resp.Header.Revision
	until.Store("until", final)
	wg.Wait()

	for name, c := range cons {
		t.Run(name, func(t *testing.T) {
			if c.err != nil {
				t.Fatal(c.err)
			}
			if c.resumes != 1 {
				t.Fatalf("consumer resumed %d times, want 1: too few batches to kill it mid-stream", c.resumes)
			}
			// Drop what the consumer saw past final (the gateways may
			// still be removing sockets).
			got := c.got
			for len(got) > 0 && got[len(got)-1].rev > final {
				got = got[:len(got)-1]
			}
			want := etcdHistory(t, e, c.start, final, filters[name], users)
			if len(want) < 4 {
				t.Fatalf("etcd's history holds %d events: the test proves little", len(want))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("stream (%d events):\n%v\netcd's history (%d events):\n%v", len(got), got, len(want), want)
			}
			t.Logf("%d events, as etcd's history has them, across a kill and resume", len(got))
		})
	}
}

// after_revision older than etcd's compaction gives OUT_OF_RANGE, COMPACTED,
// with the compaction revision; the compaction revision itself is fine.
func TestWatchCompacted(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _, _ := startAPIWithOptions(t, e.Client, service.Options{})
	ctx := context.Background()
	var rev int64
	for i := 0; i < 5; i++ {
		r, err := e.Client.Put(ctx, "/membership/filler", "x")
		if err != nil {
			t.Fatal(err)
		}
		rev = r.Header.Revision
	}
	if _, err := e.Client.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	stream, err := api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{AfterRevision: rev - 2})
	if err == nil {
		_, err = stream.Recv()
	}
	info := wantStatus(t, err, codes.OutOfRange, "COMPACTED", "")
	if info.Metadata["compact_revision"] != fmt.Sprint(rev) {
		t.Fatalf("compact_revision %q, want %d", info.Metadata["compact_revision"], rev)
	}
	stream, err = api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{AfterRevision: rev})
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil || m.GetProgress().GetRevision() != rev {
		t.Fatalf("from the compaction revision: %v %v", m, err)
	}
}

// A consumer that stops reading is ended with RESOURCE_EXHAUSTED once its
// stream's buffer has stayed full for the stall timeout, and is told the
// last revision it got in full.
func TestWatchSlowConsumerIsCutOff(t *testing.T) {
	e := testutil.StartEtcd(t)
	// A fixed flow-control window (no BDP growth) so the gRPC buffers fill
	// as they would on a slow network.
	api, _, _ := startAPIWithOptions(t, e.Client, service.Options{Watch: service.WatchOptions{BufferEvents: 100, StallTimeout: time.Second}},
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	g := startGateway(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	stream, err := api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// 1,000 events of ~300 bytes: far past a 64 KiB window and 100 events.
	joinAndLeaveLongRooms(t, api, s.ID)
	time.Sleep(1500 * time.Millisecond) // past the stall timeout
	n := 0
	for {
		_, err := stream.Recv()
		if err != nil {
			info := wantStatus(t, err, codes.ResourceExhausted, "SLOW_CONSUMER", "")
			t.Logf("cut off after %d responses read; resume after revision %s", n, info.Metadata["revision"])
			break
		}
		n++
		if n > 1100 {
			t.Fatal("the stream kept every event for a consumer that did not read")
		}
	}
	// A consumer that reads, slowly, the same history (ten times the
	// buffer, for longer than the stall timeout) gets all of it: the etcd
	// watch pauses for it instead.
	r, err := e.Client.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	replay, err := api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{AfterRevision: first.GetProgress().GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	events, began := 0, time.Now()
	for {
		m, err := replay.Recv()
		if err != nil {
			t.Fatalf("slow reader after %d events: %v", events, err)
		}
		events += len(m.GetEvents().GetEvents())
		if m.GetEvents().GetRevision() >= r.Header.Revision || m.GetProgress().GetRevision() >= r.Header.Revision {
			break
		}
		time.Sleep(150 * time.Millisecond)
	}
	if events != 1000 {
		t.Fatalf("slow reader got %d events, want 1000", events)
	}
	t.Logf("slow reader got all %d events in %v", events, time.Since(began).Round(time.Millisecond))
}

// A gateway that dies shows its sockets DISCONNECTED and LEFT when its
// lease expires, in the lease's one revision.
func TestWatchCrashedGatewayDisconnects(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _, _ := startAPIWithOptions(t, e.Client, service.Options{})
	doomed := startGatewayProcess(t, e, "doomed", 2*time.Second)
	s := dial(t, doomed.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	stream, err := api.WatchMembership(ctx, &membershipv1.WatchMembershipRequest{SocketId: s.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := doomed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if b := m.GetEvents(); b != nil {
			types := map[membershipv1.EventType]bool{}
			for _, x := range b.Events {
				types[x.Type] = true
			}
			if len(b.Events) != 2 || !types[membershipv1.EventType_EVENT_TYPE_DISCONNECTED] || !types[membershipv1.EventType_EVENT_TYPE_LEFT] {
				t.Fatalf("lease expiry gave %v", b)
			}
			return
		}
	}
}

// EndWatches (at shutdown) ends open streams with UNAVAILABLE, and the gRPC
// server's GracefulStop then returns at once.
func TestWatchEndsAtShutdown(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, svc, srv := startAPIWithOptions(t, e.Client, service.Options{})
	stream, err := api.WatchMembership(context.Background(), &membershipv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	svc.EndWatches()
	_, err = stream.Recv()
	wantStatus(t, err, codes.Unavailable, "SHUTTING_DOWN", "")
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop still waiting after 5s")
	}
}

// Bad filters are INVALID_ARGUMENT naming the field; streams past
// --max-watch-streams are RESOURCE_EXHAUSTED.
func TestWatchBadInputAndLimit(t *testing.T) {
	e := testutil.StartEtcd(t)
	api, _, _ := startAPIWithOptions(t, e.Client, service.Options{Watch: service.WatchOptions{MaxStreams: 1}})
	ctx := context.Background()
	recv := func(req *membershipv1.WatchMembershipRequest) error {
		stream, err := api.WatchMembership(ctx, req)
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	for _, c := range []struct {
		req   *membershipv1.WatchMembershipRequest
		field string
	}{
		{&membershipv1.WatchMembershipRequest{Room: "a\x01"}, "room"},
		{&membershipv1.WatchMembershipRequest{User: "a\nb"}, "user"},
		{&membershipv1.WatchMembershipRequest{SocketId: "nope"}, "socket_id"},
		{&membershipv1.WatchMembershipRequest{AfterRevision: -1}, "after_revision"},
		{&membershipv1.WatchMembershipRequest{AfterRevision: 1 << 40}, "after_revision"},
	} {
		wantStatus(t, recv(c.req), codes.InvalidArgument, "INVALID_ARGUMENT", c.field)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	first, err := api.WatchMembership(sctx, &membershipv1.WatchMembershipRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil {
		t.Fatal(err)
	}
	err = recv(&membershipv1.WatchMembershipRequest{})
	wantStatus(t, err, codes.ResourceExhausted, "TOO_MANY_STREAMS", "")
	if st, _ := status.FromError(err); errors.Is(err, context.Canceled) || st == nil {
		t.Fatal(err)
	}
}
