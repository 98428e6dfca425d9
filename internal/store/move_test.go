package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// newHome registers gateway gw on a fresh lease and returns it as a home.
func newHome(t *testing.T, cli *clientv3.Client, s *store.Store, gw string) store.Home {
	t.Helper()
	lease := grant(t, cli, 60)
	if _, err := s.RegisterGateway(context.Background(), store.GatewayRecord{ID: gw, GRPCAddr: "127.0.0.1:1", Lease: lease}); err != nil {
		t.Fatal(err)
	}
	return store.Home{Gateway: gw, Lease: lease}
}

func roomNames(n int) []string {
	rooms := make([]string, n)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("room/%02d", i) // escaped in keys
	}
	return rooms
}

// socketKeys reads every key of sock with its lease: key → lease.
func socketKeys(t *testing.T, cli *clientv3.Client, sock store.SocketID) map[string]clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/t/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]clientv3.LeaseID{}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), sock.String()) {
			out[strings.TrimPrefix(string(kv.Key), "/t/")] = clientv3.LeaseID(kv.Lease)
		}
	}
	return out
}

// checkMembershipLeases checks what a move promises at every moment: each
// membership of sock has its room key and exactly one gwm/ key, under from
// or to, both on that home's lease; no gwm/ key lacks its room key. It
// returns the rooms (escaped) under each home.
func checkMembershipLeases(t *testing.T, cli *clientv3.Client, sock store.SocketID, from, to store.Home) (atFrom, atTo []string) {
	t.Helper()
	keys := socketKeys(t, cli, sock)
	id := sock.String()
	for key, lease := range keys {
		rest, ok := strings.CutPrefix(key, "rooms/")
		if !ok {
			continue
		}
		room := strings.TrimSuffix(rest, "/"+id)
		fromKey, toKey := "gwm/"+from.Gateway+"/"+id+"/"+room, "gwm/"+to.Gateway+"/"+id+"/"+room
		fl, inFrom := keys[fromKey]
		tl, inTo := keys[toKey]
		switch {
		case inFrom == inTo:
			t.Errorf("membership %q: gwm/ key under from %v, under to %v: want exactly one", room, inFrom, inTo)
		case inFrom && (fl != from.Lease || lease != from.Lease):
			t.Errorf("membership %q at %s: gwm/ key on lease %x, room key on %x, want both on %x", room, from.Gateway, fl, lease, from.Lease)
		case inTo && (tl != to.Lease || lease != to.Lease):
			t.Errorf("membership %q at %s: gwm/ key on lease %x, room key on %x, want both on %x", room, to.Gateway, tl, lease, to.Lease)
		case inFrom:
			atFrom = append(atFrom, room)
		default:
			atTo = append(atTo, room)
		}
	}
	for key := range keys {
		if !strings.HasPrefix(key, "gwm/") || strings.Contains(key, "!disconnect") {
			continue
		}
		room := key[strings.LastIndex(key, "/")+1:]
		if _, ok := keys["rooms/"+room+"/"+id]; !ok {
			t.Errorf("gwm/ key %q without its room key", key)
		}
	}
	slices.Sort(atFrom)
	slices.Sort(atTo)
	return atFrom, atTo
}

func escaped(rooms []string) []string {
	out := make([]string, len(rooms))
	for i, r := range rooms {
		out[i] = strings.ReplaceAll(r, "/", "%2F")
	}
	slices.Sort(out)
	return out
}

