package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// benchRoomWide: AddRoomMembersToRooms from a room of cfg.roomwideMembers to
// cfg.roomwideDests rooms, through a membership-server of its own (not the
// one running the embedded etcd, whose memory would include etcd's). Reports
// that server's peak resident set (VmHWM) before and after the call, and the
// call's duration. The members are socket records written through the store
// on one lease kept alive by this process, as a gateway would hold them, and
// joined to the source room through the API, 100 per Join.
func benchRoomWide(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	api, err := st.addServer(ctx, strings.Fields(cfg.serverArgs)...)
	if err != nil {
		return err
	}
	server := st.extra[len(st.extra)-1]
	sto, lease, err := st.fakeGateway(ctx, "rw")
	if err != nil {
		return err
	}
	n := cfg.roomwideMembers
	ids := make([]string, n)
	start := time.Now()
	if err := parallel(32, n/100, func(batch int) error {
		for i := batch * 100; i < batch*100+100; i++ {
			sid := store.NewSocketID("rw", lease)
			if _, err := sto.AddSocket(ctx, sid, store.SocketRecord{Gateway: "rw", ConnectedAt: time.Now()}); err != nil {
				return err
			}
			ids[i] = sid.String()
		}
		_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: ids[batch*100 : batch*100+100], Room: "rw-src"})
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "room of %d members built in %v\n", n, time.Since(start).Round(time.Millisecond))
	dests := make([]string, cfg.roomwideDests)
	for i := range dests {
		dests[i] = fmt.Sprintf("rw-dest-%02d", i)
	}
	hwm0, err := procStatusKiB(server.Process.Pid, "VmHWM")
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	start = time.Now()
	resp, err := api.AddRoomMembersToRooms(cctx, &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: "rw-src", DestRooms: dests})
	took := time.Since(start)
	if err != nil {
		return err
	}
	hwm1, err := procStatusKiB(server.Process.Pid, "VmHWM")
	if err != nil {
		return err
	}
	fmt.Printf("## Room-wide call: AddRoomMembersToRooms, %d members × %d rooms (%s)\n\n", n, len(dests), filepath.Base(cfg.binDir))
	fmt.Println("| members | rooms | changed | call time | membership-server peak RSS (VmHWM) before → after |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| %d | %d | %d | %.1f s | %d → %d KiB |\n\n", resp.Sockets, len(dests), resp.Changed, took.Seconds(), hwm0, hwm1)
	return nil
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(workers, n int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// procStatusKiB reads a "kB" field (VmRSS, VmHWM) of /proc/<pid>/status.
func procStatusKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
