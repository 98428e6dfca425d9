package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/service"
	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// registerSockets publishes gateway gw and n socket records on one lease
// straight into etcd, as a gateway holding n connections does, without
// opening n WebSockets.
func registerSockets(t *testing.T, cli *clientv3.Client, gw string, n int) []string {
	t.Helper()
	ctx := context.Background()
	st := store.New(cli, "")
	lease, err := cli.Grant(ctx, 120)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.RegisterGateway(ctx, store.GatewayRecord{ID: gw, GRPCAddr: "127.0.0.1:1", Lease: lease.ID}); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i := range ids {
		sid := store.NewSocketID(gw, lease.ID)
		if _, err := st.AddSocket(ctx, sid, store.SocketRecord{Gateway: gw, ConnectedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		ids[i] = sid.String()
	}
	return ids
}

func roomOfBytes(i, n int) string {
	p := fmt.Sprintf("room-%03d-", i)
	return p + strings.Repeat("x", n-len(p))
}

// --etcd-max-request-bytes and --etcd-max-txn-ops size every transaction to
// an etcd started with the same limits: concurrent calls all succeed, a call
// that cannot fit one transaction is INVALID_ARGUMENT naming socket_ids and
// the sizes, and the sockets allowed per call follow the operation limit.
func TestEtcdLimitFlags(t *testing.T) {
	const maxBytes, maxOps = 32 << 10, 64
	e := testutil.StartEtcdWithLimits(t, maxBytes, maxOps)
	api, _ := startServerProcess(t, e.Endpoint, "--etcd-max-request-bytes", fmt.Sprint(maxBytes), "--etcd-max-txn-ops", fmt.Sprint(maxOps))
	ids := registerSockets(t, e.Client, "gw1", 100)
	ctx := context.Background()

	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			group := ids[i%10*10 : i%10*10+10]
			if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: group, Room: roomOfBytes(i, 200)}); err != nil {
				t.Errorf("join %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 40; i++ {
		if got := members(t, api, roomOfBytes(i, 200)); len(got) != 10 {
			t.Errorf("room %d: %d members, want 10", i, len(got))
		}
	}

	// 40 sockets: within the operation limit (50 at 64), past the bytes.
	_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: ids[:40], Room: roomOfBytes(99, 200)})
	md := wantStatus(t, err, codes.InvalidArgument, service.ReasonTransactionTooLarge, "socket_ids").Metadata
	var need, limit int
	fmt.Sscan(md["bytes"], &need)
	fmt.Sscan(md["max_bytes"], &limit)
	if limit <= 0 || limit > maxBytes || need <= limit {
		t.Fatalf("metadata %v", md)
	}
	if got := members(t, api, roomOfBytes(99, 200)); len(got) != 0 {
		t.Fatalf("a refused Join wrote %d members", len(got))
	}
	_, err = api.Join(ctx, &membershipv1.JoinRequest{SocketIds: ids[:51], Room: "short"})
	wantStatus(t, err, codes.InvalidArgument, service.ReasonInvalidArgument, "socket_ids")
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: ids[:50], Room: "short"}); err != nil {
		t.Fatalf("join of 50 sockets at --etcd-max-txn-ops 64: %v", err)
	}

	// Room-wide calls stream through the same limits.
	add, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "short", DestRooms: []string{roomOfBytes(200, 250), roomOfBytes(201, 250)}})
	if err != nil || add.Sockets != 50 || add.Changed != 100 {
		t.Fatalf("add: %v %v", add, err)
	}
	left, err := api.LeaveAll(ctx, &membershipv1.LeaveAllRequest{Room: roomOfBytes(200, 250)})
	// Each of the 50 was in short, the two long rooms and 4 rooms above.
	if err != nil || left.Sockets != 50 || left.Changed != 50*7 {
		t.Fatalf("leave all: %v %v", left, err)
	}

	for _, flags := range [][]string{{"--etcd-max-txn-ops", "8"}, {"--etcd-max-request-bytes", "1024"}} {
		// Bounded: a binary that wrongly accepted the value would serve on.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(cctx, binary(t, "membership-server"), append([]string{"--etcd-endpoints", e.Endpoint}, flags...)...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), flags[0]) {
			t.Errorf("%v: %v %s", flags, err, out)
		}
	}
}