func wantRooms(t *testing.T, s *store.Store, sock store.SocketID, want []string) store.SocketInfo {
	t.Helper()
	info, _, err := s.GetSocket(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(info.Rooms, w) {
		t.Fatalf("GetSocket rooms %q, want %q", info.Rooms, w)
	}
	return info
}

// A socket in 3 rooms moves to another gateway: afterwards every reader and
// writer uses the new gateway, and the old gateway's lease can end without
// taking anything of the socket along.
func TestMoveSocketThreeRooms(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := connectUser(t, s, "gwa", a.Lease, "dora")
	rooms := roomNames(3)
	for _, r := range rooms {
		if _, err := s.Join(ctx, []store.SocketID{sock}, r); err != nil {
			t.Fatal(err)
		}
	}
	x := startIndex(t, e.Client, s)
	wantTargets(t, ctx, x, rooms[:1], "gwa")

	if err := s.MoveSocket(ctx, sock, a, b); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveSocket(ctx, sock, a, b); err != nil {
		t.Fatalf("a second identical move: %v, want nil (already there)", err)
	}
	if atA, atB := checkMembershipLeases(t, e.Client, sock, a, b); len(atA) != 0 || !slices.Equal(atB, escaped(rooms)) {
		t.Fatalf("after the move: at gwa %q, at gwb %q", atA, atB)
	}
	keys := socketKeys(t, e.Client, sock)
	for _, k := range []string{"sockets/" + sock.String(), "users/dora/" + sock.String()} {
		if keys[k] != b.Lease {
			t.Errorf("%s on lease %x, want gwb's %x", k, keys[k], b.Lease)
		}
	}
	if _, ok := keys["sockets/"+sock.String()+"/move"]; ok {
		t.Error("move marker left after the move")
	}
	info := wantRooms(t, s, sock, rooms)
	if info.Gateway != "gwb" || info.Lease != b.Lease || info.MovingTo != nil {
		t.Fatalf("GetSocket: gateway %q lease %x moving %v, want gwb %x", info.Gateway, info.Lease, info.MovingTo, b.Lease)
	}
	members, _, _, err := s.ListMembers(ctx, rooms[0], "", 10)
	if err != nil || len(members) != 1 || members[0].Gateway != "gwb" || members[0].User != "dora" {
		t.Fatalf("ListMembers: %+v %v, want the socket on gwb", members, err)
	}
	wantTargets(t, ctx, x, rooms, "gwb")
	us, _, _, err := s.ListUserSockets(ctx, "dora", "", 10)
	if err != nil || len(us) != 1 || us[0].Gateway != "gwb" || len(us[0].Rooms) != 3 {
		t.Fatalf("ListUserSockets: %+v %v", us, err)
	}

	// Join and Leave now write at gwb, and say so (WaitApplied asks gwb).
	res, err := s.Join(ctx, []store.SocketID{sock}, "late")
	if err != nil || res.Homes[0] != b {
		t.Fatalf("join after the move: %+v %v, want it written at %+v", res, err, b)
	}
	if _, err := s.Leave(ctx, []store.SocketID{sock}, rooms[0]); err != nil {
		t.Fatal(err)
	}
	ur, err := s.ChangeUser(ctx, "dora", "by-user", true, s.SocketsPerChange())
	if err != nil || len(ur.Homes) != 1 || ur.Homes[0] != b {
		t.Fatalf("join by user after the move: %+v %v", ur, err)
	}
	if added, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, []string{"wide"}); err != nil || added != 1 {
		t.Fatalf("AddToRooms after the move: %d %v", added, err)
	}
	now := []string{rooms[1], rooms[2], "late", "by-user", "wide"}
	if atA, atB := checkMembershipLeases(t, e.Client, sock, a, b); len(atA) != 0 || !slices.Equal(atB, escaped(now)) {
		t.Fatalf("after changes: at gwa %q, at gwb %q", atA, atB)
	}
	wantTargets(t, ctx, x, []string{"late"}, "gwb")

	// The old gateway no longer lists it among its lease's sockets.
	if _, err := s.LeaseSockets(ctx, "gwa", a.Lease, func(sid store.SocketID) bool {
		t.Errorf("gwa's lease lists %s, which moved to gwb", sid)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	// The old gateway's lease ends: the socket lives on.
	if _, err := e.Client.Revoke(ctx, a.Lease); err != nil {
		t.Fatal(err)
	}
	wantRooms(t, s, sock, now)

	// Removal by its new gateway leaves nothing of it.
	if err := s.RemoveSocket(ctx, sock); err != nil {
		t.Fatal(err)
	}
	if keys := socketKeys(t, e.Client, sock); len(keys) != 0 {
		t.Fatalf("keys left after removing the moved socket: %v", keys)
	}
	wantTargets(t, ctx, x, now)

	// A Disconnect of a moved socket tells its new gateway, and waits for it.
	c := newHome(t, e.Client, s, "gwc")
	other := connectUser(t, s, "gwb", b.Lease, "")
	if _, err := s.Join(ctx, []store.SocketID{other}, "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveSocket(ctx, other, b, c); err != nil {
		t.Fatal(err)
	}
	dr, err := s.Disconnect(ctx, []store.SocketID{other}, store.DisconnectNotice{Code: 4000})
	if err != nil || dr.Disconnected != 1 || len(dr.Holders) != 1 || dr.Holders[0] != c {
		t.Fatalf("Disconnect of a moved socket: %+v %v, want it held by %+v", dr, err, c)
	}
	if keys := socketKeys(t, e.Client, other); len(keys) != 1 || keys["gwm/gwc/!disconnect/"+other.String()] != c.Lease {
		t.Fatalf("after Disconnect: keys %v, want only the notice to gwc on its lease", keys)
	}
}

// A socket whose keys fit one transaction moves in one: every room, its
// record and its user key change at one revision, so that no reader (the
// gateways' watches, the broadcast target index) ever sees it half moved.
func TestMoveSocketInOneTransaction(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := connectUser(t, s, "gwa", a.Lease, "ida")
	rooms := roomNames(5)
	if _, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, rooms); err != nil {
		t.Fatal(err)
	}
	before, err := e.Client.Get(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if steps := moveSteps(t, s, sock, a, b); !slices.Equal(steps, []string{"whole-read", "whole"}) {
		t.Fatalf("steps %v, want the move in one transaction", steps)
	}
	after, err := e.Client.Get(ctx, "/t/")
	if err != nil {
		t.Fatal(err)
	}
	if n := after.Header.Revision - before.Header.Revision; n != 1 {
		t.Fatalf("the move took %d revisions, want 1", n)
	}
	if atA, atB := checkMembershipLeases(t, e.Client, sock, a, b); len(atA) != 0 || !slices.Equal(atB, escaped(rooms)) {
		t.Fatalf("after the move: at gwa %q, at gwb %q", atA, atB)
	}
	for key, lease := range socketKeys(t, e.Client, sock) {
		if lease != b.Lease {
			t.Errorf("%s on lease %x, want gwb's %x", key, lease, b.Lease)
		}
	}
	if info := wantRooms(t, s, sock, rooms); info.Gateway != "gwb" || info.MovingTo != nil {
		t.Fatalf("after the move: %+v", info)
	}
}

// A Join or a Leave of the socket committed between the read and the
// transaction of a move in one (from another membership-server) is in
// effect after it, at the new gateway: the move's guard sees it and the
// move reads again.
func TestMoveSocketWholeWithJoinLeaveAfterItsRead(t *testing.T) {
	for _, change := range []string{"join", "leave", "rejoin"} {
		t.Run(change, func(t *testing.T) {
			e := testutil.StartEtcd(t)
			s, other := store.New(e.Client, "/t/"), store.New(e.Client, "/t/")
			ctx := context.Background()
			a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
			sock := connectUser(t, s, "gwa", a.Lease, "jon")
			rooms := roomNames(3)
			if _, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, rooms); err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(rooms)
			once := false
			s.SetMoveHook(func(step string) error {
				if step != "whole-read" || once {
					return nil
				}
				once = true
				var err error
				switch change {
				case "join":
					_, err = other.Join(ctx, []store.SocketID{sock}, "zz-new")
				case "leave":
					_, err = other.Leave(ctx, []store.SocketID{sock}, rooms[1])
				case "rejoin":
					if _, err = other.Leave(ctx, []store.SocketID{sock}, rooms[1]); err == nil {
						_, err = other.Join(ctx, []store.SocketID{sock}, rooms[1])
					}
				}
				return err
			})
			defer s.SetMoveHook(nil)
			switch change {
			case "join":
				want = append(want, "zz-new")
			case "leave":
				want = slices.Delete(want, 1, 2)
			}
			if err := s.MoveSocket(ctx, sock, a, b); err != nil {
				t.Fatal(err)
			}
			if atA, atB := checkMembershipLeases(t, e.Client, sock, a, b); len(atA) != 0 || !slices.Equal(atB, escaped(want)) {
				t.Fatalf("after the move: at gwa %q, at gwb %q, want %q at gwb", atA, atB, escaped(want))
			}
			for key, lease := range socketKeys(t, e.Client, sock) {
				if lease != b.Lease {
					t.Errorf("%s on lease %x, want gwb's %x", key, lease, b.Lease)
				}
			}
		})
	}
}

// AbortMove with no move in progress fences a move in one transaction
// that read the socket before it (one still on its way to etcd when its
// caller gave up): that transaction fails, and the move has to read the
// socket again.
func TestAbortMoveFencesAWholeMoveReadBeforeIt(t *testing.T) {
	e := testutil.StartEtcd(t)
	s, origin := store.New(e.Client, "/t/"), store.New(e.Client, "/t/")
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := connectUser(t, s, "gwa", a.Lease, "kai")
	if _, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, roomNames(2)); err != nil {
		t.Fatal(err)
	}
	reads := 0
	s.SetMoveHook(func(step string) error {
		if step == "whole-read" {
			if reads++; reads == 1 {
				return origin.AbortMove(ctx, sock)
			}
		}
		return nil
	})
	defer s.SetMoveHook(nil)
	if err := s.MoveSocket(ctx, sock, a, b); err != nil {
		t.Fatal(err)
	}
	if reads != 2 {
		t.Fatalf("the move read the socket %d times, want 2: its first transaction, read before AbortMove, must fail", reads)
	}
	if atA, atB := checkMembershipLeases(t, e.Client, sock, a, b); len(atA) != 0 || len(atB) != 2 {
		t.Fatalf("after the move: at gwa %q, at gwb %q", atA, atB)
	}
	if err := origin.AbortMove(ctx, sock); err != nil {
		t.Fatalf("AbortMove after the move committed: %v, want nil", err)
	}
	if info := wantRooms(t, s, sock, roomNames(2)); info.Gateway != "gwb" || info.Lease != b.Lease || info.MovingTo != nil {
		t.Fatalf("AbortMove after the move committed changed it: %+v", info)
	}
}

