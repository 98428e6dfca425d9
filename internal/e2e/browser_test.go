package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

var (
	chromiumOnce    sync.Once
	chromiumPath    string
	chromiumErr     error
	chromiumInstall time.Duration
)

// chromium returns the path of a Chromium, installing Debian's package the
// first time when there is none. A browser that cannot be had fails the test:
// skipping would let the browser client go untested without anyone noticing.
func chromium(t *testing.T) string {
	t.Helper()
	chromiumOnce.Do(func() {
		if chromiumPath = findChromium(); chromiumPath != "" {
			return
		}
		start := time.Now()
		const script = "apt-get update && apt-get install -y --no-install-recommends chromium"
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		chromiumInstall = time.Since(start)
		if err != nil {
			if len(out) > 4000 {
				out = out[len(out)-4000:]
			}
			chromiumErr = fmt.Errorf("no chromium on PATH, and %q failed: %v\n%s", script, err, out)
			return
		}
		if chromiumPath = findChromium(); chromiumPath == "" {
			chromiumErr = errors.New("apt-get installed chromium, yet there is no chromium on PATH")
		}
	})
	if chromiumErr != nil {
		t.Fatal(chromiumErr)
	}
	if chromiumInstall > 0 {
		t.Logf("installed chromium in %v", chromiumInstall.Round(time.Second))
	}
	return chromiumPath
}

func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserPage is a headless Chromium with one tab, closed when the test
// ends. On failure it leaves a screenshot and the page's console behind.
type browserPage struct {
	t   *testing.T
	ctx context.Context // every action; ends at the test's deadline for the browser

	mu      sync.Mutex
	console []string
}

func startBrowser(t *testing.T, timeout time.Duration) *browserPage {
	t.Helper()
	profile := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // root in a container: the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.WindowSize(1200, 1000),
		chromedp.UserDataDir(profile), // a fresh profile: no cache, no stored state
	)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	// The first action starts the browser on ctx itself, so that the shorter
	// contexts derived below end actions, not the browser.
	if err := chromedp.Do(ctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Cancel(closeCtx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing chromium: %v", err)
		}
		cancelBrowser()
		cancelAlloc() // kills the browser if it is still there, and waits for it
		killLeftovers(t, profile)
	})

	p := &browserPage{t: t}
	consoleCtx, stopConsole := context.WithCancel(ctx)
	messages := chromedp.Console(consoleCtx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, m.String())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		stopConsole()
		<-consoleDone
	})

	actx, cancelActions := context.WithTimeout(ctx, timeout)
	t.Cleanup(cancelActions)
	p.ctx = actx
	// Registered last, so it runs first: the page is still there.
	t.Cleanup(func() {
		if t.Failed() {
			p.saveEvidence(ctx)
		}
	})
	return p
}

// saveEvidence writes a full-page screenshot and the console of a failed
// test to $TEST_ARTIFACTS (or the temporary directory), and logs both.
func (p *browserPage) saveEvidence(ctx context.Context) {
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Logf("artifacts: %v", err)
		return
	}
	name := regexp.MustCompile(`[^A-Za-z0-9_-]+`).ReplaceAllString(p.t.Name(), "_")
	base := filepath.Join(dir, fmt.Sprintf("%s-%s", name, time.Now().Format("20060102-150405")))
	p.mu.Lock()
	console := strings.Join(p.console, "\n")
	p.mu.Unlock()
	p.t.Logf("browser console:\n%s", console)
	if err := os.WriteFile(base+".console.txt", []byte(console+"\n"), 0o644); err == nil {
		p.t.Logf("browser console saved to %s", base+".console.txt")
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		p.t.Logf("no screenshot: %v", err)
		return
	}
	if err := os.WriteFile(base+".png", png, 0o644); err != nil {
		p.t.Logf("screenshot: %v", err)
		return
	}
	p.t.Logf("screenshot saved to %s", base+".png")
}

// killLeftovers kills, by pid, the Chromium processes (renderers, zygotes,
// crash handler) still running on the test's profile after the browser
// closed: children can outlive their parent briefly, or for good.
func killLeftovers(t *testing.T, profile string) {
	want := []byte("--user-data-dir=" + profile)
	deadline := time.Now().Add(3 * time.Second)
	killed := map[int]bool{}
	for quiet := 0; quiet < 3 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entries, _ := os.ReadDir("/proc")
		found := 0
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || !bytes.Contains(cmdline, want) {
				continue
			}
			found++
			killed[pid] = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if found == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	if len(killed) > 0 {
		t.Logf("killed %d chromium processes left after the browser closed", len(killed))
	}
}

func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// text is the text content of the element with the given id.
func (p *browserPage) text(id string) string {
	p.t.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](
		fmt.Sprintf(`document.getElementById(%q)?.textContent ?? ""`, id)))
	if err != nil {
		p.t.Fatalf("read #%s: %v", id, err)
	}
	return s
}

