package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// SetSocketRecord rewrites a record in place: the lease and the create
// revision stay (Join's guard and the membership stream see the same
// socket), the memberships are untouched, and a record that is gone is not
// written back.
func TestSetSocketRecordKeepsLeaseAndNeverResurrects(t *testing.T) {
	e := testutil.StartEtcd(t)
	ctx := context.Background()
	st := store.New(e.Client, "")
	lease, err := e.Client.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	sid := store.NewSocketID("gw1", lease.ID)
	rec := store.SocketRecord{Gateway: "gw1", ConnectedAt: time.Now().UTC().Truncate(time.Second), User: "alice"}
	if _, err := st.AddSocket(ctx, sid, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Join(ctx, []store.SocketID{sid}, "r"); err != nil {
		t.Fatal(err)
	}
	key := "/membership/sockets/" + sid.String()
	before, err := e.Client.Get(ctx, key)
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("record: %v, %v", before, err)
	}

	since := time.Now().UTC().Truncate(time.Second)
	rec.DetachedSince = &since
	if _, err := st.SetSocketRecord(ctx, sid, rec); err != nil {
		t.Fatal(err)
	}
	info, _, err := st.GetSocket(ctx, sid)
	if err != nil || info.DetachedSince == nil || !info.DetachedSince.Equal(since) || len(info.Rooms) != 1 || info.User != "alice" {
		t.Fatalf("GetSocket = %+v, %v; want detached since %v, in r", info, err, since)
	}
	members, _, _, err := st.ListMembers(ctx, "r", "", 10)
	if err != nil || len(members) != 1 || members[0].DetachedSince == nil {
		t.Fatalf("ListMembers = %+v, %v; want the socket, detached", members, err)
	}
	after, err := e.Client.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if kv := after.Kvs[0]; kv.Lease != int64(lease.ID) || kv.CreateRevision != before.Kvs[0].CreateRevision {
		t.Fatalf("record on lease %x created at %d, want lease %x created at %d", kv.Lease, kv.CreateRevision, lease.ID, before.Kvs[0].CreateRevision)
	}

	rec.DetachedSince = nil
	if _, err := st.SetSocketRecord(ctx, sid, rec); err != nil {
		t.Fatal(err)
	}
	if info, _, _ := st.GetSocket(ctx, sid); info.DetachedSince != nil {
		t.Fatalf("GetSocket = %+v, want attached", info)
	}

	if err := st.RemoveSocket(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetSocketRecord(ctx, sid, rec); !errors.Is(err, store.ErrSocketNotFound) {
		t.Fatalf("SetSocketRecord of a removed socket: %v, want ErrSocketNotFound", err)
	}
	if got, _ := e.Client.Get(ctx, key); len(got.Kvs) != 0 {
		t.Fatal("the removed socket's record was written back")
	}
}