// smallTxnStores starts etcd at the least --max-txn-ops accepted and n
// stores (membership-servers) over it sized to match, so that a socket in
// a few dozen rooms takes several transactions to move.
func smallTxnStores(t *testing.T, n int) (*testutil.Etcd, []*store.Store) {
	t.Helper()
	e := testutil.StartEtcdWithLimits(t, 0, store.MinMaxTxnOps)
	stores := make([]*store.Store, n)
	for i := range stores {
		stores[i] = store.New(e.Client, "/t/")
		if err := stores[i].SetTxnLimits(store.TxnLimits{MaxTxnOps: store.MinMaxTxnOps}); err != nil {
			t.Fatal(err)
		}
	}
	return e, stores
}

// moveSteps runs a move and returns the steps it committed.
func moveSteps(t *testing.T, s *store.Store, sock store.SocketID, from, to store.Home) []string {
	t.Helper()
	var steps []string
	s.SetMoveHook(func(step string) error { steps = append(steps, step); return nil })
	defer s.SetMoveHook(nil)
	if err := s.MoveSocket(context.Background(), sock, from, to); err != nil {
		t.Fatal(err)
	}
	return steps
}

var errCrash = errors.New("crash after this step")

// A socket in more rooms than one transaction carries moves in steps; a
// move stopped after any step (a membership-server that died) leaves every
// membership on exactly one lease, readers see all rooms, and the move can
// then be completed or aborted.
func TestMoveSocketCrashAfterEachStep(t *testing.T) {
	e, stores := smallTxnStores(t, 1)
	s := stores[0]
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	rooms := roomNames(30) // 61 keys: several transactions of at most 16 operations
	newSocket := func() store.SocketID {
		sock := connectUser(t, s, "gwa", a.Lease, "eve")
		if added, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, rooms); err != nil || added != int64(len(rooms)) {
			t.Fatalf("AddToRooms: %d %v", added, err)
		}
		return sock
	}
	steps := moveSteps(t, s, newSocket(), a, b)
	if n := strings.Count(strings.Join(steps, ","), "rooms"); n < 2 || steps[0] != "begin" || steps[len(steps)-1] != "commit" {
		t.Fatalf("steps %v: want begin, several room steps, commit", steps)
	}
	for k := 1; k < len(steps); k++ {
		for _, finish := range []string{"complete", "abort"} {
			t.Run(fmt.Sprintf("after step %d, %s", k, finish), func(t *testing.T) {
				sock := newSocket()
				n := 0
				s.SetMoveHook(func(string) error {
					if n++; n == k {
						return errCrash
					}
					return nil
				})
				err := s.MoveSocket(ctx, sock, a, b)
				s.SetMoveHook(nil)
				if !errors.Is(err, errCrash) {
					t.Fatalf("move stopped after step %d: %v", k, err)
				}
				atA, atB := checkMembershipLeases(t, e.Client, sock, a, b)
				if len(atA)+len(atB) != len(rooms) {
					t.Fatalf("half-moved socket: %d rooms at gwa, %d at gwb, want %d in all", len(atA), len(atB), len(rooms))
				}
				if info := wantRooms(t, s, sock, rooms); info.Gateway != "gwa" || info.MovingTo == nil || *info.MovingTo != b {
					t.Fatalf("half-moved socket reads as gateway %q moving to %v, want gwa moving to %+v", info.Gateway, info.MovingTo, b)
				}
				// A Join and a Leave meanwhile are routed, not lost.
				if _, err := s.Join(ctx, []store.SocketID{sock}, "mid"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Leave(ctx, []store.SocketID{sock}, rooms[0]); err != nil {
					t.Fatal(err)
				}
				want := append(slices.Clone(rooms[1:]), "mid")
				checkMembershipLeases(t, e.Client, sock, a, b)
				wantRooms(t, s, sock, want)
				var keep, drop store.Home
				if finish == "complete" {
					err, keep, drop = s.MoveSocket(ctx, sock, a, b), b, a
				} else {
					err, keep, drop = s.AbortMove(ctx, sock), a, b
				}
				if err != nil {
					t.Fatal(err)
				}
				atA, atB = checkMembershipLeases(t, e.Client, sock, a, b)
				at := map[store.Home][]string{a: atA, b: atB}
				if len(at[drop]) != 0 || !slices.Equal(at[keep], escaped(want)) {
					t.Fatalf("after %s: at gwa %q, at gwb %q", finish, atA, atB)
				}
				info := wantRooms(t, s, sock, want)
				if info.Gateway != keep.Gateway || info.Lease != keep.Lease || info.MovingTo != nil {
					t.Fatalf("after %s: socket at %q %x moving %v, want %+v", finish, info.Gateway, info.Lease, info.MovingTo, keep)
				}
				for key, lease := range socketKeys(t, e.Client, sock) {
					if lease != keep.Lease {
						t.Errorf("after %s: %s on lease %x, want %x", finish, key, lease, keep.Lease)
					}
				}
			})
		}
	}
}

