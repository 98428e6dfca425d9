package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// benchBroadcastMemory: waves of concurrent Broadcasts of ~1 MiB each, all
// sent at once to a room with one socket on one gateway, each wave against a
// fresh stack; it records how many calls were refused (OVERLOADED) or failed,
// and the peak resident set (VmHWM) of the membership-server (with its
// embedded etcd) and of the gateway before and after the wave.
func benchBroadcastMemory(ctx context.Context, cfg config) error {
	fmt.Printf("## Memory under concurrent 1 MiB Broadcasts (one room, one socket on one gateway)\n\n")
	fmt.Println("| concurrent | succeeded | refused OVERLOADED | other errors | gateways failed | frames at the socket | membership-server VmHWM before → after | gateway VmHWM before → after | wave time |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, f := range strings.Split(cfg.bcmemLevels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("--bcmem-concurrency: %w", err)
		}
		if err := broadcastWave(ctx, cfg, n); err != nil {
			return err
		}
	}
	fmt.Println()
	return nil
}

func broadcastWave(ctx context.Context, cfg config, n int) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	g, err := st.addGateway("bcmem-1", strings.Fields(cfg.gatewayArgs)...)
	if err != nil {
		return err
	}
	sock, err := dialSocket(ctx, g.url(), nil)
	if err != nil {
		return err
	}
	defer sock.conn.Close()
	if _, err := st.api.Join(ctx, &membershipv1.JoinRequest{SocketId: sock.id, Room: "bcmem",
		WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		return err
	}
	var frames atomic.Int64
	go func() {
		for {
			_, b, err := sock.conn.ReadMessage()
			if err != nil {
				return
			}
			if len(b) > 1<<19 { // a Broadcast's, not the joined frame
				frames.Add(1)
			}
		}
	}()
	// JSON adds the quotes; the data stays under the default
	// --max-payload-bytes of 1 MiB.
	data := structpb.NewStringValue(strings.Repeat("x", 1<<20-64))
	serverPid, gatewayPid := st.server.Process.Pid, g.cmd.Process.Pid
	s0, err := procStatusKiB(serverPid, "VmHWM")
	if err != nil {
		return err
	}
	g0, err := procStatusKiB(gatewayPid, "VmHWM")
	if err != nil {
		return err
	}
	var ok, refused, other, failedGateways, delivered atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			resp, err := st.api.Broadcast(cctx, &membershipv1.BroadcastRequest{Rooms: []string{"bcmem"}, Data: data})
			switch {
			case err == nil:
				ok.Add(1)
				failedGateways.Add(int64(resp.FailedGateways))
				delivered.Add(resp.Delivered)
			case isOverloaded(err):
				refused.Add(1)
			default:
				other.Add(1)
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	// Frames still on their way from the gateway's queue add to its peak.
	_ = waitUntil(30*time.Second, func() bool { return frames.Load() >= delivered.Load() })
	s1, err := procStatusKiB(serverPid, "VmHWM")
	if err != nil {
		return err
	}
	g1, err := procStatusKiB(gatewayPid, "VmHWM")
	if err != nil {
		return err
	}
	fmt.Printf("| %d | %d | %d | %d | %d | %d | %.0f → %.0f MB | %.0f → %.0f MB | %.1f s |\n", n, ok.Load(), refused.Load(), other.Load(),
		failedGateways.Load(), frames.Load(), mb(s0), mb(s1), mb(g0), mb(g1), took.Seconds())
	return nil
}

func mb(kib int64) float64 { return float64(kib) * 1024 / 1e6 }

func isOverloaded(err error) bool {
	st, _ := status.FromError(err)
	if st.Code() != codes.ResourceExhausted {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Reason == "OVERLOADED" {
			return true
		}
	}
	return false
}
