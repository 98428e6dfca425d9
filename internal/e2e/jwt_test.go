package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

func signToken(t *testing.T, key *ecdsa.PrivateKey, sub string, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"sub": sub, "exp": exp.Unix(), "aud": "chat",
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A gateway started with --jwt-public-key-file gives sockets only to clients
// with a valid token, refusing the others with 401 before the upgrade, and
// records the token's subject as the socket's user: the connected frame,
// GetSocket, ListMembers and forwarded socket requests all name it.
func TestJWTOnConnect(t *testing.T) {
	key, keyFile := jwtKey(t)
	users := make(chan string, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		users <- r.Header.Get("X-Socket-User")
		w.Write([]byte(`{}`))
	}))
	defer upstream.Close()

	e := testutil.StartEtcd(t)
	api := startMembershipServer(t, e)
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, "--jwt-public-key-file", keyFile, "--jwt-audience", "chat",
		"--allowed-origins", "https://app.example", "--upstream-url", upstream.URL)

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	hour := time.Now().Add(time.Hour)
	noAud, _ := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "alice", "exp": hour.Unix()}).SignedString(key)
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey) // the public key as an HMAC secret
	if err != nil {
		t.Fatal(err)
	}
	hmac, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": hour.Unix(), "aud": "chat"}).SignedString(der)
	for name, tok := range map[string]string{
		"no token":             "",
		"garbage":              "abc.def.ghi",
		"signed by a stranger": signToken(t, other, "alice", hour),
		"expired":              signToken(t, key, "alice", time.Now().Add(-time.Hour)),
		"wrong audience":       noAud,
		"HMAC over the key":    hmac,
		"no subject":           signToken(t, key, "", hour),
	} {
		u := g.WSURL
		if tok != "" {
			u += "?token=" + url.QueryEscape(tok)
		}
		conn, resp, err := websocket.DefaultDialer.Dial(u, nil)
		if err == nil {
			conn.Close()
			t.Errorf("%s: got a socket", name)
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %v, want 401 with WWW-Authenticate", name, err)
		}
	}
	metrics := scrape(t, "http"+g.WSURL[2:len(g.WSURL)-3]+"/metrics")
	if v := metricValue(t, metrics, `gateway_auth_failures_total`); v != 7 {
		t.Errorf("gateway_auth_failures_total = %v after 7 refused tokens", v)
	}
	// A valid token from a refused origin gets no socket either.
	h := http.Header{"Origin": {"https://evil.example"}, "Authorization": {"Bearer " + signToken(t, key, "alice", hour)}}
	if conn, resp, err := websocket.DefaultDialer.Dial(g.WSURL, h); err == nil {
		conn.Close()
		t.Error("refused origin with a valid token got a socket")
	} else if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("refused origin with a valid token: %v, want 403", err)
	}

	alice := stacktest.DialWith(t, g.WSURL+"?token="+url.QueryEscape(signToken(t, key, "alice", hour)), nil)
	bob := stacktest.DialWith(t, g.WSURL, http.Header{"Authorization": {"Bearer " + signToken(t, key, "bob@example.com", hour)}})
	if alice.User != "alice" || bob.User != "bob@example.com" {
		t.Fatalf("connected frames name users %q and %q", alice.User, bob.User)
	}
	ctx := context.Background()
	got, err := api.GetSocket(ctx, &membershipv1.GetSocketRequest{SocketId: alice.ID})
	if err != nil || got.GetSocket().GetUser() != "alice" {
		t.Fatalf("GetSocket: %v %v", got, err)
	}
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketIds: []string{alice.ID, bob.ID}, Room: "lobby"}); err != nil {
		t.Fatal(err)
	}
	alice.Expect("joined", "lobby")
	bob.Expect("joined", "lobby")
	lm, err := api.ListMembers(ctx, &membershipv1.ListMembersRequest{Room: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{}
	for _, m := range lm.GetMembers() {
		byID[m.GetSocketId()] = m.GetUser()
	}
	if byID[alice.ID] != "alice" || byID[bob.ID] != "bob@example.com" || len(byID) != 2 {
		t.Fatalf("ListMembers users %v", byID)
	}
	// The app behind socket requests learns the user from the gateway; a
	// client cannot claim another one.
	bob.Send(`{"type":"request","id":1,"method":"POST","path":"/whoami","body":{}}`)
	if f := bob.Expect("response", ""); f.Status != http.StatusOK {
		t.Fatalf("request: %+v", f)
	}
	if u := <-users; u != "bob@example.com" {
		t.Fatalf("upstream saw X-Socket-User %q", u)
	}
}

// In a browser: the demo page passes the token it was opened with to
// membership.js; without one the gateway refuses the handshake and the page
// never gets a socket, with a valid one it connects as the token's user.
func TestBrowserJWT(t *testing.T) {
	secret := []byte("a secret of at least thirty-two bytes!!")
	secretFile := filepath.Join(t.TempDir(), "jwt-secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	e := testutil.StartEtcd(t)
	wsAddr := testutil.FreeAddr(t)
	startGatewayProcessAt(t, e, "web", 10*time.Second, wsAddr, "--demo-page", "--jwt-hmac-secret-file", secretFile)
	page := startBrowser(t, 60*time.Second)

	bad, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString([]byte("another secret of at least 32 bytes!!"))
	for _, tok := range []string{"", bad} {
		page.do("open the demo page without a valid token", chromedp.Navigate("http://"+wsAddr+"/?token="+url.QueryEscape(tok)))
		page.waitUntil(10*time.Second, "a refused connection being retried", func() bool {
			return strings.HasPrefix(page.text("status"), "reconnecting")
		})
		if id := page.text("socket-id"); id != "—" {
			t.Fatalf("the page got socket %q without a valid token", id)
		}
	}

	good, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	page.do("open the demo page with a valid token", chromedp.Navigate("http://"+wsAddr+"/?token="+url.QueryEscape(good)))
	page.waitUntil(10*time.Second, "a socket", func() bool { return strings.HasPrefix(page.text("socket-id"), "web.") })
	if user := page.text("user"); user != "alice" {
		t.Fatalf("the page shows user %q, want alice", user)
	}
}

// jwtKey returns a fresh ECDSA P-256 signing key and a PEM file of its
// public key, for a gateway's --jwt-public-key-file.
func jwtKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "jwt.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, keyFile
}