// A destination gateway that dies mid-move takes the marker and what had
// moved along: the socket is still whole on its origin, and Join and Leave
// take the one-round-trip path there again.
func TestMoveSocketDestinationDiesMidMove(t *testing.T) {
	e, stores := smallTxnStores(t, 1)
	s := stores[0]
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := connectUser(t, s, "gwa", a.Lease, "fay")
	rooms := roomNames(30)
	if _, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, rooms); err != nil {
		t.Fatal(err)
	}
	n := 0
	s.SetMoveHook(func(string) error {
		if n++; n == 2 { // begin, one room step
			return errCrash
		}
		return nil
	})
	if err := s.MoveSocket(ctx, sock, a, b); !errors.Is(err, errCrash) {
		t.Fatal(err)
	}
	s.SetMoveHook(nil)
	_, moved := checkMembershipLeases(t, e.Client, sock, a, b)
	if len(moved) == 0 || len(moved) == len(rooms) {
		t.Fatalf("%d rooms moved by one step, want some", len(moved))
	}
	if _, err := e.Client.Revoke(ctx, b.Lease); err != nil {
		t.Fatal(err)
	}
	atA, atB := checkMembershipLeases(t, e.Client, sock, a, b)
	if len(atB) != 0 || len(atA) != len(rooms)-len(moved) {
		t.Fatalf("after gwb died: %d rooms at gwa, %d at gwb", len(atA), len(atB))
	}
	info, _, err := s.GetSocket(ctx, sock)
	if err != nil || info.Gateway != "gwa" || info.MovingTo != nil {
		t.Fatalf("after gwb died: %+v %v, want the socket on gwa, not moving", info, err)
	}
	if res, err := s.Join(ctx, []store.SocketID{sock}, "again"); err != nil || res.Homes[0] != a {
		t.Fatalf("join after gwb died: %+v %v", res, err)
	}
}

