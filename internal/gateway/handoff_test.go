package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// startPeer runs a resumable gateway id on cli that serves its internal
// API (for handoffs) and its sockets until the test ends.
func startPeer(t *testing.T, cli *clientv3.Client, id string, opts ...func(*Gateway)) (*Gateway, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{ID: id, AdvertiseAddr: lis.Addr().String(), ResumeWindow: time.Minute, LeaseTTL: 10 * time.Second}, cli)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(g)
	}
	gsrv := grpc.NewServer()
	g.RegisterGRPC(gsrv)
	go gsrv.Serve(lis)
	srv := httptest.NewServer(g.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		gsrv.Stop()
	})
	waitFor(t, 10*time.Second, "gateway registered", g.Ready)
	return g, "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// wsFrame is any frame a test reads: frame's fields and connected's.
type wsFrame struct {
	frame
	Resumed     *bool     `json:"resumed"`
	Rooms       *[]string `json:"rooms"`
	ResumeToken string    `json:"resume_token"`
	ResumeError string    `json:"resume_error"`
}

// readFrame reads one frame of conn.
func readFrame(t *testing.T, conn *websocket.Conn) wsFrame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var f wsFrame
	if _, b, err := conn.ReadMessage(); err != nil || json.Unmarshal(b, &f) != nil {
		t.Fatalf("read a frame: %v", err)
	}
	return f
}

// labeledCounter is the value of counter name with exactly labels.
func labeledCounter(t *testing.T, g *Gateway, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := g.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// dialWS opens a socket at u and returns it with its connected frame.
func dialWS(t *testing.T, u string) (*websocket.Conn, wsFrame) {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := readFrame(t, conn)
	if f.Type != "connected" {
		t.Fatalf("first frame %+v, want connected", f)
	}
	return conn, f
}

// A resume on gw2 of a socket of gw1 whose move fails after gw2 moved some
// of its rooms (a socket in more rooms than one transaction carries moves
// in steps; gw2's store stops the move after one, as a gateway that dies
// would) is undone by gw1: every key of the socket is back on gw1's lease,
// no move marker is left, and the socket resumes on gw1 with the same
// token, in all its rooms. The client at gw2 was told to try again (1013).
func TestHandoffUndoneWhenTheNewGatewayFailsMidMove(t *testing.T) {
	e := testutil.StartEtcd(t)
	g1, u1 := startPeer(t, e.Client, "gw1")
	g2, u2 := startPeer(t, e.Client, "gw2")
	if err := g2.store.SetTxnLimits(store.TxnLimits{MaxTxnOps: store.MinMaxTxnOps}); err != nil {
		t.Fatal(err)
	}
	var cut atomic.Bool
	g2.store.SetMoveHook(func(step string) error {
		if step == "rooms" {
			cut.Store(true)
			return errors.New("the gateway stops mid-move")
		}
		return nil
	})

	conn, hello := dialWS(t, u1)
	sid, err := store.ParseSocketID(hello.SocketID)
	if err != nil {
		t.Fatal(err)
	}
	var rooms []string // more than one transaction of 16 operations moves
	for i := range 20 {
		room := fmt.Sprintf("r%02d", i)
		rooms = append(rooms, room)
		if _, err := g1.store.Join(context.Background(), []store.SocketID{sid}, room); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, conn); f.Type != "joined" || f.Room != room {
			t.Fatalf("frame %+v, want joined %s", f, room)
		}
	}
	conn.UnderlyingConn().Close() // no close frame: the socket detaches
	waitFor(t, 10*time.Second, "the socket detached", func() bool { return g1.resumes.detached.Load() == 1 })

	resumeAt := func(u string) wsFrame {
		_, f := dialWS(t, u+"?resume_token="+url.QueryEscape(hello.ResumeToken)+"&last_seq=0")
		return f
	}
	// The socket stays gw1's: the client at gw2 is told to try again (1013
	// before any frame), not given a new socket that would lose it.
	if code := refusedWith(t, u2+"?resume_token="+url.QueryEscape(hello.ResumeToken)+"&last_seq=0"); code != websocket.CloseTryAgainLater {
		t.Fatalf("at gw2: closed with %d, want 1013 before any frame", code)
	}
	if !cut.Load() {
		t.Fatal("gw2 never moved a room")
	}
	waitFor(t, 10*time.Second, "the move undone", func() bool {
		info, _, err := g1.store.GetSocket(context.Background(), sid)
		return err == nil && info.MovingTo == nil && info.Gateway == "gw1" && len(info.Rooms) == len(rooms)
	})
	resp, err := e.Client.Get(context.Background(), store.DefaultPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if strings.Contains(k, hello.SocketID) && (clientv3.LeaseID(kv.Lease) != sid.Lease || strings.Contains(k, "gw2/")) {
			t.Errorf("key %s on lease %x after the undone move, want gw1's %x", k, kv.Lease, int64(sid.Lease))
		}
	}
	f := resumeAt(u1)
	if f.Resumed == nil || !*f.Resumed || f.SocketID != hello.SocketID || f.Rooms == nil || !slices.Equal(*f.Rooms, rooms) {
		t.Fatalf("at gw1: connected %+v, want socket %s resumed in %v", f, hello.SocketID, rooms)
	}
	if n := labeledCounter(t, g1, "gateway_handoffs_total", map[string]string{"side": "from", "outcome": "aborted"}); n != 1 {
		t.Errorf("gw1 counts %v aborted handoffs, want 1", n)
	}
}

