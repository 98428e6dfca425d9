package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(o Options) *httptest.Server {
	mux := http.NewServeMux()
	Register(mux, o)
	return httptest.NewServer(mux)
}

func get(t *testing.T, method, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestLibraryIsServedWithTypeAndValidators(t *testing.T) {
	srv := serve(Options{})
	defer srv.Close()
	resp, body := get(t, "GET", srv.URL+"/membership.js")
	if resp.StatusCode != 200 || body != string(libraryJS) {
		t.Fatalf("GET /membership.js: %d, %d bytes", resp.StatusCode, len(body))
	}
	for k, want := range map[string]string{
		"Content-Type":                "text/javascript; charset=utf-8",
		"Cache-Control":               "no-cache",
		"X-Content-Type-Options":      "nosniff",
		"Access-Control-Allow-Origin": "*",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	etag := resp.Header.Get("ETag")
	if !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(etag) {
		t.Fatalf("ETag %q", etag)
	}
	if resp, body := get(t, "GET", srv.URL+"/membership.js", "If-None-Match", etag); resp.StatusCode != http.StatusNotModified || body != "" {
		t.Errorf("revalidation: %d with %d bytes, want 304 and none", resp.StatusCode, len(body))
	}
	if resp, _ := get(t, "GET", srv.URL+"/membership.js", "If-None-Match", `"stale"`); resp.StatusCode != 200 {
		t.Errorf("stale ETag: %d, want 200", resp.StatusCode)
	}
	if resp, body := get(t, "HEAD", srv.URL+"/membership.js"); resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: %d with %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := get(t, "POST", srv.URL+"/membership.js"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

func TestDemoPageOnlyWhenAsked(t *testing.T) {
	srv := serve(Options{})
	defer srv.Close()
	for _, path := range []string{"/", "/demo.js", "/demo.css", "/index.html"} {
		if resp, _ := get(t, "GET", srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without the demo page: %d, want 404", path, resp.StatusCode)
		}
	}
}

func TestDemoPage(t *testing.T) {
	srv := serve(Options{DemoPage: true, APIAddr: "10.0.0.7:50051", GRPCurlFlags: "-plaintext"})
	defer srv.Close()
	resp, body := get(t, "GET", srv.URL+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`<meta name="membership-api-addr" content="10.0.0.7:50051">`,
		`<meta name="membership-grpcurl-flags" content="-plaintext">`,
		`<script type="module" src="/demo.js">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	for path, typ := range map[string]string{"/demo.js": "text/javascript; charset=utf-8", "/demo.css": "text/css; charset=utf-8"} {
		if resp, _ := get(t, "GET", srv.URL+path); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != typ {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	// Only / itself is the page: anything else under it is unknown.
	for _, path := range []string{"/index.html", "/nope", "/demo.js/x"} {
		if resp, _ := get(t, "GET", srv.URL+path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// The operator's strings are attribute text in the page, never markup.
func TestDemoPageEscapesItsSettings(t *testing.T) {
	srv := serve(Options{DemoPage: true, APIAddr: `x"><script>alert(1)</script>`, GRPCurlFlags: `-H 'a: "b"' <i>`})
	defer srv.Close()
	_, body := get(t, "GET", srv.URL+"/")
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "<i>") {
		t.Fatalf("settings went into the page as markup:\n%s", body)
	}
	if !strings.Contains(body, `content="x&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"`) {
		t.Errorf("escaped address missing:\n%s", body)
	}
}

// Every element demo.js looks up exists in the page.
func TestDemoScriptFindsItsElements(t *testing.T) {
	ids := regexp.MustCompile(`\$\("([a-z-]+)"\)`).FindAllStringSubmatch(string(demoJS), -1)
	if len(ids) < 10 {
		t.Fatalf("found only %d element lookups in demo.js", len(ids))
	}
	for _, m := range ids {
		if !strings.Contains(indexHTML, `id="`+m[1]+`"`) {
			t.Errorf("demo.js uses #%s, which index.html lacks", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`data-copy="([a-z-]+)"`).FindAllStringSubmatch(indexHTML, -1) {
		if !strings.Contains(indexHTML, `id="`+m[1]+`"`) {
			t.Errorf("copy button for missing #%s", m[1])
		}
	}
}
