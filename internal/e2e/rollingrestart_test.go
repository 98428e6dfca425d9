package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/structpb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/testutil"
)

// A rolling restart of two gateway binaries under a steady Broadcast
// stream: every native socket resumes on the other gateway with its id, its
// rooms and every message, none twice. The client side mirrors
// web/membership.js: on any close (here 1012 "gateway restarting") it
// reconnects with ?resume_token=…&last_seq=N, retrying with a small backoff
// while no gateway answers, and takes "resumed":false as final.
//
// Figures (t.Logf; BENCHMARKS.md "Rolling restart"): time from the close
// frame to the resumed connected frame, messages buffered per resumed
// socket (those it receives on the new connection that were broadcast
// before the resume), messages checked.

const (
	rrSockets     = 1000
	rrRooms       = 10
	rrInterval    = 100 * time.Millisecond // per room
	rrResumeWait  = 30 * time.Second       // per phase, for every client to resume or give up
	rrDrain       = "25s"                  // the gateway binary's default
	rrLeaseTTL    = 10 * time.Second
	rrSettleAfter = time.Second
)

// rrSent is what the broadcasters sent: per room, when the Broadcast of each
// number began and when it returned (zero: it failed, and may or may not
// have been delivered).
type rrSent struct {
	mu     sync.Mutex
	at     [rrRooms][]time.Time // at[room][n-1]: returned
	began  [rrRooms][]time.Time
	errs   atomic.Int64
	failed atomic.Int64 // FailedGateways summed
}

func (s *rrSent) record(room, n int, began, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.at[room]) < n {
		s.at[room] = append(s.at[room], time.Time{})
		s.began[room] = append(s.began[room], time.Time{})
	}
	s.at[room][n-1], s.began[room][n-1] = at, began
}

// sentBefore reports whether the Broadcast of message n of room returned
// (so the gateway had it) before t, and whether it began before t.
func (s *rrSent) sentBefore(room, n int, t time.Time) (returned, began bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > len(s.at[room]) {
		return false, false
	}
	return !s.at[room][n-1].IsZero() && s.at[room][n-1].Before(t), s.began[room][n-1].Before(t)
}

func (s *rrSent) snapshot() [rrRooms][]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [rrRooms][]time.Time
	for r := range out {
		out[r] = slices.Clone(s.at[r])
	}
	return out
}

func rrRoom(i int) string { return "room-" + strconv.Itoa(i) }

// rrOutcome is how one resume ended.
type rrOutcome struct {
	ok   bool
	took time.Duration // close frame to resumed connected frame
	err  string        // resume_error, or the last dial error, when !ok
}

// rrClient is one socket and its resume loop.
type rrClient struct {
	idx    int
	rooms  []int
	sent   *rrSent
	target *atomic.Pointer[string] // the WebSocket URL a resume dials

	mu        sync.Mutex
	conn      *websocket.Conn
	id        string
	token     string
	lastSeq   uint64
	got       map[int]map[int]int // room → n → times received
	seqErrors []string
	closes    []int // close codes received
	resumedAt time.Time
	history   []string // each connection's start and socket, for a failure's report
	// Messages received on the connection since the last resume that were
	// broadcast before it: at least buffered (their Broadcast returned
	// before it, so the gateway held them) and at most mayBuffered (their
	// Broadcast began before it; the rest of them may have come live).
	buffered, mayBuffered int
	resumes               chan rrOutcome // one per dropped connection
	closed                atomic.Bool    // the test is done with it: no more resumes
}

type rrFrame struct {
	Type        string          `json:"type"`
	SocketID    string          `json:"socket_id"`
	Seq         uint64          `json:"seq"`
	Room        string          `json:"room"`
	Data        json.RawMessage `json:"data"`
	ResumeToken string          `json:"resume_token"`
	Resumed     *bool           `json:"resumed"`
	ResumeError string          `json:"resume_error"`
}

func newRRClient(idx int, sent *rrSent, target *atomic.Pointer[string], rng *rand.Rand) *rrClient {
	c := &rrClient{idx: idx, sent: sent, target: target, got: map[int]map[int]int{}, resumes: make(chan rrOutcome, 4)}
	c.rooms = []int{idx % rrRooms}
	if rng.IntN(2) == 0 { // half the sockets are in a second room
		c.rooms = append(c.rooms, (idx%rrRooms+1+rng.IntN(rrRooms-1))%rrRooms)
	}
	for _, r := range c.rooms {
		c.got[r] = map[int]int{}
	}
	return c
}

