package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/socketrooms/membership/internal/console"
)

func get(t *testing.T, h http.Handler, method, path string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Result()
}

// Mount serves the page and its files under /console/ with the CSP, and
// hands every other path to the API.
func TestMountServesConsoleAndAPI(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api "+r.URL.Path) })
	h := console.Mount(api)
	for path, ct := range map[string]string{
		"/console/":            "text/html; charset=utf-8",
		"/console/app.js":      "text/javascript; charset=utf-8",
		"/console/rpc.js":      "text/javascript; charset=utf-8",
		"/console/watch.js":    "text/javascript; charset=utf-8",
		"/console/console.css": "text/css; charset=utf-8",
	} {
		r := get(t, h, http.MethodGet, path)
		if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != ct || r.Header.Get("Content-Security-Policy") != console.CSP {
			t.Errorf("GET %s: %s, %q, CSP %q", path, r.Status, r.Header.Get("Content-Type"), r.Header.Get("Content-Security-Policy"))
		}
		if etag := r.Header.Get("ETag"); etag == "" {
			t.Errorf("GET %s: no ETag", path)
		} else if r := get(t, h, http.MethodGet, path, "If-None-Match", etag); r.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s again: %s, want 304", path, r.Status)
		}
	}
	for _, path := range []string{"/console/index.html", "/console/nope.js", "/console/static/app.js"} {
		if r := get(t, h, http.MethodGet, path); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, r.Status)
		}
	}
	if r := get(t, h, http.MethodPost, "/console/"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /console/: %s, want 405", r.Status)
	}
	if r := get(t, h, http.MethodGet, "/console"); r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "/console/" {
		t.Errorf("GET /console: %s to %q", r.Status, r.Header.Get("Location"))
	}
	r := get(t, h, http.MethodPost, "/membership.v1.MembershipService/ListRooms")
	if b, _ := io.ReadAll(r.Body); string(b) != "api /membership.v1.MembershipService/ListRooms" {
		t.Errorf("an API path got %q", b)
	}
}

// The page puts values in as text only and keeps to its CSP: no inline
// script or style, no handler attributes, no HTML built from strings, no
// storage of the token.
func TestConsolePlacesTextOnly(t *testing.T) {
	files := os.DirFS("static")
	forbidden := map[string]*regexp.Regexp{
		".js":   regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function|localStorage|sessionStorage|document\.cookie|\.setAttribute\("on`),
		".html": regexp.MustCompile(`<script(?:\s+type="module")?>|<style|\sstyle=|\son[a-z]+=|javascript:`),
		".css":  regexp.MustCompile(`@import|url\(`),
	}
	n := 0
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for ext, re := range forbidden {
			if strings.HasSuffix(p, ext) {
				b, err := fs.ReadFile(files, p)
				if err != nil {
					return err
				}
				n++
				if m := re.Find(b); m != nil {
					t.Errorf("%s contains %q", p, m)
				}
			}
		}
		return nil
	})
	if err != nil || n < 5 {
		t.Fatalf("checked %d files: %v", n, err)
	}
}