// A room-wide call whose pinned read revision is compacted before its last
// page fails with ABORTED / REVISION_COMPACTED saying how many changes it
// applied; those stay, and re-running the call finishes it.
func TestRoomWideCallWithCompactedRevision(t *testing.T) {
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	ids := registerSockets(t, e.Client, "gw1", 1500)
	ctx := context.Background()
	for i := 0; i < len(ids); i += 100 {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: ids[i : i+100], Room: "src"}); err != nil {
			t.Fatal(err)
		}
	}
	dests := make([]string, 10)
	for i := range dests {
		dests[i] = fmt.Sprintf("d%d", i)
	}

	// Compact as soon as the call's first change is committed: the call's
	// next page read, at its pinned revision, then finds it compacted.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := e.Client.Watch(wctx, "/membership/rooms/d", clientv3.WithPrefix())
	compacted := make(chan error, 1)
	go func() {
		for resp := range wch {
			if len(resp.Events) > 0 {
				_, err := e.Client.Compact(ctx, resp.Events[0].Kv.ModRevision)
				compacted <- err
				return
			}
		}
	}()
	_, err := api.AddRoomMembersToRooms(ctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "src", DestRooms: dests})
	if cerr := <-compacted; cerr != nil {
		t.Fatal(cerr)
	}
	md := wantStatus(t, err, codes.Aborted, service.ReasonRevisionCompacted, "").Metadata
	var applied int
	if _, err := fmt.Sscan(md["applied"], &applied); err != nil || applied <= 0 || applied >= len(ids)*len(dests) || md["revision"] == "" {
		t.Fatalf("metadata %v", md)
	}
	var present int
	for _, d := range dests {
		present += len(members(t, api, d))
	}
	if present != applied {
		t.Fatalf("%d memberships present, %d reported applied", present, applied)
	}

	// 15,000 memberships in one call: more than the server's default
	// deadline allows on a loaded machine.
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer rcancel()
	again, err := api.AddRoomMembersToRooms(rctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "src", DestRooms: dests})
	if err != nil || again.Sockets != int64(len(ids)) || again.Changed != int64(len(ids)*len(dests)-applied) {
		t.Fatalf("re-run: %v %v (applied before %d)", again, err, applied)
	}
	for _, d := range dests {
		if got := members(t, api, d); len(got) != len(ids) {
			t.Fatalf("%s: %d members", d, len(got))
		}
	}
}

// A gateway started with the same --etcd-max-txn-ops and
// --etcd-max-request-bytes as etcd removes a closed socket that is in more
// rooms than one transaction may hold: every key of the socket (its record,
// its gwm/ and rooms/ memberships) is gone soon after the close, long before
// the gateway's lease would take them. Sized for etcd's defaults instead,
// the removal is one transaction etcd refuses, and the keys stay.
func TestGatewayRemovesSocketWithinEtcdLimits(t *testing.T) {
	const maxBytes, maxOps, rooms = 16 << 10, 32, 100
	e := testutil.StartEtcdWithLimits(t, maxBytes, maxOps)
	limitFlags := []string{"--etcd-max-request-bytes", fmt.Sprint(maxBytes), "--etcd-max-txn-ops", fmt.Sprint(maxOps)}
	api, _ := startServerProcess(t, e.Endpoint, limitFlags...)
	g := startGatewayProcess(t, e, "gwlimits", time.Minute, limitFlags...)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	for i := 0; i < rooms; i++ {
		if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: roomOfBytes(i, 100)}); err != nil {
			t.Fatalf("join %d: %v", i, err)
		}
	}
	socketKeys := func() int {
		resp, err := e.Client.Get(ctx, store.DefaultPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, kv := range resp.Kvs {
			if strings.Contains(string(kv.Key), s.ID) {
				n++
			}
		}
		return n
	}
	// The record and, per room, a rooms/ and a gwm/ key: removing them
	// takes 201 deletions of over 100 bytes each, past both limits at once.
	if n := socketKeys(); n != 1+2*rooms {
		t.Fatalf("%d keys of the socket, want %d", n, 1+2*rooms)
	}
	s.Close()
	waitFor(t, 15*time.Second, "every key of the closed socket removed", func() bool { return socketKeys() == 0 })

	// The gateway refuses limits below what its transactions need, as the
	// membership-server does.
	for _, flags := range [][]string{{"--etcd-max-txn-ops", "8"}, {"--etcd-max-request-bytes", "1024"}} {
		args := append([]string{"--etcd-endpoints", e.Endpoint, "--ws-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, flags...)
		out, err := exec.Command(binary(t, "gateway"), args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), flags[0]) {
			t.Errorf("gateway %v: %v %s", flags, err, out)
		}
	}
}
