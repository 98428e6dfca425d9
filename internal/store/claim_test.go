package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
	"github.com/socketrooms/membership/internal/testutil"
)

// ClaimGateway puts a gateway record only where none is: a second claim of
// the id writes nothing and names the holder; MarkGatewayDraining rewrites
// the holder's record on its lease only; WaitGatewayGone returns once the
// holder's lease is revoked.
func TestClaimGatewayNeverOverwrites(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	first, err := e.Client.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.Client.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	held := store.GatewayRecord{ID: "gw", GRPCAddr: "127.0.0.1:1", Lease: first.ID, StartedAt: time.Now().UTC()}
	if _, err := s.ClaimGateway(ctx, held, 0); err != nil {
		t.Fatal(err)
	}
	_, err = s.ClaimGateway(ctx, store.GatewayRecord{ID: "gw", GRPCAddr: "127.0.0.1:2", Lease: second.ID}, 0)
	var taken *store.GatewayTakenError
	if !errors.As(err, &taken) || !errors.Is(err, store.ErrGatewayTaken) || taken.Holder.Lease != first.ID || taken.Holder.GRPCAddr != "127.0.0.1:1" || taken.Revision == 0 {
		t.Fatalf("second claim: %v (%+v), want ErrGatewayTaken naming the first", err, taken)
	}
	if rec, err := s.Gateway(ctx, "gw"); err != nil || rec.Lease != first.ID {
		t.Fatalf("record after the second claim: %+v %v, want the first's", rec, err)
	}

	since := time.Now().UTC().Truncate(time.Second)
	if _, err := s.MarkGatewayDraining(ctx, store.GatewayRecord{ID: "gw", Lease: second.ID}, since); !errors.Is(err, store.ErrGatewayNotFound) {
		t.Fatalf("marking with another lease: %v, want ErrGatewayNotFound", err)
	}
	if _, err := s.MarkGatewayDraining(ctx, held, since); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Gateway(ctx, "gw"); err != nil || rec.DrainingSince == nil || !rec.DrainingSince.Equal(since) || rec.Lease != first.ID {
		t.Fatalf("record after marking it draining: %+v %v", rec, err)
	}

	done := make(chan error, 1)
	go func() { done <- s.WaitGatewayGone(ctx, e.Client, "gw", taken.Revision) }()
	select {
	case err := <-done:
		t.Fatalf("WaitGatewayGone returned %v while the record is there", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := e.Client.Revoke(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitGatewayGone did not return once the record's lease was revoked")
	}
	if _, err := s.ClaimGateway(ctx, store.GatewayRecord{ID: "gw", GRPCAddr: "127.0.0.1:2", Lease: second.ID}, 0); err != nil {
		t.Fatalf("claim after the holder went: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := s.WaitGatewayGone(wctx, e.Client, "gw", 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitGatewayGone on a live record past its context: %v", err)
	}
	if err := s.WaitGatewayGone(ctx, e.Client, "other", 0); err != nil {
		t.Fatalf("WaitGatewayGone of an id without a record: %v", err)
	}
}

// A gateway registering again after it lost its session takes over its own
// previous record at once (ClaimGateway's replaces), while a claim naming
// another lease than the holder's still waits.
func TestClaimGatewayReplacesItsOwnPreviousRecord(t *testing.T) {
	e := testutil.StartEtcd(t)
	s := store.New(e.Client, "/t/")
	ctx := context.Background()
	var leases [3]clientv3.LeaseID
	for i := range leases {
		l, err := e.Client.Grant(ctx, 30)
		if err != nil {
			t.Fatal(err)
		}
		leases[i] = l.ID
	}
	if _, err := s.ClaimGateway(ctx, store.GatewayRecord{ID: "gw", Lease: leases[0]}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimGateway(ctx, store.GatewayRecord{ID: "gw", Lease: leases[1]}, leases[2]); !errors.Is(err, store.ErrGatewayTaken) {
		t.Fatalf("claim replacing a lease that does not hold the record: %v, want ErrGatewayTaken", err)
	}
	if _, err := s.ClaimGateway(ctx, store.GatewayRecord{ID: "gw", Lease: leases[1]}, leases[0]); err != nil {
		t.Fatalf("claim replacing its own previous record: %v", err)
	}
	if rec, err := s.Gateway(ctx, "gw"); err != nil || rec.Lease != leases[1] {
		t.Fatalf("record after the claim: %+v %v, want it on the new lease", rec, err)
	}
}
