// Command membership-bench loads the system the way its users do and prints
// the figures BENCHMARKS.md quotes. By default it starts its own stack from
// the binaries in --bin-dir (membership-server with an embedded etcd, and
// gateways), each a separate process on loopback, and stops it at the end.
//
// Scenarios (--scenario, comma-separated, or "all"):
//
//	throughput  Join/Leave calls/s at concurrency 1, 16, 64, 256, next to the
//	            same guarded transaction sent straight to etcd, in the same run
//	apply       Join start → "joined" frame at the socket, idle and under load
//	fanout      one room of --fanout-sockets over 2 gateways: delivered
//	            messages/s and delivery latency, with and without a stalled client
//	idle        --idle-sockets idle sockets on one gateway: its memory and
//	            goroutines per socket
//	crash       a gateway holding --crash-sockets sockets in --crash-rooms
//	            rooms each is SIGKILLed: time until its memberships are gone,
//	            and other sockets' Join/Leave latency and the longest write
//	            pause while etcd revokes its leases
//	roomwide    AddRoomMembersToRooms from a room of --roomwide-members to
//	            --roomwide-rooms rooms: the membership-server's peak RSS
//	            (not part of "all": it writes millions of keys)
//	users       Join/Leave calls/s through the API for sockets without a user
//	            and sockets with JWT users (the user index), alternating in one
//	            run, and Join/Leave by user (not part of "all")
//	bcmem       waves of --bcmem-concurrency concurrent ~1 MiB Broadcasts, each
//	            against a fresh stack: calls refused (OVERLOADED) and the peak
//	            RSS (VmHWM) of the membership-server and the gateway
//	http        Join/Leave calls/s and latency at --http-concurrency over gRPC,
//	            Connect JSON and the REST routes of --http-addr, interleaved
//	            in --http-rounds rounds against one membership-server
//	watch       events/s one WatchMembership stream delivers while room-wide
//	            calls change --watch-sockets memberships at a time
//	peer        beside Centrifugo (one node, memory engine, --bin-dir/centrifugo),
//	            in 3 interleaved rounds: fan-out and idle memory with
//	            --peer-sockets sockets, server CPU per delivered message, and
//	            membership changes at --peer-concurrency; etcd runs as its own
//	            process (--bin-dir/etcd) here (not part of "all")
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type config struct {
	binDir        string
	duration      time.Duration
	fanoutSockets int
	idleSockets   int
	crashSockets  int
	crashShards   int
	crashRooms    int
	crashTTL      time.Duration
	idleHold      time.Duration
	serverArgs    string
	tpLevels      string
	tpPaths       string
	// roomwide scenario
	roomwideMembers int
	roomwideDests   int
	// bcmem scenario
	bcmemLevels string
	gatewayArgs string
	// http scenario
	httpConcurrency int
	httpRounds      int
	httpProfileDir  string
	// watch scenario
	watchSockets int
	// peer scenario
	peerSockets    int
	peerLevels     string
	peerProfileDir string
}