// An origin gateway that dies mid-move takes the socket's record with it,
// as any crashed gateway takes its sockets: completing or aborting the move
// then answers that the socket is gone and leaves none of its keys.
func TestMoveSocketOriginDiesMidMove(t *testing.T) {
	e, stores := smallTxnStores(t, 1)
	s := stores[0]
	ctx := context.Background()
	for _, finish := range []string{"complete", "abort"} {
		a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
		sock := connectUser(t, s, "gwa", a.Lease, "kim")
		if _, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, roomNames(30)); err != nil {
			t.Fatal(err)
		}
		n := 0
		s.SetMoveHook(func(string) error {
			if n++; n == 2 {
				return errCrash
			}
			return nil
		})
		if err := s.MoveSocket(ctx, sock, a, b); !errors.Is(err, errCrash) {
			t.Fatal(err)
		}
		s.SetMoveHook(nil)
		if _, err := e.Client.Revoke(ctx, a.Lease); err != nil {
			t.Fatal(err)
		}
		if keys := socketKeys(t, e.Client, sock); len(keys) == 0 {
			t.Fatal("nothing left at gwb after one room step")
		}
		var err error
		if finish == "complete" {
			err = s.MoveSocket(ctx, sock, a, b)
		} else {
			err = s.AbortMove(ctx, sock)
		}
		if !errors.Is(err, store.ErrSocketNotFound) {
			t.Fatalf("%s after the origin died: %v, want ErrSocketNotFound", finish, err)
		}
		if keys := socketKeys(t, e.Client, sock); len(keys) != 0 {
			t.Fatalf("%s after the origin died left %v", finish, keys)
		}
	}
}

