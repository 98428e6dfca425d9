package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
	"github.com/socketrooms/membership/internal/wsauth"
)

// Connection state recovery across gateways (internal/gateway/handoff.go):
// a socket held detached by gw1 resumes on gw2; real sockets, gateways,
// membership-server and etcd.

// handoffStack starts etcd, a membership-server and two resumable gateways
// gw1 and gw2 configured by cfg.
func handoffStack(t *testing.T, cfg gateway.Config) (*testutil.Etcd, membershipv1.MembershipServiceClient, *stacktest.Gateway, *stacktest.Gateway) {
	t.Helper()
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	cfg.ResumeWindow = time.Minute
	c1, c2 := cfg, cfg
	c1.ID, c2.ID = "gw1", "gw2"
	return e, api, startResumeGateway(t, e, c1), startResumeGateway(t, e, c2)
}

// wantKeysOn checks that every key of socket id is on gateway gw's lease
// (its record's: one lease shard), the record naming gw, and none under
// another gateway's gwm/ prefix.
func wantKeysOn(t *testing.T, cli *clientv3.Client, id, gw string, rooms int) {
	t.Helper()
	ctx := context.Background()
	rec, err := cli.Get(ctx, store.DefaultPrefix+"gateways/"+gw)
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatalf("gateway %s's record: %v, %v", gw, rec, err)
	}
	var g store.GatewayRecord
	if err := json.Unmarshal(rec.Kvs[0].Value, &g); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, store.DefaultPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	memberships := 0
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), store.DefaultPrefix)
		if !strings.Contains(k, id) {
			continue
		}
		if clientv3.LeaseID(kv.Lease) != g.Lease {
			t.Errorf("key %s on lease %x, want %s's %x", k, kv.Lease, gw, int64(g.Lease))
		}
		if strings.HasPrefix(k, "gwm/") {
			if !strings.HasPrefix(k, "gwm/"+gw+"/") {
				t.Errorf("membership key %s, want it under gwm/%s/", k, gw)
			}
			memberships++
		}
		if k == "sockets/"+id {
			var r store.SocketRecord
			if err := json.Unmarshal(kv.Value, &r); err != nil || r.Gateway != gw {
				t.Errorf("socket record %s (%v), want gateway %s", kv.Value, err, gw)
			}
		}
	}
	if memberships != rooms {
		t.Errorf("%d membership keys, want %d", memberships, rooms)
	}
}

// messages reads frames until n messages came (other frames are errors)
// and returns their data strings and seqs.
func messages(t *testing.T, s *sock, n int) (data []string, seqs []uint64) {
	t.Helper()
	for len(data) < n {
		f := s.Next(10 * time.Second)
		if f.Type != "message" {
			t.Fatalf("frame %+v, want a message (%d of %d so far)", f, len(data), n)
		}
		var d struct{ Text string }
		if err := json.Unmarshal(f.Data, &d); err != nil {
			t.Fatalf("message data %s: %v", f.Data, err)
		}
		data, seqs = append(data, d.Text), append(seqs, f.Seq)
	}
	return data, seqs
}

