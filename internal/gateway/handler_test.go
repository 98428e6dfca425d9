package gateway

import (
	"net/http"
	"net/http/httptest"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The gateway's HTTP routes, without etcd: a gateway that never registered
// still serves its static routes and refuses sockets.
func TestHandlerRoutes(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, demo := range []bool{false, true} {
		g, err := New(Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", DemoPage: demo, DemoAPIAddr: "127.0.0.1:50051"}, cli)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(g.Handler())
		page := http.StatusNotFound
		if demo {
			page = http.StatusOK
		}
		for path, want := range map[string]int{
			"/membership.js": http.StatusOK,
			"/":              page,
			"/demo.js":       page,
			"/nope":          http.StatusNotFound,
			"/healthz":       http.StatusServiceUnavailable, // not registered
			"/ws":            http.StatusServiceUnavailable,
			"/metrics":       http.StatusOK,
		} {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("demo page %v: GET %s: %d, want %d", demo, path, resp.StatusCode, want)
			}
		}
		srv.Close()
	}
}

// With MetricsElsewhere, /metrics leaves the public handler for MetricsHandler.
func TestMetricsElsewhere(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	g, err := New(Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", MetricsElsewhere: true}, cli)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		h       http.Handler
		metrics int
	}{{"Handler", g.Handler(), http.StatusNotFound}, {"MetricsHandler", g.MetricsHandler(), http.StatusOK}} {
		srv := httptest.NewServer(tc.h)
		for path, want := range map[string]int{"/metrics": tc.metrics, "/healthz": http.StatusServiceUnavailable} {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s: GET %s: %d, want %d", tc.name, path, resp.StatusCode, want)
			}
		}
		srv.Close()
	}
}
