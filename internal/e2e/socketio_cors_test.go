package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// Long-polling from a page on another origin: an origin --allowed-origins
// admits gets engine.io's CORS headers on the preflight, the handshake, and
// the session's GETs and POSTs; any other origin gets 403 without them, on
// every request of the session, as the WebSocket path refuses it.
func TestSocketIOPollingCORS(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second,
		AllowedOrigins: []string{"https://app.example"}})
	base := strings.Replace(strings.Replace(g.WSURL, "ws://", "http://", 1), "/ws", "/socket.io/?EIO=4&transport=polling", 1)
	const allowed, refused = "https://app.example", "https://evil.example"
	do := func(method, url, origin, body string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Origin", origin)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	wantCORS := func(what string, resp *http.Response, origin string) {
		t.Helper()
		h := resp.Header
		if h.Get("Access-Control-Allow-Origin") != origin || h.Get("Access-Control-Allow-Credentials") != "true" ||
			!strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Errorf("%s: CORS headers %v, want the origin %s echoed, credentials true, Vary: Origin", what, h, origin)
		}
	}
	wantRefused := func(what string, resp *http.Response) {
		t.Helper()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s: %d, Access-Control-Allow-Origin %q; want 403 without CORS headers", what, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
	}

	pre := []string{"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,x-app"}
	resp, _ := do(http.MethodOptions, base, allowed, "", pre...)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("preflight: %d, want 204", resp.StatusCode)
	}
	wantCORS("preflight", resp, allowed)
	if m := resp.Header.Get("Access-Control-Allow-Methods"); m != "GET, POST, OPTIONS" {
		t.Errorf("preflight: Access-Control-Allow-Methods %q", m)
	}
	if h := resp.Header.Get("Access-Control-Allow-Headers"); h != "content-type,x-app" {
		t.Errorf("preflight: Access-Control-Allow-Headers %q, want the requested ones", h)
	}
	resp, _ = do(http.MethodOptions, base, refused, "", pre...)
	wantRefused("preflight from a refused origin", resp)

	resp, open := do(http.MethodGet, base, allowed, "")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(open, "0{") {
		t.Fatalf("handshake: %d %q", resp.StatusCode, open)
	}
	wantCORS("handshake", resp, allowed)
	sid := strings.Split(strings.Split(open, `"sid":"`)[1], `"`)[0]
	session := base + "&sid=" + sid
	resp, body := do(http.MethodPost, session, allowed, "40", "Content-Type", "text/plain;charset=UTF-8")
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("POST: %d %q", resp.StatusCode, body)
	}
	wantCORS("POST", resp, allowed)
	resp, body = do(http.MethodGet, session, allowed, "")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, `40{"sid":"`+sid) {
		t.Fatalf("GET: %d %q, want the CONNECT answer", resp.StatusCode, body)
	}
	wantCORS("GET", resp, allowed)

	resp, _ = do(http.MethodGet, base, refused, "")
	wantRefused("handshake from a refused origin", resp)
	resp, _ = do(http.MethodPost, session, refused, "42[\"x\"]", "Content-Type", "text/plain;charset=UTF-8")
	wantRefused("POST to a session from a refused origin", resp)
	resp, _ = do(http.MethodGet, session, refused, "")
	wantRefused("GET of a session from a refused origin", resp)
	// A request without Origin is not a browser's: not checked, no headers.
	resp, _ = do(http.MethodGet, base, "", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("handshake without Origin: %d, %v", resp.StatusCode, resp.Header)
	}
}