func main() {
	var cfg config
	scenarios := flag.String("scenario", "all", "throughput,apply,fanout,idle,crash,http, roomwide, bcmem, users, watch, peer, or all (all but roomwide, bcmem, users, watch and peer)")
	flag.StringVar(&cfg.binDir, "bin-dir", ".bin", "where the membership-server and gateway binaries are")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "how long each measured phase runs")
	flag.IntVar(&cfg.fanoutSockets, "fanout-sockets", 10000, "sockets in the fan-out room")
	// One process may hold at most RLIMIT_NOFILE sockets; where the hard limit
	// cannot be raised (20,000 here), the defaults stay under it.
	flag.IntVar(&cfg.idleSockets, "idle-sockets", 18000, "idle sockets on one gateway")
	flag.StringVar(&cfg.serverArgs, "server-args", "", "extra flags for the membership-server, space-separated (e.g. \"--batch-committers 0\")")
	flag.DurationVar(&cfg.idleHold, "idle-hold", 0, "keep the idle sockets open this long after measuring (to profile the gateway)")
	flag.IntVar(&cfg.crashSockets, "crash-sockets", 19000, "sockets on the gateway that crashes; each joins --crash-rooms rooms")
	flag.IntVar(&cfg.crashRooms, "crash-rooms", 2, "rooms each socket of the crashing gateway joins (its keys: a record and 2 per membership)")
	flag.IntVar(&cfg.crashShards, "crash-lease-shards", 16, "the crashing gateway's --lease-shards")
	flag.DurationVar(&cfg.crashTTL, "crash-lease-ttl", 10*time.Second, "the crashing gateway's --lease-ttl")
	flag.StringVar(&cfg.tpLevels, "tp-concurrency", "1,16,64,256", "throughput: concurrency levels")
	flag.StringVar(&cfg.tpPaths, "tp-paths", "raw,plain,api", "throughput: which paths to measure (raw etcd, API without coalescing, API)")
	flag.IntVar(&cfg.roomwideMembers, "roomwide-members", 100000, "roomwide: members of the source room (a multiple of 100)")
	flag.IntVar(&cfg.roomwideDests, "roomwide-rooms", 20, "roomwide: destination rooms")
	flag.StringVar(&cfg.bcmemLevels, "bcmem-concurrency", "64,256", "bcmem: concurrent Broadcasts per wave")
	flag.IntVar(&cfg.watchSockets, "watch-sockets", 5000, "watch: sockets whose memberships come and go (a multiple of 100)")
	flag.StringVar(&cfg.gatewayArgs, "gateway-args", "", "bcmem, fanout: extra flags for the gateways, space-separated")
	flag.IntVar(&cfg.httpConcurrency, "http-concurrency", 64, "http: concurrent callers")
	flag.IntVar(&cfg.httpRounds, "http-rounds", 3, "http: rounds, each running every transport for --duration")
	flag.StringVar(&cfg.httpProfileDir, "http-cpuprofile", "", "http: after the rounds, record the membership-server's CPU profile under each transport into this directory")
	flag.IntVar(&cfg.peerSockets, "peer-sockets", 10000, "peer: sockets in the fan-out room and idle sockets, on each system")
	flag.StringVar(&cfg.peerLevels, "peer-concurrency", "64,256", "peer: concurrency levels of the membership changes")
	flag.StringVar(&cfg.peerProfileDir, "peer-profile-dir", "", "peer: after the rounds, record 10 s CPU profiles of the membership-server, gateway and etcd under Join/Leave at concurrency 64 into this directory")
	flag.StringVar(&clientProtocol, "protocol", "native", "fanout, idle: the bench sockets' protocol, native (/ws) or socketio (/socket.io/, Engine.IO 4 WebSocket)")
	flag.Parse()
	if clientProtocol != "native" && clientProtocol != "socketio" {
		fmt.Fprintln(os.Stderr, "--protocol: native or socketio")
		os.Exit(2)
	}
	raiseFileLimit()
	fmt.Printf("# membership-bench %s\n\nmachine: %s, %d cores, %s/%s; %s\n\n", time.Now().UTC().Format(time.RFC3339),
		cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	run := map[string]func(context.Context, config) error{
		"throughput": benchThroughput,
		"apply":      benchApply,
		"fanout":     benchFanout,
		"idle":       benchIdle,
		"crash":      benchCrash,
		"roomwide":   benchRoomWide,
		"bcmem":      benchBroadcastMemory,
		"http":       benchHTTP,
		"users":      benchUsers,
		"watch":      benchWatch,
		"peer":       benchPeer,
	}
	order := []string{"throughput", "apply", "fanout", "idle", "crash", "http"}
	if *scenarios != "all" {
		order = strings.Split(*scenarios, ",")
	}
	ctx := context.Background()
	for _, name := range order {
		f, ok := run[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "unknown scenario %q\n", name)
			os.Exit(2)
		}
		if err := f(ctx, cfg); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			os.Exit(1)
		}
	}
}

// raiseFileLimit lifts the open-files limit as far as the system lets this
// process (as root, past the hard limit): the idle and crash scenarios hold
// tens of thousands of sockets here and in the gateway it starts.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	want := syscall.Rlimit{Cur: 400000, Max: 400000}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}