// detachedIn dials g1 (at u1), has its socket join room and cuts the
// connection without a close frame: it returns the socket, detached on g1,
// and its connected frame.
func detachedIn(t *testing.T, g1 *Gateway, u1, room string) (store.SocketID, wsFrame) {
	t.Helper()
	conn, hello := dialWS(t, u1)
	sid, err := store.ParseSocketID(hello.SocketID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g1.store.Join(context.Background(), []store.SocketID{sid}, room); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, conn); f.Type != "joined" {
		t.Fatalf("frame %+v, want joined", f)
	}
	conn.UnderlyingConn().Close()
	waitFor(t, 10*time.Second, "the socket detached", func() bool { return g1.resumes.detached.Load() == 1 })
	return sid, hello
}

// holdMoves makes each move by g's store wait, once it read the socket,
// until letGo is called: moving is closed when the first one waits.
func holdMoves(t *testing.T, g *Gateway) (moving <-chan struct{}, letGo func()) {
	m, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	letGo = func() { released.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the gateways stop (cleanups run last first): a failed test hangs no move
	g.store.SetMoveHook(func(step string) error {
		if step == "whole-read" {
			once.Do(func() { close(m) })
			<-release
		}
		return nil
	})
	return m, letGo
}

// refusedWith dials u and returns the close code the gateway ends the
// connection with before sending any frame (it fails the test if a frame
// comes first).
func refusedWith(t *testing.T, u string) int {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, b, err := conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("got frame %s (err %v), want the connection closed before any frame", b, err)
	}
	return ce.Code
}

