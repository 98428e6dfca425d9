package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/gateway"
	"github.com/socketrooms/membership/internal/stacktest"
	"github.com/socketrooms/membership/internal/testutil"
)

// Every way a socket request can go wrong ends in a response frame with a
// status, and the socket keeps working.
func TestSocketRequestsAnswerEveryFailureWithAStatus(t *testing.T) {
	e := testutil.StartEtcd(t)
	release := make(chan struct{})
	var seen sync.Map
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen.Store(r.URL.Path, r.Header.Get("X-Socket-Id"))
		switch strings.TrimPrefix(r.URL.Path, "/api") {
		case "/echo":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"method":%q,"query":%q,"body":%s}`, r.Method, r.URL.RawQuery, body)
		case "/text":
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "short and stout")
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/huge":
			io.WriteString(w, `"`+strings.Repeat("x", 2<<20)+`"`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer app.Close()
	defer close(release)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{
		ID: "gw1", LeaseTTL: 10 * time.Second, UpstreamURL: app.URL + "/api",
		UpstreamTimeout: time.Second, MaxInflight: 2,
	})
	s := dial(t, g.WSURL)
	ask := func(frame string) stacktest.Frame {
		t.Helper()
		s.Send(frame)
		return s.Expect("response", "")
	}

	f := ask(`{"type":"request","id":1,"method":"post","path":"/echo?x=1","body":{"a":[1,2]}}`)
	var echo struct {
		Method, Query string
		Body          json.RawMessage
	}
	if err := json.Unmarshal(f.Body, &echo); err != nil || f.Status != 200 || echo.Method != "POST" || echo.Query != "x=1" || string(echo.Body) != `{"a":[1,2]}` {
		t.Fatalf("echo: %+v %s", f, f.Body)
	}
	if id, _ := seen.Load("/api/echo"); id != s.ID {
		t.Fatalf("X-Socket-Id %v, want %s", id, s.ID)
	}
	if f := ask(`{"type":"request","id":2,"path":"/text"}`); f.Status != 418 || string(f.Body) != `"short and stout"` {
		t.Fatalf("text: %+v %s", f, f.Body)
	}
	if f := ask(`{"type":"request","id":3,"path":"/nothing"}`); f.Status != 404 {
		t.Fatalf("not found: %+v", f)
	}

	cases := []struct {
		name, frame string
		status      int
	}{
		{"timeout", `{"type":"request","id":4,"path":"/slow"}`, 504},
		{"response too large", `{"type":"request","id":5,"path":"/huge"}`, 502},
		{"body too large", `{"type":"request","id":6,"method":"POST","path":"/echo","body":"` + strings.Repeat("y", 70<<10) + `"}`, 413},
		{"no path", `{"type":"request","id":7}`, 400},
		{"absolute URL", `{"type":"request","id":8,"path":"http://elsewhere/x"}`, 400},
		{"scheme-relative URL", `{"type":"request","id":9,"path":"//elsewhere/x"}`, 400},
		{"bad method", `{"type":"request","id":10,"method":"BREW","path":"/echo"}`, 400},
		{"object id", `{"type":"request","id":{},"path":"/echo"}`, 400},
		{"no id", `{"type":"request","path":"/echo"}`, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if f := ask(tc.frame); f.Status != tc.status {
				t.Fatalf("status %d, want %d (%s)", f.Status, tc.status, f.Body)
			}
		})
	}

	// More than MaxInflight at once: the extra one is refused with 429.
	s.Send(`{"type":"request","id":"a","path":"/slow"}`)
	s.Send(`{"type":"request","id":"b","path":"/slow"}`)
	s.Send(`{"type":"request","id":"c","path":"/slow"}`)
	statuses := map[string]int{}
	for i := 0; i < 3; i++ {
		f := s.Expect("response", "")
		statuses[string(f.ID)] = f.Status
	}
	if statuses[`"c"`] != 429 || statuses[`"a"`] != 504 || statuses[`"b"`] != 504 {
		t.Fatalf("statuses %v", statuses)
	}
	// Still connected and served.
	if f := ask(`{"type":"request","id":11,"path":"/echo"}`); f.Status != 200 {
		t.Fatalf("after failures: %+v", f)
	}
}

func TestSocketRequestToAnUnreachableUpstreamIs502(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := stacktest.StartGatewayVia(t, e.Endpoint, gateway.Config{ID: "gw1", LeaseTTL: 10 * time.Second, UpstreamURL: "http://" + testutil.FreeAddr(t)})
	s := dial(t, g.WSURL)
	s.Send(`{"type":"request","id":1,"path":"/x"}`)
	if f := s.Expect("response", ""); f.Status != 502 {
		t.Fatalf("%+v", f)
	}
}