// listItems are the texts of the items of the list with the given id.
func (p *browserPage) listItems(id string) []string {
	p.t.Helper()
	items, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](
		fmt.Sprintf(`[...document.querySelectorAll("#%s > li")].map((li) => li.textContent)`, id)))
	if err != nil {
		p.t.Fatalf("read #%s: %v", id, err)
	}
	return items
}

// waitUntil polls cond until it holds; the page's state is in the failure.
func (p *browserPage) waitUntil(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || p.ctx.Err() != nil {
			p.t.Fatalf("page: timed out after %v waiting for %s (socket %q, status %q, rooms %q)",
				timeout, what, p.text("socket-id"), p.text("status"), p.listItems("rooms"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitForRooms waits until the page lists exactly rooms.
func (p *browserPage) waitForRooms(what string, rooms ...string) {
	p.t.Helper()
	p.waitUntil(10*time.Second, what, func() bool { return slices.Equal(p.listItems("rooms"), rooms) })
}

// runShownCommand runs a grpcurl command line that the page shows, as
// grpcurl would: it must be one shell command with nothing for the shell to
// expand, call a method of the membership API at wantAddr, and carry a body
// whose every field the API knows.
func runShownCommand(t *testing.T, line, wantAddr string) proto.Message {
	t.Helper()
	words, err := shellWords(line)
	if err != nil {
		t.Fatalf("command %q: %v", line, err)
	}
	if len(words) != 6 || words[0] != "grpcurl" || words[1] != "-plaintext" || words[2] != "-d" {
		t.Fatalf("command %q: want grpcurl -plaintext -d JSON ADDR METHOD, got %q", line, words)
	}
	if words[4] != wantAddr {
		t.Fatalf("command %q calls %s, want the API at %s", line, words[4], wantAddr)
	}
	var in, out proto.Message
	switch words[5] {
	case "membership.v1.MembershipService/Join":
		in, out = &membershipv1.JoinRequest{}, &membershipv1.JoinResponse{}
	case "membership.v1.MembershipService/Leave":
		in, out = &membershipv1.LeaveRequest{}, &membershipv1.LeaveResponse{}
	case "membership.v1.MembershipService/Broadcast":
		in, out = &membershipv1.BroadcastRequest{}, &membershipv1.BroadcastResponse{}
	default:
		t.Fatalf("command %q: unexpected method %s", line, words[5])
	}
	// grpcurl parses -d with protojson too: an unknown field fails there as here.
	if err := protojson.Unmarshal([]byte(words[3]), in); err != nil {
		t.Fatalf("command %q: body: %v", line, err)
	}
	cc, err := grpc.NewClient(words[4], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cc.Invoke(ctx, "/"+words[5], in, out); err != nil {
		t.Fatalf("command %q: %v", line, err)
	}
	return out
}

// shellWords splits a command line as a POSIX shell would, for quoting with
// single quotes and backslashes. Whatever else a shell would act on (double
// quotes, $, backquotes, redirections, globs, separators) is an error: a
// command shown for copying must mean exactly its words.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			end := strings.IndexByte(line[i+1:], '\'')
			if end < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(line[i+1 : i+1+end])
			i += end + 1
			inWord = true
		case c == '\\':
			if i+1 == len(line) || line[i+1] == '\n' {
				return nil, errors.New("backslash at the end of a line")
			}
			cur.WriteByte(line[i+1])
			i++
			inWord = true
		case strings.IndexByte("\"$`;&|<>()*?[]{}~#!\n", c) >= 0:
			return nil, fmt.Errorf("unquoted %q at byte %d", c, i)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

func TestShellWords(t *testing.T) {
	for line, want := range map[string][]string{
		`grpcurl -plaintext -d '{"a":"b"}' 127.0.0.1:1 x/Y`: {"grpcurl", "-plaintext", "-d", `{"a":"b"}`, "127.0.0.1:1", "x/Y"},
		`'it'\''s'`:         {"it's"},
		`'a b'c\ d`:         {"a bc d"},
		"'two\nlines'":      {"two\nlines"},
		`''`:                {""},
		`  spaced   words `: {"spaced", "words"},
	} {
		got, err := shellWords(line)
		if err != nil || strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
			t.Errorf("shellWords(%q) = %q, %v; want %q", line, got, err, want)
		}
	}
	for _, line := range []string{`'open`, `a"b"`, `$HOME`, "`id`", `a;b`, `a>b`, `a*`, `x\`} {
		if got, err := shellWords(line); err == nil {
			t.Errorf("shellWords(%q) = %q, want an error", line, got)
		}
	}
}

// The demo page in a real browser against a real stack: it connects through
// membership.js, the grpcurl commands it shows join, broadcast to and leave a
// room (each change appearing on the page), a socket request gets its answer,
// and after a gateway restart the page is back with a new socket id.
func TestBrowserDemoPage(t *testing.T) {
	started := time.Now()
	e := testutil.StartEtcd(t)
	api := stacktest.StartMembershipServer(t, e)
	wsAddr := testutil.FreeAddr(t)
	// No drain: one gateway, so the page reconnects as a new socket.
	gatewayFlags := []string{"--demo-page", "--demo-api-addr", api.Addr, "--drain-timeout", "0"}
	gw := startGatewayProcessAt(t, e, "web", 10*time.Second, wsAddr, gatewayFlags...)

	page := startBrowser(t, 60*time.Second)
	page.do("open the demo page", chromedp.Navigate("http://"+wsAddr+"/"))

	idPattern := regexp.MustCompile(`^web\.[0-9a-f]+\.[A-Za-z0-9_-]+$`)
	page.waitUntil(10*time.Second, "a socket id", func() bool { return idPattern.MatchString(page.text("socket-id")) })
	first := page.text("socket-id")
	if got := page.text("status"); got != "connected" {
		t.Fatalf("status %q, want connected", got)
	}

	// Quotes and markup in what is typed: the command must still say
	// exactly it, and the page must show it as text.
	const room, text = "fun room", `it's "<b>bold</b>"`
	page.do("type a room and a message",
		chromedp.Evaluate[chromedp.Void](`for (const id of ["room-input", "text-input"]) document.getElementById(id).value = ""`),
		chromedp.SendKeys(chromedp.CSS("#room-input"), room),
		chromedp.SendKeys(chromedp.CSS("#text-input"), text),
	)

	join := page.text("cmd-join")
	if !strings.Contains(join, first) {
		t.Fatalf("join command %q lacks the socket id %s", join, first)
	}
	runShownCommand(t, join, api.Addr)
	page.waitForRooms("the room on the page", room)

	br := runShownCommand(t, page.text("cmd-broadcast"), api.Addr).(*membershipv1.BroadcastResponse)
	if br.Delivered != 1 {
		t.Fatalf("broadcast delivered to %d sockets, want 1 (the page's)", br.Delivered)
	}
	want := fmt.Sprintf(`room %s, event message: {"text":%q}`, room, text)
	page.waitUntil(10*time.Second, "the message on the page", func() bool {
		msgs := page.listItems("messages")
		return len(msgs) == 1 && msgs[0] == want
	})
	if n, err := chromedp.Run(page.ctx, chromedp.Evaluate[int](`document.querySelectorAll("#messages b").length`)); err != nil || n != 0 {
		t.Fatalf("the message's markup became %d elements (%v): it must be text", n, err)
	}

	runShownCommand(t, page.text("cmd-leave"), api.Addr)
	page.waitUntil(10*time.Second, "the room to leave the page", func() bool { return len(page.listItems("rooms")) == 0 })

	// No upstream app behind this gateway: the request's answer is 501.
	page.do("send a socket request", chromedp.Click(chromedp.CSS("#request-send")))
	page.waitUntil(10*time.Second, "the socket request's answer", func() bool {
		return strings.HasPrefix(page.text("response"), "501 ")
	})

	// Restart the gateway where the page's socket was.
	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.done:
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop on SIGTERM")
	}
	page.waitUntil(10*time.Second, "the page to notice the gateway going", func() bool {
		return page.text("socket-id") == "—"
	})
	t.Logf("%v: gateway stopped", time.Since(started).Round(time.Millisecond))
	startGatewayProcessAt(t, e, "web", 10*time.Second, wsAddr, gatewayFlags...)
	t.Logf("%v: gateway healthy again", time.Since(started).Round(time.Millisecond))
	page.waitUntil(20*time.Second, "a new socket id after the restart", func() bool {
		id := page.text("socket-id")
		return idPattern.MatchString(id) && id != first
	})
	second := page.text("socket-id")
	if got := page.text("status"); got != "reconnected" {
		t.Errorf("status %q, want reconnected", got)
	}
	if got := page.text("reconnections"); got != "1" {
		t.Errorf("reconnections %q, want 1", got)
	}
	if got := page.text("previous-id"); got != first {
		t.Errorf("previous socket id %q, want %s", got, first)
	}
	if rooms := page.listItems("rooms"); len(rooms) != 0 {
		t.Errorf("rooms %q after reconnecting: a new socket is in none", rooms)
	}
	// The new socket is live: the commands name it, and joining it shows.
	join = page.text("cmd-join")
	if !strings.Contains(join, second) {
		t.Fatalf("join command %q does not follow the new socket id %s", join, second)
	}
	runShownCommand(t, join, api.Addr)
	page.waitForRooms("the room on the page after reconnecting", room)
	t.Logf("socket %s, then %s after the restart; %v in all", first, second, time.Since(started).Round(time.Millisecond))
}
