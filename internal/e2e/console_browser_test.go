package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// consoleServer is a membership-server process with the console on, which
// the test can stop and start again at the same addresses.
type consoleServer struct {
	t                   *testing.T
	endpoint, tokenFile string
	grpcAddr, httpAddr  string
	cmd                 interface{ Signal(os.Signal) error }
	exited              <-chan struct{}
	client              membershipv1.MembershipServiceClient
	health              healthpb.HealthClient
	token               string
}

func startConsoleServer(t *testing.T, endpoint, token string) *consoleServer {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "api.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &consoleServer{t: t, endpoint: endpoint, tokenFile: tokenFile, token: token,
		grpcAddr: testutil.FreeAddr(t), httpAddr: testutil.FreeAddr(t)}
	cc, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	s.client, s.health = membershipv1.NewMembershipServiceClient(cc), healthpb.NewHealthClient(cc)
	s.start()
	return s
}

func (s *consoleServer) start() {
	s.t.Helper()
	cmd, exited := startProcess(s.t, "membership-server", "--grpc-addr", s.grpcAddr, "--http-addr", s.httpAddr,
		"--console", "--auth-token-file", s.tokenFile, "--etcd-endpoints", s.endpoint,
		"--log-level", "error", "--metrics-addr", "")
	s.cmd, s.exited = cmd.Process, exited
	waitServing(s.t, s.health)
}

func (s *consoleServer) stop() {
	s.t.Helper()
	if err := s.cmd.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		s.t.Fatal("membership-server did not stop on SIGTERM")
	}
}

// ctx carries the API token for calls the test makes itself.
func (s *consoleServer) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+s.token)
}

// evaluate runs a JavaScript expression in the page and returns its value.
func evaluate[T any](p *browserPage, expr string) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// consoleState is what a failed wait reports about the console.
func (p *browserPage) consoleState() string {
	return fmt.Sprintf("signin error %q, feed state %q, action %q/%q, gateways %q, rooms %q",
		p.text("signin-error"), p.text("feed-state"), p.text("action-result"), p.text("action-error"),
		p.text("gateways"), p.text("rooms"))
}

