// Package console is the operator console a membership-server serves at
// /console/ on its --http-addr when started with --console: plain HTML, CSS
// and ES modules embedded in the binary, with no build step. The page calls
// the membership API on the same origin over the Connect protocol (JSON,
// unary and server streaming; static/rpc.js), with the bearer token the
// operator types in, kept in the tab's memory only. It has no logic of its
// own: every figure it shows comes from an API call or the
// WatchMembership stream, and every action is an API call.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is the path the console is served under.
const Prefix = "/console/"

// CSP allows the page its own scripts, styles and API calls, nothing inline
// and no other origin: every value the page shows is placed as text, so
// nothing an API caller wrote (a room name, a user) can run as script even
// if a bug put it in markup. data: images are for the empty favicon.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// Handler serves the console's files under Prefix: GET /console/ is the
// page, /console/{file} its scripts and styles; anything else is 404. Each
// answer carries the CSP, an ETag and Cache-Control: no-cache, so a browser
// revalidates and gets a 304 until the server runs a different build.
func Handler() http.Handler {
	files := map[string]http.Handler{}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("console: " + err.Error()) // the embed directive names static
	}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok || strings.HasSuffix(p, ".test.mjs") {
			return nil
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		files[p] = asset(ct, b)
		return nil
	})
	if err != nil {
		panic("console: " + err.Error())
	}
	files[""] = files["index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		h := files[name]
		if !ok || h == nil || name == "index.html" {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Mount serves the console under Prefix (and redirects /console to it), and
// everything else with api.
func Mount(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(Prefix, Handler())
	mux.Handle("/console", http.RedirectHandler(Prefix, http.StatusMovedPermanently))
	mux.Handle("/", api)
	return mux
}

func asset(contentType string, body []byte) http.Handler {
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", CSP)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}
