package app_test

import (
	"context"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/stacktest"
)

// heldJoins is a MembershipService whose Join waits until release closes, as
// a Join waits for its etcd transaction to commit.
type heldJoins struct {
	membershipv1.UnimplementedMembershipServiceServer
	entered chan struct{}
	release chan struct{}
}

func (h *heldJoins) Join(context.Context, *membershipv1.JoinRequest) (*membershipv1.JoinResponse, error) {
	h.entered <- struct{}{}
	<-h.release
	return &membershipv1.JoinResponse{}, nil
}

// 64 calls waiting at once in their handlers (a membership-server's Joins at
// concurrency 64, each waiting for its commit) all run on the server's reused
// handler goroutines, none on a goroutine started for it whose stack must
// grow again: the worker pool is sized by calls in flight, not by cores.
func TestConcurrentWaitingCallsRunOnStreamWorkers(t *testing.T) {
	const calls = 64
	h := &heldJoins{entered: make(chan struct{}, calls), release: make(chan struct{})}
	srv := grpc.NewServer(app.ServerOptions(stacktest.Logger(), time.Minute, "")...)
	membershipv1.RegisterMembershipServiceServer(srv, h)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := membershipv1.NewMembershipServiceClient(cc)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := api.Join(ctx, &membershipv1.JoinRequest{})
			errs <- err
		}()
	}
	for i := range calls {
		select {
		case <-h.entered:
		case <-ctx.Done():
			t.Fatalf("%d of %d calls reached the handler", i, calls)
		}
	}

	// Every goroutine's stack, while all the calls wait in Join.
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	inJoin, onWorker := 0, 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "(*heldJoins).Join") {
			continue
		}
		inJoin++
		if strings.Contains(g, "grpc.(*Server).serverWorker") {
			onWorker++
		}
	}
	close(h.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if inJoin != calls {
		t.Fatalf("%d goroutines in Join; want %d", inJoin, calls)
	}
	if onWorker != calls {
		t.Errorf("%d of %d waiting calls ran on reused stream workers; the rest on fresh goroutines", onWorker, calls)
	}
}
