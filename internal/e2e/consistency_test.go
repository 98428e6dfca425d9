package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// Join on one replica, then Broadcast on another: the new member gets it.
// Leave on one, then Broadcast on the other: the old member does not. No
// WAIT_FOR_APPLY anywhere; ordering comes from revisions alone.
func TestBroadcastOrderedAfterMembershipAcrossReplicas(t *testing.T) {
	e := testutil.StartEtcd(t)
	replicaA := startMembershipServer(t, e)
	replicaB := startMembershipServer(t, e)
	g1 := startGateway(t, e, "gw1", 10*time.Second)
	g2 := startGateway(t, e, "gw2", 10*time.Second)
	// One socket per gateway takes part in every round; a third stays a member
	// throughout, so every broadcast has somewhere to go.
	movers := []*sock{dial(t, g1.WSURL), dial(t, g2.WSURL)}
	anchor := dial(t, g2.WSURL)
	ctx := context.Background()
	if _, err := replicaA.Join(ctx, &membershipv1.JoinRequest{SocketId: anchor.ID, Room: "game"}); err != nil {
		t.Fatal(err)
	}
	anchor.Expect("joined", "game")

	const rounds = 200
	for i := 0; i < rounds; i++ {
		for _, s := range movers {
			if _, err := replicaA.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "game"}); err != nil {
				t.Fatal(err)
			}
		}
		in := fmt.Sprintf("in-%d", i)
		if br, err := replicaB.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"game"}, Data: structpb.NewStringValue(in)}); err != nil || br.Delivered != 3 {
			t.Fatalf("round %d: broadcast after join: %v %v", i, br, err)
		}
		for _, s := range movers {
			if _, err := replicaB.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: "game"}); err != nil {
				t.Fatal(err)
			}
		}
		out := fmt.Sprintf("out-%d", i)
		if br, err := replicaA.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"game"}, Data: structpb.NewStringValue(out)}); err != nil || br.Delivered != 1 {
			t.Fatalf("round %d: broadcast after leave: %v %v", i, br, err)
		}
	}

	// Each mover saw exactly, per round: joined, the "in" message, left.
	missed, leaked := 0, 0
	for _, s := range movers {
		for i := 0; i < rounds; i++ {
			want := []string{"joined", "message:" + fmt.Sprintf(`"in-%d"`, i), "left"}
			for _, w := range want {
				f := s.Next(5 * time.Second)
				got := f.Type
				if f.Type == "message" {
					got += ":" + string(f.Data)
				}
				if got != w {
					if f.Type == "message" {
						leaked++
					} else {
						missed++
					}
					t.Errorf("socket %s round %d: got %s, want %s", s.ID, i, got, w)
				}
			}
		}
		s.ExpectNothing(100 * time.Millisecond)
	}
	for i := 0; i < rounds; i++ {
		for _, prefix := range []string{"in", "out"} {
			f := anchor.Expect("message", "game")
			if want := fmt.Sprintf(`"%s-%d"`, prefix, i); string(f.Data) != want {
				t.Fatalf("anchor got %s, want %s", f.Data, want)
			}
		}
	}
	t.Logf("%d rounds over 2 gateways and 2 replicas: %d missed, %d leaked", rounds, missed, leaked)
}

// A gateway cut off from etcd while its membership changed and the history was
// compacted re-lists on reconnect and applies what it missed.
func TestGatewayConvergesAfterCompactionWhileDisconnected(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	proxy := testutil.StartProxy(t, e.Endpoint)
	g := startGatewayVia(t, proxy.Endpoint(), "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	for _, room := range []string{"a", "b"} {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: room}); err != nil {
			t.Fatal(err)
		}
		s.Expect("joined", room)
	}

	proxy.Pause()
	if lr, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: "a"}); err != nil || !lr.WasMember {
		t.Fatalf("leave while the gateway is cut off: %v %v", lr, err)
	}
	jr, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Client.Compact(ctx, jr.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	proxy.Resume()

	got := map[string]bool{}
	for i := 0; i < 2; i++ {
		f := s.Next(15 * time.Second)
		got[f.Type+" "+f.Room] = true
	}
	if !got["left a"] || !got["joined c"] {
		t.Fatalf("after reconnecting the socket saw %v, want left a and joined c", got)
	}
	for room, want := range map[string]int64{"a": 0, "b": 1, "c": 1} {
		br, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{room}})
		if err != nil || br.Delivered != want {
			t.Fatalf("broadcast to %s: %v %v, want %d delivered", room, br, err, want)
		}
		if want == 1 {
			s.Expect("message", room)
		}
	}
}

// A socket that closes while its gateway cannot reach etcd is removed once it
// can: the lease would otherwise keep its keys for as long as the gateway runs.
func TestSocketClosedDuringAnEtcdOutageIsRemovedAfterIt(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	proxy := testutil.StartProxy(t, e.Endpoint)
	g := stacktest.StartGatewayVia(t, proxy.Endpoint(), gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, EtcdTimeout: 500 * time.Millisecond})
	s := dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	s.Expect("joined", "r")
	proxy.Pause()
	s.Conn.Close()
	time.Sleep(2 * time.Second) // the gateway's first removal attempts fail meanwhile
	if got := members(t, api, "r"); len(got) != 1 {
		t.Fatalf("members during the outage: %v", got)
	}
	proxy.Resume()
	waitFor(t, 10*time.Second, "the closed socket's keys to go", func() bool {
		return len(members(t, api, "r")) == 0
	})
	_, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: s.ID})
	wantStatus(t, err, codes.NotFound, "SOCKET_NOT_FOUND", "")
}
