package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
	"github.com/socketrooms/membership/internal/testutil/nodejs"
)

// sioPage is a page using socket.io-client's browser bundle with its
// defaults: polling first, then the upgrade to WebSocket. ioArgs are io()'s
// arguments: none for the page's own origin.
func sioPage(ioArgs string) string {
	return `<!doctype html><meta charset="utf-8"><title>socket.io</title>
<p>id: <span id="sid"></span> transport: <span id="transport"></span></p>
<pre id="events"></pre>
<script src="/static/socket.io.min.js"></script>
<script>
const socket = io(` + ioArgs + `);
const show = () => { document.getElementById("transport").textContent = socket.io.engine ? socket.io.engine.transport.name : ""; };
socket.on("connect", () => { document.getElementById("sid").textContent = socket.id; show(); });
socket.io.on("open", () => socket.io.engine.on("upgrade", show));
socket.onAny((ev, ...args) => { document.getElementById("events").textContent += JSON.stringify([ev, ...args]) + "\n"; });
</script>`
}

// socket.io-client 4's browser bundle in headless Chromium, on a page whose
// origin also serves /socket.io/ (a reverse proxy to the gateway, as a
// deployment puts the gateway behind its site): it connects with polling,
// upgrades, and receives the membership notice and a Broadcast.
func TestBrowserSocketIOClient(t *testing.T) {
	dir := nodejs.Install(t)
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "web", LeaseTTL: 10 * time.Second})
	gwURL, _ := url.Parse(strings.Replace(strings.TrimSuffix(g.WSURL, "/ws"), "ws://", "http://", 1))
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", httputil.NewSingleHostReverseProxy(gwURL))
	mux.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.Dir(filepath.Join(dir, "node_modules", "socket.io-client", "dist")))))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(sioPage("")))
	})
	site := httptest.NewServer(mux)
	defer site.Close()
	checkSIOPage(t, api, site.URL+"/")
}

// The usual deployment: the app's page on one origin, the gateway on
// another (here another port), named in --allowed-origins. socket.io-client
// in Chromium polls the gateway cross-origin, with credentials and a header
// of its own (so the browser sends CORS preflights), then upgrades.
func TestBrowserSocketIOClientCrossOrigin(t *testing.T) {
	dir := nodejs.Install(t)
	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	gwURL := make(chan string, 1)
	mux := http.NewServeMux()
	mux.Handle("/static/", http.StripPrefix("/static/", http.FileServer(http.Dir(filepath.Join(dir, "node_modules", "socket.io-client", "dist")))))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		u := <-gwURL
		gwURL <- u
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(sioPage(strconv.Quote(u) + `, { withCredentials: true, extraHeaders: { "x-app": "chat" } }`)))
	})
	site := httptest.NewServer(mux)
	defer site.Close()
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "web", LeaseTTL: 10 * time.Second, AllowedOrigins: []string{site.URL}})
	gwURL <- strings.Replace(strings.TrimSuffix(g.WSURL, "/ws"), "ws://", "http://", 1)
	checkSIOPage(t, api, site.URL+"/")
}

// checkSIOPage opens a sioPage: it must connect by polling, upgrade, and
// receive the joined notice and a Broadcast.
func checkSIOPage(t *testing.T, api membershipv1.MembershipServiceClient, pageURL string) {
	t.Helper()
	page := startBrowser(t, 60*time.Second)
	page.do("open the page", chromedp.Navigate(pageURL))
	page.waitUntil(15*time.Second, "a socket", func() bool { return strings.HasPrefix(page.text("sid"), "web.") })
	page.waitUntil(15*time.Second, "the upgrade to WebSocket", func() bool { return page.text("transport") == "websocket" })
	id := page.text("sid")
	if _, err := api.Join(context.Background(), &membershipv1.JoinRequest{SocketId: id, Room: "fun", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
	broadcast(t, api, "chat", map[string]any{"text": "hi"}, "fun")
	page.waitUntil(10*time.Second, "the notice and the event", func() bool {
		return page.text("events") == `["membership:joined","fun"]`+"\n"+`["chat",{"text":"hi"}]`+"\n"
	})
}