func (p *browserPage) waitConsole(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || p.ctx.Err() != nil {
			p.t.Fatalf("console: timed out after %v waiting for %s (%s)", timeout, what, p.consoleState())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// feedHas reports whether a line of the live feed contains every part.
func (p *browserPage) feedHas(parts ...string) bool {
	for _, line := range p.listItems("feed") {
		all := true
		for _, s := range parts {
			all = all && strings.Contains(line, s)
		}
		if all {
			return true
		}
	}
	return false
}

// fill sets an input's value as typed.
func (p *browserPage) fill(id, value string) {
	p.t.Helper()
	p.do("fill #"+id,
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).value = ""`, id)),
		chromedp.SendKeys(chromedp.ID(id), value))
}

// confirm clicks a button that asks for confirmation, then confirms.
func (p *browserPage) confirm(button string) {
	p.t.Helper()
	p.do("click #"+button, chromedp.Click(chromedp.ID(button)))
	p.waitConsole(5*time.Second, "the confirmation dialog", func() bool {
		return evaluate[bool](p, `document.getElementById("confirm").open`)
	})
	p.do("confirm", chromedp.Click(chromedp.ID("confirm-ok")))
}

// The operator console in a real browser against a real stack: a wrong
// token is refused with a clear error; signed in, it shows the gateway and
// the room real sockets made, a JOINED event live, broadcasts to a real
// socket and disconnects it (its DISCONNECTED event following), and its
// feed resumes after a membership-server restart with the events of the
// outage; its feed filters by room, it makes a socket leave a room, and an
// action cancelled at its confirmation is not taken. It fits a phone's
// width and follows a dark color scheme.
//
// With CONSOLE_SCREENSHOT set to a file path, it saves a 1280×800
// screenshot of the console there once the page is back after the restart
// (make console-screenshot);
// screenshots of failures go to $TEST_ARTIFACTS or the temporary directory.
func TestBrowserConsole(t *testing.T) {
	e := testutil.StartEtcd(t)
	const token = "console-test-token"
	api := startConsoleServer(t, e.Endpoint, token)
	gw := stacktest.StartGateway(t, e, "gw-east", 10*time.Second)
	alice := stacktest.Dial(t, gw.WSURL)
	stacktest.Dial(t, gw.WSURL)
	if _, err := api.client.Join(api.ctx(), &membershipv1.JoinRequest{SocketIds: []string{alice.ID}, Room: "lobby"}); err != nil {
		t.Fatal(err)
	}

	// The page and its files carry the strict CSP.
	resp, err := http.Get("http://" + api.httpAddr + "/console/app.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); resp.StatusCode != http.StatusOK || !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("GET /console/app.js: %s, CSP %q", resp.Status, csp)
	}

	page := startBrowser(t, 90*time.Second)
	page.do("open the console", chromedp.EmulateViewport(1280, 800), chromedp.Navigate("http://"+api.httpAddr+"/console/"))

	page.fill("token", "not-the-token")
	page.do("sign in with a wrong token", chromedp.Click(chromedp.ID("signin-button")))
	page.waitConsole(10*time.Second, "the sign-in error", func() bool {
		return strings.Contains(page.text("signin-error"), "unauthenticated")
	})
	if evaluate[bool](page, `document.getElementById("app").hidden`) != true {
		t.Fatal("the console shows with a wrong token")
	}
	if v := evaluate[string](page, `document.getElementById("token").value`); v != "" {
		t.Fatalf("the token field keeps %q after signing in", v)
	}

	page.fill("token", token)
	page.do("sign in", chromedp.Click(chromedp.ID("signin-button")))
	page.waitConsole(10*time.Second, "the gateway with its 2 sockets", func() bool {
		return evaluate[string](page, `[...document.querySelectorAll("#gateways tbody tr")].map((tr) => [...tr.cells].slice(0, 3).map((c) => c.textContent).join("|")).join(";")`) ==
			"gw-east|"+gwAddr(t, api)+"|2"
	})
	page.waitConsole(10*time.Second, "the room lobby with 1 member", func() bool {
		return evaluate[string](page, `[...document.querySelectorAll("#rooms tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent).join("|")).join(";")`) ==
			"lobby|1|0"
	})
	// The token is in no storage, cookie or URL.
	if n := evaluate[int](page, fmt.Sprintf(`Object.keys(localStorage).length + Object.keys(sessionStorage).length + document.cookie.length + location.href.indexOf(%q) + 1`, token)); n != 0 {
		t.Fatalf("the token left a trace in storage, cookies or the URL (%d)", n)
	}
	page.waitConsole(10*time.Second, "the live feed", func() bool { return strings.HasSuffix(page.text("feed-state"), "live") })

	// A JOINED event appears live.
	if _, err := api.client.Join(api.ctx(), &membershipv1.JoinRequest{SocketIds: []string{alice.ID}, Room: "stage <b>"}); err != nil {
		t.Fatal(err)
	}
	page.waitConsole(10*time.Second, "alice's JOINED event", func() bool {
		return page.feedHas("JOINED", "room stage <b>", alice.ID)
	})
	if n := evaluate[int](page, `document.querySelectorAll("#feed b, #rooms b").length`); n != 0 {
		t.Fatalf("a room name's markup became %d elements: it must be text", n)
	}
	if got := page.text("revision"); got == "—" || got == "0" {
		t.Errorf("revision %q, want etcd's", got)
	}

	// Broadcast from the console; the real socket gets it.
	page.fill("broadcast-room", "stage <b>")
	page.fill("broadcast-event", "notice")
	page.fill("broadcast-data", `{"text":"from the console"}`)
	page.confirm("broadcast-send")
	page.waitConsole(10*time.Second, "the broadcast's result", func() bool {
		return strings.HasPrefix(page.text("action-result"), "Broadcast delivered to 1 socket(s)")
	})
	for {
		f := alice.Next(10 * time.Second)
		if f.Type == "message" {
			var data struct{ Text string }
			if f.Room != "stage <b>" || f.Event != "notice" || json.Unmarshal(f.Data, &data) != nil || data.Text != "from the console" {
				t.Fatalf("alice got %+v (%s), want the console's broadcast", f, f.Data)
			}
			break
		}
	}

	// The room's members, the socket's detail, and a disconnect from there.
	page.do("open the room", chromedp.Click(chromedp.Search(`//table[@id="rooms"]//button[text()="stage <b>"]`)))
	page.waitConsole(10*time.Second, "the room's members", func() bool {
		items := page.listItems("members")
		return len(items) == 1 && strings.HasPrefix(items[0], alice.ID)
	})
	page.do("open the socket", chromedp.Click(chromedp.CSS(`#members button`)))
	page.waitConsole(10*time.Second, "the socket's detail", func() bool {
		return page.text("socket-id") == alice.ID && page.text("socket-gateway") == "gw-east" &&
			strings.Join(page.listItems("socket-rooms"), ",") == "lobby,stage <b>"
	})
	page.confirm("socket-disconnect")
	page.waitConsole(10*time.Second, "the disconnect's result", func() bool {
		return strings.HasPrefix(page.text("action-result"), "Disconnected 1 socket(s)")
	})
	select {
	case ce := <-alice.Closed:
		if ce == nil || ce.Code != 4000 {
			t.Fatalf("alice closed with %v, want code 4000", ce)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alice was not closed")
	}
	page.waitConsole(10*time.Second, "alice's DISCONNECTED event", func() bool {
		return page.feedHas("DISCONNECTED", alice.ID) && page.feedHas("LEFT", "room lobby", alice.ID)
	})
	page.waitConsole(10*time.Second, "alice's detail to say she is gone", func() bool {
		return strings.Contains(page.text("socket-error"), "SOCKET_NOT_FOUND") && page.text("socket-id") == "—"
	})

	// A membership-server restart: a socket connects while it is down, and
	// the feed, resuming from its last revision, shows it.
	api.stop()
	page.waitConsole(10*time.Second, "the feed to notice the restart", func() bool {
		return !strings.HasSuffix(page.text("feed-state"), "live")
	})
	bob := stacktest.Dial(t, gw.WSURL)
	api.start()
	page.waitConsole(20*time.Second, "bob's CONNECTED event from the outage", func() bool {
		return page.feedHas("CONNECTED", bob.ID)
	})
	// The rest of the page is back too.
	if _, err := api.client.Join(api.ctx(), &membershipv1.JoinRequest{SocketIds: []string{bob.ID}, Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	page.waitConsole(10*time.Second, "bob in lobby after the restart", func() bool {
		return page.feedHas("JOINED", "room lobby", bob.ID) &&
			evaluate[string](page, `[...document.querySelectorAll("#rooms tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent).join("|")).join(";")`) == "lobby|1|0"
	})

	page.do("open lobby", chromedp.Click(chromedp.Search(`//table[@id="rooms"]//button[text()="lobby"]`)))
	page.waitConsole(10*time.Second, "lobby's members after the restart", func() bool {
		items := page.listItems("members")
		return len(items) == 1 && strings.HasPrefix(items[0], bob.ID)
	})
	page.do("open bob", chromedp.Click(chromedp.CSS(`#members button`)))
	page.waitConsole(10*time.Second, "bob's detail", func() bool { return page.text("socket-id") == bob.ID })
	if out := os.Getenv("CONSOLE_SCREENSHOT"); out != "" {
		png, err := chromedp.Run(page.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot saved to %s", out)
	}

	// The feed filtered by a room shows that room's events only: an event
	// of another room, at an earlier revision, would come first.
	page.fill("feed-room", "stage <b>")
	page.do("filter the feed", chromedp.Click(chromedp.CSS("#feed-form button")))
	page.waitConsole(10*time.Second, "the filtered feed", func() bool { return page.text("feed-state") == "room stage <b>: live" })
	for _, room := range []string{"elsewhere", "stage <b>"} {
		if _, err := api.client.Join(api.ctx(), &membershipv1.JoinRequest{SocketIds: []string{bob.ID}, Room: room}); err != nil {
			t.Fatal(err)
		}
	}
	page.waitConsole(10*time.Second, "bob's JOINED in the filtered feed", func() bool {
		return page.feedHas("JOINED", "room stage <b>", bob.ID)
	})
	if page.feedHas("elsewhere") || len(page.listItems("feed")) != 1 {
		t.Errorf("the feed filtered by room shows %q", page.listItems("feed"))
	}

	// Leave from the console.
	page.fill("leave-room", "elsewhere")
	page.fill("leave-who", bob.ID)
	page.confirm("leave-send")
	page.waitConsole(10*time.Second, "the leave's result", func() bool {
		return strings.HasPrefix(page.text("action-result"), "Left room elsewhere at revision")
	})
	if r, err := api.client.GetSocket(api.ctx(), &membershipv1.GetSocketRequest{SocketId: bob.ID}); err != nil || strings.Join(r.Socket.Rooms, ",") != "lobby,stage <b>" {
		t.Fatalf("bob after leaving elsewhere: %v, %v", r, err)
	}

	// An action cancelled at its confirmation is not taken.
	page.fill("disconnect-who", bob.ID)
	page.do("ask to disconnect bob", chromedp.Click(chromedp.ID("disconnect-send")))
	page.waitConsole(5*time.Second, "the confirmation dialog", func() bool {
		return evaluate[bool](page, `document.getElementById("confirm").open`)
	})
	if text := page.text("confirm-text"); !strings.Contains(text, bob.ID) {
		t.Errorf("the confirmation says %q, without the socket", text)
	}
	page.do("cancel", chromedp.Click(chromedp.ID("confirm-cancel")))
	select {
	case ce := <-bob.Closed:
		t.Fatalf("bob closed (%v) after the disconnect was cancelled", ce)
	case <-time.After(time.Second):
	}
	if got := page.text("action-result") + page.text("action-error"); got != "" {
		t.Errorf("a cancelled action reported %q", got)
	}

	// A phone's width: nothing is wider than the screen.
	page.do("a phone's viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	if w := evaluate[int](page, `document.documentElement.scrollWidth - window.innerWidth`); w > 0 {
		t.Errorf("at 390 px wide the page is %d px too wide", w)
	}
	// Dark: the page follows the scheme.
	light := evaluate[string](page, `getComputedStyle(document.body).backgroundColor`)
	page.do("a dark color scheme", chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		return err
	}))
	if dark := evaluate[string](page, `getComputedStyle(document.body).backgroundColor`); dark == light {
		t.Errorf("background %s in both light and dark", dark)
	}

}

// gwAddr is the gRPC address the test's one gateway registered.
func gwAddr(t *testing.T, api *consoleServer) string {
	t.Helper()
	r, err := api.client.ListGateways(api.ctx(), &membershipv1.ListGatewaysRequest{})
	if err != nil || len(r.Gateways) != 1 {
		t.Fatalf("ListGateways: %v, %v", r, err)
	}
	return r.Gateways[0].GrpcAddr
}
