// Package web holds the browser assets a gateway serves: the client library
// membership.js and a demo page that shows a socket's rooms and messages with
// the grpcurl commands that drive it.
package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"html/template"
	"net/http"
	"time"
)

var (
	//go:embed membership.js
	libraryJS []byte
	//go:embed demo.js
	demoJS []byte
	//go:embed demo.css
	demoCSS []byte
	//go:embed index.html
	indexHTML string
)

var indexTemplate = template.Must(template.New("index.html").Parse(indexHTML))

// Options configures what Register serves.
type Options struct {
	// DemoPage serves the demo page at / (with /demo.js and /demo.css).
	DemoPage bool
	// APIAddr is the membership API address the page's grpcurl commands call.
	APIAddr string
	// GRPCurlFlags are put before -d in those commands as given (shell
	// syntax), e.g. "-plaintext", or "-cacert ca.pem -H 'authorization: Bearer …'".
	GRPCurlFlags string
}

// Register adds the assets to mux: GET /membership.js always, and with
// o.DemoPage GET / (that path only), /demo.js and /demo.css. Each answers
// with an ETag and Cache-Control: no-cache, so browsers revalidate and get a
// 304 until the gateway serves a different build.
func Register(mux *http.ServeMux, o Options) {
	lib := asset("text/javascript; charset=utf-8", libraryJS)
	mux.Handle("GET /membership.js", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Module scripts are fetched in CORS mode: pages on other origins
		// (those --allowed-origins admits) can import the library only with
		// this. It is public and fetched without credentials.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		lib.ServeHTTP(w, r)
	}))
	if !o.DemoPage {
		return
	}
	var page bytes.Buffer
	if err := indexTemplate.Execute(&page, o); err != nil {
		// Only string fields go into the template and the buffer cannot
		// fail, so this is a broken template, which the package's tests catch.
		panic("web: index.html: " + err.Error())
	}
	mux.Handle("GET /{$}", asset("text/html; charset=utf-8", page.Bytes()))
	mux.Handle("GET /demo.js", asset("text/javascript; charset=utf-8", demoJS))
	mux.Handle("GET /demo.css", asset("text/css; charset=utf-8", demoCSS))
}

// pageCSP allows the page its own scripts, styles and socket, and nothing
// else: no inline script, no other origin (data: images for the empty
// favicon, which spares a request that would be a 404).
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func asset(contentType string, body []byte) http.Handler {
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", pageCSP)
		// ServeContent answers If-None-Match (304), HEAD and ranges.
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}