// While a resume of a socket on gw2 is moving it from gw1, another attempt
// with the same token, at gw1 or at gw2, is told to try again (1013 before
// any frame): the first may still fail and leave the token good, so the
// token is not refused as spent (UNKNOWN, a new socket, the old one lost).
// Once the first attempt resumed it, the token is spent: UNKNOWN.
func TestResumeDuringAHandoffIsToldToTryAgain(t *testing.T) {
	e := testutil.StartEtcd(t)
	g1, u1 := startPeer(t, e.Client, "gw1")
	g2, u2 := startPeer(t, e.Client, "gw2")
	moving, letGo := holdMoves(t, g2)
	_, hello := detachedIn(t, g1, u1, "r0")

	q := "?resume_token=" + url.QueryEscape(hello.ResumeToken) + "&last_seq=0"
	first := make(chan wsFrame, 1)
	go func() {
		c, _, err := websocket.DefaultDialer.Dial(u2+q, nil)
		if err != nil {
			close(first)
			return
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
		var f wsFrame
		if _, b, err := c.ReadMessage(); err == nil && json.Unmarshal(b, &f) == nil {
			first <- f
		}
		close(first)
	}()
	select {
	case <-moving:
	case <-time.After(10 * time.Second):
		t.Fatal("the first resume never began moving the socket")
	}
	for _, u := range []string{u1, u2} {
		if code := refusedWith(t, u+q); code != websocket.CloseTryAgainLater {
			t.Fatalf("a second attempt at %s during the handoff: closed with %d, want 1013", u, code)
		}
	}
	letGo()
	f, ok := <-first
	if !ok || f.Resumed == nil || !*f.Resumed || f.SocketID != hello.SocketID {
		t.Fatalf("the first attempt: %+v, want socket %s resumed", f, hello.SocketID)
	}
	_, late := dialWS(t, u1+q)
	if late.Resumed == nil || *late.Resumed || late.ResumeError != "UNKNOWN" {
		t.Fatalf("the spent token after the handoff: %+v, want a new socket with UNKNOWN", late)
	}
}

// A resume on gw2 whose old gateway gw1 dies mid-move (its lease ends
// right after the move began, as a SIGKILLed gateway's does after its TTL)
// gets a new socket with GATEWAY_LOST, and nothing of the old socket is
// left in etcd: its record went with gw1's lease, and gw2 removed what the
// move had put on its own.
func TestHandoffWhoseOldGatewayDiesMidMove(t *testing.T) {
	e := testutil.StartEtcd(t)
	g1, u1 := startPeer(t, e.Client, "gw1")
	g2, u2 := startPeer(t, e.Client, "gw2")
	conn, hello := dialWS(t, u1)
	sid, err := store.ParseSocketID(hello.SocketID)
	if err != nil {
		t.Fatal(err)
	}
	for _, room := range []string{"r0", "r1"} {
		if _, err := g1.store.Join(context.Background(), []store.SocketID{sid}, room); err != nil {
			t.Fatal(err)
		}
		readFrame(t, conn)
	}
	conn.UnderlyingConn().Close()
	waitFor(t, 10*time.Second, "the socket detached", func() bool { return g1.resumes.detached.Load() == 1 })
	var died atomic.Bool
	g2.store.SetMoveHook(func(step string) error {
		if step == "whole-read" && died.CompareAndSwap(false, true) {
			if _, err := e.Client.Revoke(context.Background(), sid.Lease); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	_, f := dialWS(t, u2+"?resume_token="+url.QueryEscape(hello.ResumeToken)+"&last_seq=0")
	if f.Resumed == nil || *f.Resumed || f.ResumeError != "GATEWAY_LOST" || f.SocketID == hello.SocketID {
		t.Fatalf("connected %+v, want a new socket with GATEWAY_LOST", f)
	}
	if !died.Load() {
		t.Fatal("the move never began")
	}
	resp, err := e.Client.Get(context.Background(), store.DefaultPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), hello.SocketID) {
			t.Errorf("key %s left after the old gateway died mid-move", kv.Key)
		}
	}
	if n := labeledCounter(t, g2, "gateway_handoffs_total", map[string]string{"side": "to", "outcome": "gateway_lost"}); n != 1 {
		t.Errorf("gw2 counts %v handoffs lost with their gateway, want 1", n)
	}
}

// A move whose last step committed but whose answer was lost (the store
// reports an error after the commit, as a lost answer or a timeout does)
// still resumes the socket on gw2: the keys are gw2's, and only finishing
// the handoff keeps it; undoing it would leave them there with no socket.
func TestHandoffWhoseMoveCommittedWithAnError(t *testing.T) {
	e := testutil.StartEtcd(t)
	g1, u1 := startPeer(t, e.Client, "gw1")
	g2, u2 := startPeer(t, e.Client, "gw2")
	var failed atomic.Bool
	g2.store.SetMoveHook(func(step string) error {
		if step == "whole" && failed.CompareAndSwap(false, true) {
			return errors.New("the answer to the commit was lost")
		}
		return nil
	})
	sid, hello := detachedIn(t, g1, u1, "r0")

	_, f := dialWS(t, u2+"?resume_token="+url.QueryEscape(hello.ResumeToken)+"&last_seq=0")
	if !failed.Load() {
		t.Fatal("the move's commit never ran")
	}
	if f.Resumed == nil || !*f.Resumed || f.SocketID != hello.SocketID {
		t.Fatalf("at gw2: connected %+v, want socket %s resumed", f, hello.SocketID)
	}
	info, _, err := g2.store.GetSocket(context.Background(), sid)
	if err != nil || info.Gateway != "gw2" || len(info.Rooms) != 1 {
		t.Fatalf("after the handoff: %+v %v, want the socket on gw2 in r0", info, err)
	}
}

// A move whose transaction committed only as its time ran out (its answer
// came too late, or not at all) still resumes the socket on gw2: gw2 reads
// it back with time of its own, finds the socket there, and finishes the
// handoff with time of its own.
func TestHandoffWhoseMoveRanOutOfTime(t *testing.T) {
	e := testutil.StartEtcd(t)
	g1, u1 := startPeer(t, e.Client, "gw1")
	g2, u2 := startPeer(t, e.Client, "gw2", func(g *Gateway) { g.handoffTimeout = 2 * time.Second })
	var late atomic.Bool
	g2.store.SetMoveHook(func(step string) error {
		if step == "whole" && late.CompareAndSwap(false, true) {
			time.Sleep(2*time.Second + 300*time.Millisecond)
			return errors.New("the answer came after the move's time ran out")
		}
		return nil
	})
	sid, hello := detachedIn(t, g1, u1, "r0")

	conn2, f := dialWS(t, u2+"?resume_token="+url.QueryEscape(hello.ResumeToken)+"&last_seq=0")
	if !late.Load() {
		t.Fatal("the move's transaction never ran")
	}
	if f.Resumed == nil || !*f.Resumed || f.SocketID != hello.SocketID || f.Rooms == nil || !slices.Equal(*f.Rooms, []string{"r0"}) {
		t.Fatalf("at gw2: connected %+v, want socket %s resumed in r0", f, hello.SocketID)
	}
	if _, err := g1.store.Join(context.Background(), []store.SocketID{sid}, "r1"); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, conn2); f.Type != "joined" || f.Room != "r1" {
		t.Fatalf("frame %+v, want joined r1 at gw2", f)
	}
}

// A handoff whose move committed but that gw2 gave up on (here the socket
// has moved on by the time gw2 reads it back) leaves
// the socket with no gateway holding it: gw1, undoing the handoff, finds
// it elsewhere and removes it rather than leaving it in its rooms for ever,
// and the token gets UNKNOWN (a new socket).
func TestHandoffUndoneWithTheSocketElsewhereRemovesIt(t *testing.T) {
	e := testutil.StartEtcd(t)
	g1, u1 := startPeer(t, e.Client, "gw1")
	g2, u2 := startPeer(t, e.Client, "gw2")
	ctx := context.Background()
	lease, err := e.Client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := store.Home{Gateway: "gw3", Lease: lease.ID}
	if _, err := g2.store.RegisterGateway(ctx, store.GatewayRecord{ID: "gw3", GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	sid, hello := detachedIn(t, g1, u1, "r0")
	var moved atomic.Bool
	g2.store.SetMoveHook(func(step string) error {
		if step != "whole" || !moved.CompareAndSwap(false, true) {
			return nil
		}
		info, _, err := g2.store.GetSocket(ctx, sid)
		if err != nil {
			return err
		}
		if err := g2.store.MoveSocket(ctx, sid, store.Home{Gateway: "gw2", Lease: info.Lease}, elsewhere); err != nil {
			return err
		}
		return errors.New("the answer to the move was lost")
	})
	q := "?resume_token=" + url.QueryEscape(hello.ResumeToken) + "&last_seq=0"
	if code := refusedWith(t, u2+q); code != websocket.CloseTryAgainLater {
		t.Fatalf("at gw2: closed with %d, want 1013 before any frame", code)
	}
	if !moved.Load() {
		t.Fatal("the move never committed")
	}
	waitFor(t, 10*time.Second, "every key of the socket removed", func() bool {
		resp, err := e.Client.Get(ctx, store.DefaultPrefix, clientv3.WithPrefix())
		if err != nil {
			return false
		}
		for _, kv := range resp.Kvs {
			if strings.Contains(string(kv.Key), hello.SocketID) {
				return false
			}
		}
		return true
	})
	if _, f := dialWS(t, u1+q); f.Resumed == nil || *f.Resumed || f.ResumeError != "UNKNOWN" {
		t.Fatalf("at gw1: connected %+v, want a new socket with UNKNOWN", f)
	}
}

// A client that gives up on a resume at gw2 while gw2 is still moving its
// socket from gw1 (its connect timeout passed) holds only gw1's token: the
// handoff finishes all the same, the socket stays detached on gw2, and
// gw2 takes that token as the socket's until a resume there spends it.
func TestHandoffFinishedAfterItsClientGaveUp(t *testing.T) {
	e := testutil.StartEtcd(t)
	g1, u1 := startPeer(t, e.Client, "gw1")
	g2, u2 := startPeer(t, e.Client, "gw2")
	moving, letGo := holdMoves(t, g2)
	sid, hello := detachedIn(t, g1, u1, "r0")

	q := "?resume_token=" + url.QueryEscape(hello.ResumeToken) + "&last_seq=0"
	gaveUp, _, err := websocket.DefaultDialer.Dial(u2+q, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-moving:
	case <-time.After(10 * time.Second):
		t.Fatal("the resume never began moving the socket")
	}
	gaveUp.UnderlyingConn().Close() // before any frame
	letGo()
	waitFor(t, 10*time.Second, "the socket handed off to gw2 and detached there", func() bool {
		info, _, err := g2.store.GetSocket(context.Background(), sid)
		return err == nil && info.Gateway == "gw2" && g2.resumes.detached.Load() == 1
	})

	conn2, f := dialWS(t, u2+q)
	if f.Resumed == nil || !*f.Resumed || f.SocketID != hello.SocketID || f.Rooms == nil || !slices.Equal(*f.Rooms, []string{"r0"}) {
		t.Fatalf("at gw2 with gw1's token: connected %+v, want socket %s resumed in r0", f, hello.SocketID)
	}
	if _, err := g1.store.Join(context.Background(), []store.SocketID{sid}, "r1"); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, conn2); f.Type != "joined" || f.Room != "r1" {
		t.Fatalf("frame %+v, want joined r1 at gw2", f)
	}
	// Spent by that resume, at either gateway.
	for _, u := range []string{u2, u1} {
		if _, f := dialWS(t, u+q); f.Resumed == nil || *f.Resumed || f.ResumeError != "UNKNOWN" {
			t.Fatalf("gw1's token again at %s: connected %+v, want a new socket with UNKNOWN", u, f)
		}
	}
}

// ForwardMessage takes only a message frame: anything else (which the
// writer could not splice a seq into) is INVALID_ARGUMENT, and the gateway
// lives on.
func TestForwardMessageRefusesAFrameThatIsNotAMessage(t *testing.T) {
	e := testutil.StartEtcd(t)
	g, _ := startPeer(t, e.Client, "gw1")
	cc, err := grpc.NewClient(g.cfg.AdvertiseAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := gatewayv1.NewGatewayServiceClient(cc)
	for _, frame := range []string{"1", "{}", `{"type":"joined","room":"r"}`, `{"type":"message",`} {
		_, err := api.ForwardMessage(context.Background(), &gatewayv1.ForwardMessageRequest{GatewayId: "gw1", SocketId: "gw1.1.x", Frame: []byte(frame)})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("frame %q: %v, want INVALID_ARGUMENT", frame, err)
		}
	}
}