// Joins and Leaves of a socket from other membership-servers, committed
// between the steps of its move, are all in effect after it, at the new
// gateway, each membership on one lease.
func TestMoveSocketWithJoinLeaveBetweenSteps(t *testing.T) {
	e, stores := smallTxnStores(t, 2)
	s, other := stores[0], stores[1]
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := connectUser(t, s, "gwa", a.Lease, "gil")
	rooms := roomNames(30)
	if _, _, err := s.AddToRooms(ctx, []store.SocketID{sock}, rooms); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, r := range rooms {
		want[r] = true
	}
	k := 0
	s.SetMoveHook(func(step string) error {
		// One room it was in goes, one new comes, and one of those that
		// moved already goes too.
		k++
		if _, err := other.Leave(ctx, []store.SocketID{sock}, rooms[k]); err != nil {
			return err
		}
		if _, err := other.Leave(ctx, []store.SocketID{sock}, rooms[len(rooms)-k]); err != nil {
			return err
		}
		n := fmt.Sprintf("new-%s-%d", step, k)
		if _, err := other.Join(ctx, []store.SocketID{sock}, n); err != nil {
			return err
		}
		delete(want, rooms[k])
		delete(want, rooms[len(rooms)-k])
		want[n] = true
		return nil
	})
	if err := s.MoveSocket(ctx, sock, a, b); err != nil {
		t.Fatal(err)
	}
	var w []string
	for r := range want {
		w = append(w, r)
	}
	if atA, atB := checkMembershipLeases(t, e.Client, sock, a, b); len(atA) != 0 || !slices.Equal(atB, escaped(w)) {
		t.Fatalf("after the move: at gwa %q, at gwb %q, want %q at gwb", atA, atB, escaped(w))
	}
	wantRooms(t, s, sock, w)
}

// Concurrent Joins and Leaves (coalesced, from two membership-servers)
// while the socket moves back and forth: each caller's last acknowledged
// change is in effect at the end, and every membership is at the socket's
// final home.
func TestMoveSocketUnderConcurrentJoinLeave(t *testing.T) {
	e, stores := smallTxnStores(t, 3)
	mover, s1, s2 := stores[0], stores[1], stores[2]
	defer s1.StartBatching(4)()
	defer s2.StartBatching(4)()
	ctx := context.Background()
	a, b := newHome(t, e.Client, mover, "gwa"), newHome(t, e.Client, mover, "gwb")
	sock := connectUser(t, mover, "gwa", a.Lease, "hal")
	if _, _, err := mover.AddToRooms(ctx, []store.SocketID{sock}, roomNames(20)); err != nil {
		t.Fatal(err)
	}
	const workers = 6
	final := make([]map[string]bool, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		st := []*store.Store{s1, s2}[w%2]
		final[w] = map[string]bool{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				room := fmt.Sprintf("w%d-%d", w, i%5)
				join := i%3 != 2
				var err error
				if join {
					_, err = st.Join(ctx, []store.SocketID{sock}, room)
				} else {
					_, err = st.Leave(ctx, []store.SocketID{sock}, room)
				}
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				final[w][room] = join
			}
		}()
	}
	from, to := a, b
	for range 6 {
		if err := mover.MoveSocket(ctx, sock, from, to); err != nil {
			t.Fatal(err)
		}
		from, to = to, from
	}
	close(stop)
	wg.Wait()
	home := from // the last move's destination
	other := to
	want := roomNames(20)
	for _, f := range final {
		for room, in := range f {
			if in {
				want = append(want, room)
			}
		}
	}
	atHome, atOther := checkMembershipLeases(t, e.Client, sock, home, other)
	if len(atOther) != 0 || !slices.Equal(atHome, escaped(want)) {
		t.Fatalf("at %s %q, at %s %q; want %q at %s", home.Gateway, atHome, other.Gateway, atOther, escaped(want), home.Gateway)
	}
}

