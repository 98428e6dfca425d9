package gateway

import (
	"net/http"
	"net/url"
	"strings"
)

// originChecker accepts the configured browser origins. A refused origin
// gets HTTP 403 before the upgrade, so it never has a socket.
func originChecker(allowed []string) func(*http.Request) bool {
	set := map[string]bool{}
	for _, o := range allowed {
		set[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		switch {
		case origin == "":
			return true // not a browser: nothing to protect against
		case set["*"] || set[strings.ToLower(origin)]:
			return true
		}
		u, err := url.Parse(origin)
		return err == nil && strings.EqualFold(u.Host, r.Host)
	}
}