// dial opens the client's first connection.
func (c *rrClient) dial(wsURL string) error {
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		return err
	}
	f, err := rrFirstFrame(conn)
	if err != nil || f.Type != "connected" || f.ResumeToken == "" {
		conn.Close()
		return fmt.Errorf("first frame %+v (%v), want connected with a resume_token", f, err)
	}
	c.mu.Lock()
	c.conn, c.id, c.token = conn, f.SocketID, f.ResumeToken
	c.mu.Unlock()
	go c.read(conn)
	return nil
}

func rrFirstFrame(conn *websocket.Conn) (rrFrame, error) {
	var f rrFrame
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // membership.js's connectTimeout
	_, data, err := conn.ReadMessage()
	if err != nil {
		return f, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	err = json.Unmarshal(data, &f)
	return f, err
}

// read reads one connection until it ends, then resumes.
func (c *rrClient) read(conn *websocket.Conn) {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			code := websocket.CloseAbnormalClosure
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			conn.Close()
			c.mu.Lock()
			closed := c.conn != conn || c.closed.Load() // the test closed it
			c.closes = append(c.closes, code)
			c.mu.Unlock()
			if !closed {
				c.resumes <- c.resume(time.Now())
			}
			return
		}
		var f rrFrame
		if json.Unmarshal(data, &f) != nil || f.Type != "message" {
			continue
		}
		room, _ := strconv.Atoi(strings.TrimPrefix(f.Room, "room-"))
		n, _ := strconv.Atoi(string(f.Data))
		c.mu.Lock()
		if f.Seq != c.lastSeq+1 && len(c.seqErrors) < 5 {
			c.seqErrors = append(c.seqErrors, fmt.Sprintf("seq %d after %d (%s #%d)", f.Seq, c.lastSeq, f.Room, n))
		}
		c.lastSeq = max(c.lastSeq, f.Seq)
		if m := c.got[room]; m != nil {
			m[n]++
		} else if len(c.seqErrors) < 5 {
			c.seqErrors = append(c.seqErrors, "message of "+f.Room+", not one of its rooms")
		}
		if !c.resumedAt.IsZero() {
			returned, began := c.sent.sentBefore(room, n, c.resumedAt)
			if returned {
				c.buffered++
			}
			if began {
				c.mayBuffered++
			}
		}
		c.mu.Unlock()
	}
}

// resume reconnects with the token and last seq to the current target until
// a gateway answers, for up to rrResumeWait; a connected frame with
// "resumed":false is final.
func (c *rrClient) resume(closedAt time.Time) rrOutcome {
	backoff := 20 * time.Millisecond
	lastErr := ""
	for time.Since(closedAt) < rrResumeWait && !c.closed.Load() {
		c.mu.Lock()
		u := *c.target.Load() + "?resume_token=" + url.QueryEscape(c.token) + "&last_seq=" + strconv.FormatUint(c.lastSeq, 10)
		c.mu.Unlock()
		conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
		if err != nil {
			lastErr = err.Error()
			if resp != nil {
				lastErr = "HTTP " + strconv.Itoa(resp.StatusCode)
			}
			time.Sleep(backoff + time.Duration(rand.Int64N(int64(backoff))))
			backoff = min(2*backoff, 250*time.Millisecond)
			continue
		}
		f, err := rrFirstFrame(conn)
		if err != nil {
			conn.Close()
			lastErr = "reading the connected frame: " + err.Error()
			continue
		}
		c.mu.Lock()
		id := c.id
		c.mu.Unlock()
		if f.Type != "connected" || f.Resumed == nil || !*f.Resumed || f.SocketID != id {
			// A new socket: the old one is lost. Closed on purpose, so the
			// gateway ends the new one at once.
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			conn.Close()
			return rrOutcome{err: "resumed=false resume_error=" + f.ResumeError}
		}
		now := time.Now()
		c.mu.Lock()
		c.conn, c.token, c.resumedAt, c.buffered, c.mayBuffered = conn, f.ResumeToken, now, 0, 0
		c.history = append(c.history, fmt.Sprintf("closed %s, resumed %s at seq %d", closedAt.Format("15:04:05.000"), now.Format("15:04:05.000"), c.lastSeq))
		c.mu.Unlock()
		go c.read(conn)
		return rrOutcome{ok: true, took: now.Sub(closedAt)}
	}
	return rrOutcome{err: "no gateway resumed it within " + rrResumeWait.String() + ": " + lastErr}
}

// missing names the messages of c's rooms that final says were broadcast
// and c never received, with when their Broadcasts ran and c's resumes.
func (c *rrClient) missing(final [rrRooms][]time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var gaps []string
	for _, r := range c.rooms {
		for i, at := range final[r] {
			if c.got[r][i+1] == 0 && !at.IsZero() && len(gaps) < 8 {
				c.sent.mu.Lock()
				began := c.sent.began[r][i]
				c.sent.mu.Unlock()
				gaps = append(gaps, fmt.Sprintf("%s #%d (%s–%s)", rrRoom(r), i+1, began.Format("15:04:05.000"), at.Format("15:04:05.000")))
			}
		}
	}
	return fmt.Sprintf("socket %s: %s; %s", c.id, strings.Join(gaps, ", "), strings.Join(c.history, "; "))
}

