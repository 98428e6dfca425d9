package e2e

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/testutil"
)

// The sequential specification of one room: the set of its member sockets
// (a bitmask over the test's sockets).
type opKind int

const (
	opJoin opKind = iota
	opLeave
	opList
)

type linInput struct {
	kind   opKind
	room   string
	socket int
}

type linOutput struct {
	unknown bool // the call failed: it may or may not have taken effect
	flag    bool // already_member for Join, was_member for Leave
	// The call was sent to etcd again after a lost attempt (retried in the
	// response): its flag may describe its own earlier attempt, so only its
	// effect is checked.
	retried bool
	members uint64 // for ListMembers
}

var roomModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byRoom := map[string][]porcupine.Operation{}
		for _, op := range history {
			r := op.Input.(linInput).room
			byRoom[r] = append(byRoom[r], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byRoom {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(uint64), input.(linInput), output.(linOutput)
		bit := uint64(1) << in.socket
		switch in.kind {
		case opJoin:
			return out.unknown || out.retried || out.flag == (s&bit != 0), s | bit
		case opLeave:
			return out.unknown || out.retried || out.flag == (s&bit != 0), s &^ bit
		default:
			return out.members == s, s
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		return fmt.Sprintf("%v %s s%d -> %+v", in.kind, in.room, in.socket, out)
	},
}

// Concurrent clients on two replicas over a 3-member etcd cluster whose leader
// is stopped and restarted mid-run: every acknowledged answer must fit one
// sequential order of Join/Leave/ListMembers per room.
func TestMembershipHistoryIsLinearizableWhileAMemberRestarts(t *testing.T) {
	cluster := testutil.StartCluster(t, 3)
	eps := cluster.Endpoints()
	replicas := []membershipv1.MembershipServiceClient{
		startMembershipServerWith(t, testutil.NewClient(t, eps...)),
		startMembershipServerWith(t, testutil.NewClient(t, eps...)),
	}
	g := startGatewayVia(t, strings.Join(eps, ","), "gw1", 10*time.Second)
	const nSockets, nClients, rooms = 4, 6, 2
	socks := make([]*sock, nSockets)
	index := map[string]int{}
	for i := range socks {
		socks[i] = dial(t, g.WSURL)
		index[socks[i].ID] = i
	}

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	const phase = 1500 * time.Millisecond
	stop := make(chan struct{})
	var mu sync.Mutex
	var history []porcupine.Operation
	var failed int
	var wg sync.WaitGroup
	for c := 0; c < nClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			for {
				select {
				case <-stop:
					return
				default:
				}
				in := linInput{kind: opKind(rng.IntN(3)), room: fmt.Sprintf("room-%d", rng.IntN(rooms)), socket: rng.IntN(nSockets)}
				api := replicas[rng.IntN(len(replicas))]
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				var out linOutput
				var err error
				call := now()
				switch in.kind {
				case opJoin:
					var r *membershipv1.JoinResponse
					if r, err = api.Join(ctx, &membershipv1.JoinRequest{SocketId: socks[in.socket].ID, Room: in.room}); err == nil {
						out.flag, out.retried = r.AlreadyMember, r.Retried
					}
				case opLeave:
					var r *membershipv1.LeaveResponse
					if r, err = api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: socks[in.socket].ID, Room: in.room}); err == nil {
						out.flag, out.retried = r.WasMember, r.Retried
					}
				case opList:
					var r *membershipv1.ListMembersResponse
					if r, err = api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: in.room}); err == nil {
						for _, m := range r.Members {
							out.members |= 1 << index[m.SocketId]
						}
					}
				}
				ret := now()
				cancel()
				mu.Lock()
				if err != nil {
					failed++
					if in.kind != opList {
						// May have taken effect at any time after the call.
						history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: linOutput{unknown: true}, Return: math.MaxInt64})
					}
				} else {
					history = append(history, porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret})
				}
				mu.Unlock()
			}
		}()
	}

	// Stop the leader after a phase of load, restart it after another, and
	// keep the load on for a third.
	cli := testutil.NewClient(t, eps...)
	time.Sleep(phase)
	leader := -1
	for i, ep := range eps {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no leader found")
	}
	cluster.Stop(leader)
	stopped := now()
	time.Sleep(phase)
	if err := cluster.Restart(leader); err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	restarted := now()
	time.Sleep(phase)
	close(stop)
	wg.Wait()

	var before, during, after int
	for _, op := range history {
		switch {
		case op.Return == math.MaxInt64:
		case op.Call > restarted:
			after++
		case op.Call > stopped:
			during++
		default:
			before++
		}
	}
	t.Logf("%d operations acknowledged (%d before the leader stopped, %d while it was down, %d after it restarted), %d failed",
		before+during+after, before, during, after, failed)
	if during == 0 || after == 0 {
		t.Fatalf("too few operations around the restart to say anything: %d during, %d after", during, after)
	}
	if res := porcupine.CheckOperationsTimeout(roomModel, history, time.Minute); res != porcupine.Ok {
		t.Fatalf("history of %d operations is not linearizable: %v", len(history), res)
	}
}

// A replica whose etcd member has lost its quorum answers UNAVAILABLE, quickly
// and retryably, and never a stale answer.
func TestNoQuorumIsUnavailableNotWrong(t *testing.T) {
	cluster := testutil.StartCluster(t, 3)
	eps := cluster.Endpoints()
	g := startGatewayVia(t, strings.Join(eps, ","), "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	// This replica only talks to member 0.
	api := startMembershipServerWith(t, testutil.NewClient(t, eps[0]))
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r"}); err != nil {
		t.Fatal(err)
	}
	cluster.Stop(1)
	cluster.Stop(2)
	calls := map[string]func(context.Context) error{
		"Join": func(ctx context.Context) error {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r2"})
			return err
		},
		"Leave": func(ctx context.Context) error {
			_, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: s.ID, Room: "r"})
			return err
		},
		"ListMembers": func(ctx context.Context) error {
			_, err := api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "r"})
			return err
		},
		"Broadcast": func(ctx context.Context) error {
			_, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}})
			return err
		},
	}
	// The member notices the lost leader after an election timeout; until
	// then a call may wait out its deadline (its outcome unknown). From then on
	// every call fails fast, before anything is proposed.
	waitFor(t, 15*time.Second, "the member to notice it has no leader", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return status.Code(calls["ListMembers"](cctx)) == codes.Unavailable
	})
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			// Failing fast is told from waiting out the deadline by half the
			// deadline, room for a loaded machine without a tight bound.
			const deadline = 10 * time.Second
			cctx, cancel := context.WithTimeout(ctx, deadline)
			defer cancel()
			start := time.Now()
			err := call(cctx)
			wantStatus(t, err, codes.Unavailable, "ETCD_UNAVAILABLE", "")
			if d := time.Since(start); d > deadline/2 {
				t.Errorf("took %v to fail: it waited for the deadline", d)
			}
		})
	}
	// Quorum back: the committed membership is there, the failed calls changed nothing.
	if err := cluster.Restart(1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "quorum", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := api.ListMembers(cctx, &membershipv1.ListMembersRequest{Room: "r"})
		return err == nil
	})
	if got := members(t, api, "r"); len(got) != 1 || got[0] != s.ID {
		t.Fatalf("members of r: %v", got)
	}
	if got := members(t, api, "r2"); len(got) != 0 {
		t.Fatalf("a failed join took effect: %v", got)
	}
}