// A socket of gw1 in two rooms has its TCP connection cut while 20
// Broadcasts are sent to its rooms; it resumes on gw2 with last_seq and
// gets exactly those 20, in order, numbered on from gw1's seq, then live
// ones from gw2. Its record and memberships end on gw2's lease, none on
// gw1's; gw1 kept no socket.
func TestHandoffResumesOnAnotherGateway(t *testing.T) {
	// One lease per gateway: "gw2's lease" is then the one its record names
	// (wantKeysOn); handoffs between sharded gateways are covered by the
	// gateway package's tests, which run at the default LeaseShards.
	e, api, g1, g2 := handoffStack(t, gateway.Config{LeaseShards: 1})
	s := dial(t, g1.WSURL)
	token := s.Connected.ResumeToken
	for _, room := range []string{"a", "b"} {
		joinRoom(t, api, s.ID, room)
		s.Expect("joined", room)
	}
	bcast(t, api, "a", "warm")
	expectMessage(t, s, "warm", 1)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 20 {
			if i == 5 {
				cut(s)
			}
			bcast(t, api, []string{"a", "b"}[i%2], fmt.Sprint("m", i))
		}
	}()
	got := drain(t, s)
	wg.Wait()
	last := uint64(1)
	for _, f := range got {
		if f.Type == "message" {
			last = f.Seq
		}
	}
	waitFor(t, 10*time.Second, "the socket detached", func() bool { return isDetached(api, s.ID) })

	r := dial(t, resumeURL(g2, token, last))
	wantResumed(t, r, s.ID, "a", "b")
	for seq := last + 1; seq <= 21; seq++ {
		expectMessage(t, r, fmt.Sprint("m", seq-2), seq)
	}
	bcast(t, api, "b", "live")
	expectMessage(t, r, "live", 22)
	r.ExpectNothing(200 * time.Millisecond)

	wantKeysOn(t, e.Client, s.ID, "gw2", 2)
	if n := g1.G.Sockets(); n != 0 {
		t.Errorf("gw1 holds %d sockets after the handoff, want 0", n)
	}
	if n := metric(t, g2, `gateway_handoffs_total{outcome="handed_off",side="to"}`); n != 1 {
		t.Errorf("gw2 counts %v handoffs to it, want 1", n)
	}
	if n := metric(t, g1, `gateway_handoffs_total{outcome="handed_off",side="from"}`); n != 1 {
		t.Errorf("gw1 counts %v handoffs from it, want 1", n)
	}
	waitFor(t, 10*time.Second, "GetSocket to show the socket attached on gw2", func() bool {
		resp, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: s.ID})
		return err == nil && resp.Socket.GetDetachedSince() == nil && resp.Socket.GetGateway() == "gw2"
	})
	// The socket lives on at gw2: its end removes it there.
	r.Close()
	waitFor(t, 10*time.Second, "the socket removed", func() bool {
		_, err := api.GetSocket(context.Background(), &membershipv1.GetSocketRequest{SocketId: s.ID})
		return err != nil
	})
}

// Broadcasts and Blasts run without pause while the socket is handed off:
// every one reaches it exactly once, the seq going up by one, in the order
// they were sent (each returned before the next began).
func TestHandoffUnderASteadyBroadcastStream(t *testing.T) {
	_, api, g1, g2 := handoffStack(t, gateway.Config{})
	s := dial(t, g1.WSURL)
	token := s.Connected.ResumeToken
	for _, room := range []string{"a", "b"} {
		joinRoom(t, api, s.ID, room)
		s.Expect("joined", room)
	}
	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%3 == 2 {
				if _, err := api.Blast(context.Background(), &membershipv1.BlastRequest{Event: "e", Data: text(fmt.Sprint("m", i))}); err != nil {
					t.Error(err)
					return
				}
			} else {
				bcast(t, api, []string{"a", "b"}[i%2], fmt.Sprint("m", i))
			}
			sent.Add(1)
		}
	}()
	waitFor(t, 10*time.Second, "a few messages sent", func() bool { return sent.Load() >= 10 })
	cut(s)
	var before []stacktest.Frame
	for _, f := range drain(t, s) {
		if f.Type == "message" {
			before = append(before, f)
		}
	}
	last := uint64(0)
	if len(before) > 0 {
		last = before[len(before)-1].Seq
	}
	waitFor(t, 10*time.Second, "the socket detached", func() bool { return isDetached(api, s.ID) })
	r := dial(t, resumeURL(g2, token, last))
	wantResumed(t, r, s.ID, "a", "b")
	waitFor(t, 10*time.Second, "messages sent after the resume", func() bool { return sent.Load() >= int64(last)+40 })
	close(stop)
	<-done
	n := int(sent.Load())
	data, seqs := messages(t, r, n-int(last))
	for i := range data {
		if want := fmt.Sprint("m", int(last)+i); data[i] != want || seqs[i] != last+uint64(i)+1 {
			t.Fatalf("message %d after the resume: %q seq %d, want %q seq %d (last %d; got %v %v)", i, data[i], seqs[i], want, last+uint64(i)+1, last, data, seqs)
		}
	}
	r.ExpectNothing(300 * time.Millisecond)
}