// A socket whose record says it lives on another gateway than its id names
// (a moved socket) is read and changed there: Join and Leave write under its
// gateway's prefix on its lease, GetSocket and ListMembers read them there,
// the target index targets its gateway, and removal leaves nothing. The
// socket is set up with plain etcd writes, as a move leaves it.
func TestMovedSocketRecordIsHonoured(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := store.NewSocketID("gwa", a.Lease)
	rec := fmt.Sprintf(`{"gateway":"gwb","lease":%d,"connected_at":"2026-01-01T00:00:00Z"}`, int64(b.Lease))
	if _, err := e.Client.Txn(ctx).Then(
		clientv3.OpPut("/t/sockets/"+sock.String(), rec, clientv3.WithLease(b.Lease)),
		clientv3.OpPut("/t/gwm/gwb/"+sock.String()+"/old", "", clientv3.WithLease(b.Lease)),
		clientv3.OpPut("/t/rooms/old/"+sock.String(), "", clientv3.WithLease(b.Lease)),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	x := startIndex(t, e.Client, s)
	wantTargets(t, ctx, x, []string{"old"}, "gwb")
	res, err := s.Join(ctx, []store.SocketID{sock}, "new")
	if err != nil || res.Homes[0] != b {
		t.Fatalf("join: %+v %v", res, err)
	}
	if l, err := s.Leave(ctx, []store.SocketID{sock}, "old"); err != nil || !l.WasMember[0] {
		t.Fatalf("leave: %+v %v", l, err)
	}
	keys := socketKeys(t, e.Client, sock)
	for _, k := range []string{"gwm/gwb/" + sock.String() + "/new", "rooms/new/" + sock.String()} {
		if l, ok := keys[k]; !ok || l != b.Lease {
			t.Errorf("%s: present %v on lease %x, want on gwb's %x (keys %v)", k, ok, l, b.Lease, keys)
		}
	}
	if len(keys) != 3 {
		t.Errorf("keys %v: want the record and the two keys of room new", keys)
	}
	if info := wantRooms(t, s, sock, []string{"new"}); info.Gateway != "gwb" {
		t.Errorf("GetSocket gateway %q, want gwb", info.Gateway)
	}
	if m, _, _, err := s.ListMembers(ctx, "new", "", 10); err != nil || len(m) != 1 || m[0].Gateway != "gwb" {
		t.Errorf("ListMembers: %+v %v, want the socket on gwb", m, err)
	}
	wantTargets(t, ctx, x, []string{"new"}, "gwb")
	if err := s.RemoveSocket(ctx, sock); err != nil {
		t.Fatal(err)
	}
	if keys := socketKeys(t, e.Client, sock); len(keys) != 0 {
		t.Fatalf("keys left after removal: %v", keys)
	}
}

// The membership stream emits nothing for a move, and names the socket's
// new gateway in the events after it.
func TestMoveSocketWatchEvents(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := newHome(t, e.Client, s, "gwa"), newHome(t, e.Client, s, "gwb")
	sock := connectUser(t, s, "gwa", a.Lease, "ivy")
	if _, err := s.Join(ctx, []store.SocketID{sock}, "r"); err != nil {
		t.Fatal(err)
	}
	start, _ := e.Client.Get(ctx, "/t/")
	if err := s.MoveSocket(ctx, sock, a, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx, []store.SocketID{sock}, "after"); err != nil {
		t.Fatal(err)
	}
	var got []store.MembershipEvent
	wctx, wcancel := context.WithCancel(ctx)
	err := s.WatchMembership(wctx, e.Client, store.WatchFilter{}, store.WatchOptions{After: start.Header.Revision, ProgressEvery: time.Second}, func(wb store.WatchBatch) error {
		got = append(got, wb.Events...)
		if len(got) > 0 {
			wcancel()
		}
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Type != store.EventJoined || got[0].Room != "after" || got[0].Gateway != "gwb" {
		t.Fatalf("events after the move: %+v, want one JOINED of room after on gwb", got)
	}
}