func (c *rrClient) close() {
	c.closed.Store(true)
	c.mu.Lock()
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// rrPhase waits for each of clients to lose its connection and resume,
// and fails the test, naming the count and the reasons, when any did not.
func rrPhase(t *testing.T, name string, clients []*rrClient, took *[]time.Duration, buffered, mayBuffered *[]int) {
	t.Helper()
	deadline := time.After(rrResumeWait + 5*time.Second)
	failed := map[string]int{}
	example := map[string]string{}
	resumed := []*rrClient{}
	for _, c := range clients {
		select {
		case o := <-c.resumes:
			if o.ok {
				*took = append(*took, o.took)
				resumed = append(resumed, c)
				continue
			}
			failed[o.err]++
			example[o.err] = c.id
		case <-deadline:
			failed["no close frame or resume outcome in time"]++
		}
	}
	if len(failed) > 0 {
		var lines []string
		for reason, n := range failed {
			lines = append(lines, fmt.Sprintf("%d: %s (e.g. socket %s)", n, reason, example[reason]))
		}
		sort.Strings(lines)
		t.Fatalf("%s: %d of %d clients not resumed (%d resumed):\n%s", name, len(clients)-len(resumed), len(clients), len(resumed), strings.Join(lines, "\n"))
	}
	// The buffered count of each resumed client settles once its replay is
	// read; it is read at the end of the phase.
	time.Sleep(200 * time.Millisecond)
	for _, c := range resumed {
		c.mu.Lock()
		*buffered = append(*buffered, c.buffered)
		*mayBuffered = append(*mayBuffered, c.mayBuffered)
		c.mu.Unlock()
	}
	t.Logf("%s: %d clients resumed", name, len(resumed))
}

func rrQuantile(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func rrQuantileInt(xs []int, q float64) int {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func waitHealthyWithin(t *testing.T, p *proc, within time.Duration) {
	t.Helper()
	waitFor(t, within, "gateway process healthy", func() bool { return getStatus(p.httpURL("/healthz")) == http.StatusOK })
}

func TestRollingRestartLosesNoMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 sockets through two gateway restarts; make test runs it")
	}
	// etcd runs as a process, as it does deployed: embedded in this test
	// binary it would run under the race detector with -race, and a
	// thousand handoffs would measure the detector.
	e := testutil.StartEtcdProcess(t)
	api := startMembershipServer(t, e)
	flags := []string{"--drain-timeout", rrDrain}
	gw1, _ := launchGatewayProcess(t, e, "gw1", rrLeaseTTL, testutil.FreeAddr(t), flags...)
	gw2, _ := launchGatewayProcess(t, e, "gw2", rrLeaseTTL, testutil.FreeAddr(t), flags...)
	waitHealthyWithin(t, gw1, 15*time.Second)
	waitHealthyWithin(t, gw2, 15*time.Second)

	sent := &rrSent{}
	var target atomic.Pointer[string]
	rng := rand.New(rand.NewPCG(16, 1))
	clients := make([]*rrClient, rrSockets)
	for i := range clients {
		clients[i] = newRRClient(i, sent, &target, rng)
	}
	closeAll := func() {
		for _, c := range clients {
			c.close()
		}
	}
	t.Cleanup(closeAll)
	// Half on each gateway, dialed by a few workers.
	onGW1 := clients[:rrSockets/2]
	var wg sync.WaitGroup
	errs := make(chan error, rrSockets)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < rrSockets; i += 16 {
				u := gw1.WSURL
				if i >= rrSockets/2 {
					u = gw2.WSURL
				}
				if err := clients[i].dial(u); err != nil {
					errs <- fmt.Errorf("client %d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	byRoom := make([][]string, rrRooms)
	for _, c := range clients {
		for _, r := range c.rooms {
			byRoom[r] = append(byRoom[r], c.id)
		}
	}
	ctx := context.Background()
	for r, ids := range byRoom {
		for len(ids) > 0 {
			n := min(50, len(ids))
			if _, err := api.Join(ctx, &membershipv1.JoinRequest{Room: rrRoom(r), SocketIds: ids[:n], WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
				t.Fatalf("join %s: %v", rrRoom(r), err)
			}
			ids = ids[n:]
		}
	}

	// The steady stream: each room gets a numbered message every rrInterval.
	stop := make(chan struct{})
	var bwg sync.WaitGroup
	for r := 0; r < rrRooms; r++ {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			tick := time.NewTicker(rrInterval)
			defer tick.Stop()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				began := time.Now()
				bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := api.Broadcast(bctx, &membershipv1.BroadcastRequest{Rooms: []string{rrRoom(r)}, Event: "m", Data: structpb.NewNumberValue(float64(n))})
				cancel()
				if err != nil {
					sent.errs.Add(1)
					sent.record(r, n, began, time.Time{})
					continue
				}
				sent.failed.Add(int64(resp.FailedGateways))
				sent.record(r, n, began, time.Now())
			}
		}()
	}
	stopped := false
	stopStream := func() {
		if !stopped {
			stopped = true
			close(stop)
			bwg.Wait()
		}
	}
	t.Cleanup(stopStream)
	time.Sleep(rrSettleAfter)

	var took []time.Duration
	var buffered, mayBuffered []int
	start := time.Now()

	// gw1 restarts: its clients resume on gw2; a new gw1 (same id, new
	// address, as a new pod) waits for the draining one to end.
	to2 := gw2.WSURL
	target.Store(&to2)
	if err := gw1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	newGW1, _ := launchGatewayProcess(t, e, "gw1", rrLeaseTTL, testutil.FreeAddr(t), flags...)
	t.Cleanup(closeAll) // before newGW1 stops: its clients must not try to resume then
	rrPhase(t, "SIGTERM gw1, clients to gw2", onGW1, &took, &buffered, &mayBuffered)
	waitExit(t, gw1, 30*time.Second, "once its sockets resumed elsewhere")
	waitHealthyWithin(t, newGW1, 30*time.Second)

	// gw2 restarts: all its clients (its own and gw1's) resume on the new gw1.
	to1 := newGW1.WSURL
	target.Store(&to1)
	if err := gw2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rrPhase(t, "SIGTERM gw2, clients to the new gw1", clients, &took, &buffered, &mayBuffered)
	waitExit(t, gw2, 30*time.Second, "once its sockets resumed elsewhere")
	restarts := time.Since(start)

	time.Sleep(rrSettleAfter)
	stopStream()
	final := sent.snapshot()

	// Every client gets every message of its rooms, once.
	complete := func(c *rrClient) (missing, dup int) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, r := range c.rooms {
			for i, at := range final[r] {
				switch got := c.got[r][i+1]; {
				case got > 1:
					dup++
				case got == 0 && !at.IsZero():
					missing++
				}
			}
		}
		return missing, dup
	}
	// Late messages may still be on their way; what is missing after this
	// is lost, and is named below.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		missing := 0
		for _, c := range clients {
			m, _ := complete(c)
			missing += m
		}
		if missing == 0 {
			break
		}
	}
	checked, lost, dups := 0, 0, 0
	var examples []string
	for _, c := range clients {
		m, d := complete(c)
		lost, dups = lost+m, dups+d
		if m > 0 && len(examples) < 10 {
			examples = append(examples, c.missing(final))
		}
		c.mu.Lock()
		for _, r := range c.rooms {
			checked += len(c.got[r])
		}
		if len(c.seqErrors) > 0 {
			t.Errorf("socket %s: seq out of order: %v", c.id, c.seqErrors)
		}
		for _, code := range c.closes {
			if code != websocket.CloseServiceRestart {
				t.Errorf("socket %s: close codes %v, want 1012 only", c.id, c.closes)
				break
			}
		}
		c.mu.Unlock()
	}
	total := 0
	for r := range final {
		total += len(final[r])
	}
	t.Logf("%d sockets, %d rooms, %d broadcasts (%d failed, %d failed gateways); restarts took %v",
		rrSockets, rrRooms, total, sent.errs.Load(), sent.failed.Load(), restarts.Round(time.Millisecond))
	t.Logf("resumes: %d; close to resumed: median %v, p99 %v, max %v",
		len(took), rrQuantile(took, 0.5).Round(time.Millisecond), rrQuantile(took, 0.99).Round(time.Millisecond), rrQuantile(took, 1).Round(time.Millisecond))
	t.Logf("messages buffered per resumed socket (broadcast before its resume: returned before it / begun before it): median %d/%d, p99 %d/%d, max %d/%d",
		rrQuantileInt(buffered, 0.5), rrQuantileInt(mayBuffered, 0.5), rrQuantileInt(buffered, 0.99), rrQuantileInt(mayBuffered, 0.99),
		rrQuantileInt(buffered, 1), rrQuantileInt(mayBuffered, 1))
	t.Logf("messages checked: %d received; %d lost, %d duplicated", checked, lost, dups)
	if lost > 0 || dups > 0 {
		t.Fatalf("%d messages lost, %d duplicated; sockets missing messages (broadcast began–returned; resumed at):\n%s", lost, dups, strings.Join(examples, "\n"))
	}
}