// Join and Leave of a socket detached on gw1 apply before it resumes on
// gw2: the resumed frame lists its rooms as they are, and a Broadcast to the
// room it joined while detached reaches it.
func TestHandoffAfterJoinAndLeaveWhileDetached(t *testing.T) {
	_, api, g1, g2 := handoffStack(t, gateway.Config{})
	s := detachedSocket(t, api, g1, "a")
	joinRoom(t, api, s.ID, "c")
	if _, err := api.Leave(context.Background(), &membershipv1.LeaveRequest{SocketId: s.ID, Room: "a"}); err != nil {
		t.Fatal(err)
	}
	bcast(t, api, "c", "while-detached")
	bcast(t, api, "a", "not-a-member")
	r := dial(t, resumeURL(g2, s.Connected.ResumeToken, 0))
	wantResumed(t, r, s.ID, "c")
	expectMessage(t, r, "while-detached", 1)
	bcast(t, api, "c", "live")
	expectMessage(t, r, "live", 2)
	r.ExpectNothing(200 * time.Millisecond)
}

// At gw2, a forged token, another user's connection with a good token, and
// a token already spent all get UNKNOWN (from gw1, which verifies them);
// the socket, resumed once, is not disturbed. A token of a gateway that
// stopped gets GATEWAY_LOST.
func TestHandoffRefusesForgedReusedAndCrossUserTokens(t *testing.T) {
	key, keyFile := jwtKey(t)
	v, err := wsauth.Load("", keyFile, "", "chat")
	if err != nil {
		t.Fatal(err)
	}
	_, api, g1, g2 := handoffStack(t, gateway.Config{Authenticate: v.Authenticate})
	as := func(user string) http.Header {
		return http.Header{"Authorization": {"Bearer " + signToken(t, key, user, time.Now().Add(time.Hour))}}
	}
	dialAs := func(user, u string) *sock { return stacktest.DialWith(t, u, as(user)) }

	s := dialAs("alice", g1.WSURL)
	joinRoom(t, api, s.ID, "r")
	s.Expect("joined", "r")
	token := s.Connected.ResumeToken
	cut(s)
	drain(t, s)

	parts := strings.SplitN(token, ".", 5)
	forged := strings.Join([]string{parts[0], parts[1], parts[2], strings.Repeat("A", len(parts[3])), parts[4]}, ".")
	f := dialAs("alice", resumeURL(g2, forged, 0))
	wantNotResumed(t, f, s.ID, "UNKNOWN")
	b := dialAs("bob", resumeURL(g2, token, 0))
	wantNotResumed(t, b, s.ID, "UNKNOWN")

	r := dialAs("alice", resumeURL(g2, token, 0))
	wantResumed(t, r, s.ID, "r")
	for _, g := range []*stacktest.Gateway{g1, g2} {
		again := dialAs("alice", resumeURL(g, token, 0))
		wantNotResumed(t, again, s.ID, "UNKNOWN")
	}
	r.ExpectNothing(100 * time.Millisecond)
	bcast(t, api, "r", "still")
	expectMessage(t, r, "still", 1)

	// gw1 stops: a token it issued gets GATEWAY_LOST at gw2.
	s2 := dialAs("carol", g1.WSURL)
	cut(s2)
	drain(t, s2)
	g1.Stop()
	lost := dialAs("carol", resumeURL(g2, s2.Connected.ResumeToken, 0))
	wantNotResumed(t, lost, s2.ID, "GATEWAY_LOST")
}

// A Broadcast whose Deliver reaches gw1 only after the socket was handed
// off to gw2 (its revision below the move's: gw1 still owed it the
// message) is forwarded by gw1 to gw2, which numbers it next; the
// Broadcast returns once it is forwarded.
func TestHandoffForwardsALateDeliver(t *testing.T) {
	api, g1, g2, s, late, release := lateDeliverStack(t)
	r := dial(t, resumeURL(g2, s.Connected.ResumeToken, 0))
	wantResumed(t, r, s.ID, "a")
	r.ExpectNothing(100 * time.Millisecond)
	close(release)
	if resp := <-late; resp.err != nil || resp.failedGateways != 0 {
		t.Fatalf("the late Broadcast: %+v", resp)
	}
	expectMessage(t, r, "late", 1)
	bcast(t, api, "a", "live")
	expectMessage(t, r, "live", 2)
	r.ExpectNothing(200 * time.Millisecond)
	if n := metric(t, g1, `gateway_handoff_forwarded_messages_total{result="forwarded"}`); n != 1 {
		t.Errorf("gw1 forwarded %v messages, want 1", n)
	}
}

// lateOutcome is how a Broadcast ended.
type lateOutcome struct {
	failedGateways int32
	err            error
}

// lateDeliverStack is gw1 (in process, draining up to 10 s when asked) and
// gw2, both resumable, and a socket of gw1 in room "a", detached, with a
// Broadcast to "a" whose targets are resolved (gw1) and whose Deliver to
// gw1 waits until release is closed; late gets how it ended.
func lateDeliverStack(t *testing.T) (api membershipv1.MembershipServiceClient, g1, g2 *stacktest.Gateway, s *sock, late chan lateOutcome, release chan struct{}) {
	t.Helper()
	e := testutil.StartEtcd(t)
	api = startMembershipServer(t, e)
	var hold atomic.Bool
	held := make(chan struct{})
	release = make(chan struct{})
	delay := grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if strings.HasSuffix(info.FullMethod, "/Deliver") && hold.CompareAndSwap(true, false) {
			held <- struct{}{}
			<-release
		}
		return h(ctx, req)
	})
	g1 = stacktest.StartGatewayServing(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, ResumeWindow: time.Minute, DrainTimeout: 10 * time.Second}, delay)
	g2 = startResumeGateway(t, e, gateway.Config{ID: "gw2", ResumeWindow: time.Minute})
	s = detachedSocket(t, api, g1, "a")

	hold.Store(true)
	late = make(chan lateOutcome, 1)
	go func() {
		resp, err := api.Broadcast(context.Background(), &membershipv1.BroadcastRequest{Rooms: []string{"a"}, Event: "e", Data: text("late")})
		late <- lateOutcome{failedGateways: resp.GetFailedGateways(), err: err}
	}()
	<-held // the Broadcast's targets are resolved (gw1) and its Deliver waits
	return api, g1, g2, s, late, release
}

// A gateway that drains once its last socket was handed off stays up for
// the Delivers it still owes that socket (a Broadcast resolved before the
// move): it forwards the late one to the new gateway, and only then stops,
// as the gateway binary does after its drain.
func TestDrainWaitsForALateDeliverOfAHandedOffSocket(t *testing.T) {
	_, g1, g2, s, late, release := lateDeliverStack(t)
	r := dial(t, resumeURL(g2, s.Connected.ResumeToken, 0))
	wantResumed(t, r, s.ID, "a")
	drained := make(chan struct{})
	go func() {
		g1.G.Drain(context.Background()) // no socket left: the drain's loop ends at once
		g1.Stop()
		close(drained)
	}()
	time.Sleep(500 * time.Millisecond) // what a drain with nothing left took before it waited
	close(release)
	if resp := <-late; resp.err != nil || resp.failedGateways != 0 {
		t.Fatalf("the late Broadcast: %+v, want it delivered through gw1", resp)
	}
	expectMessage(t, r, "late", 1)
	<-drained
}

// A socket whose gateway was SIGKILLed (its record still in etcd, its
// lease not yet expired) gets a new socket with GATEWAY_LOST when it
// resumes on another gateway: the old one does not answer.
func TestHandoffFromASIGKILLedGateway(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	doomed := startGatewayProcess(t, e, "doomed", 10*time.Second, "--resume-window", "1m")
	g2 := startResumeGateway(t, e, gateway.Config{ID: "gw2", ResumeWindow: time.Minute})
	s := detachedSocket(t, api, &stacktest.Gateway{WSURL: doomed.WSURL}, "a")
	if err := doomed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-doomed.done
	if rec, err := e.Client.Get(context.Background(), store.DefaultPrefix+"gateways/doomed"); err != nil || len(rec.Kvs) != 1 {
		t.Fatalf("the killed gateway's record: %v, %v; want it still there (its lease lives on)", rec, err)
	}
	r := dial(t, resumeURL(g2, s.Connected.ResumeToken, 0))
	wantNotResumed(t, r, s.ID, "GATEWAY_LOST")
}
