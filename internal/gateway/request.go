package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
)

func (c *client) respond(id json.RawMessage, status int, body json.RawMessage) {
	c.enqueue(responseFrame(id, status, body))
}

// handleRequest validates a request frame and forwards it in the background.
// The goroutine belongs to the socket: serveWS cancels and waits for it.
func (g *Gateway) handleRequest(ctx context.Context, c *client, data []byte) {
	var r requestFrame
	if err := json.Unmarshal(data, &r); err != nil {
		c.respond(nil, http.StatusBadRequest, errorBody("malformed request frame"))
		return
	}
	if len(r.ID) == 0 || r.ID[0] == '{' || r.ID[0] == '[' {
		c.respond(nil, http.StatusBadRequest, errorBody("id must be a string or a number"))
		return
	}
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	r.Method = strings.ToUpper(r.Method)
	if !allowedMethods[r.Method] {
		c.respond(r.ID, http.StatusBadRequest, errorBody("unsupported method"))
		return
	}
	target, err := g.upstreamURL(r.Path)
	if err != nil {
		c.respond(r.ID, http.StatusBadRequest, errorBody(err.Error()))
		return
	}
	if target == nil {
		c.respond(r.ID, http.StatusNotImplemented, errorBody("socket requests are not configured on this gateway"))
		return
	}
	if int64(len(r.Body)) > g.cfg.MaxRequestBody {
		c.respond(r.ID, http.StatusRequestEntityTooLarge, errorBody("request body too large"))
		return
	}
	if c.inflight == nil { // only the reader goroutine gets here
		c.inflight = make(chan struct{}, c.maxInflight)
	}
	select {
	case c.inflight <- struct{}{}:
	default:
		c.respond(r.ID, http.StatusTooManyRequests, errorBody("too many requests in flight"))
		return
	}
	c.requests.Add(1)
	go func() {
		defer func() { <-c.inflight; c.requests.Done() }()
		status, body := g.forward(ctx, c.id, c.user, r.Method, target, r.Body)
		c.respond(r.ID, status, body)
	}()
}

// upstreamURL resolves a request path against the upstream; nil without one.
func (g *Gateway) upstreamURL(path string) (*url.URL, error) {
	ref, err := url.Parse(path)
	if err != nil || !strings.HasPrefix(path, "/") || ref.Scheme != "" || ref.Host != "" || strings.HasPrefix(path, "//") {
		return nil, errors.New("path must be an absolute path such as /things?x=1")
	}
	if g.upstream == nil {
		return nil, nil
	}
	u := *g.upstream
	u.Path = strings.TrimSuffix(u.Path, "/") + ref.Path
	u.RawPath = ""
	u.RawQuery = ref.RawQuery
	return &u, nil
}

// forward sends one socket request upstream on behalf of socket (and user,
// "" without authentication) and returns the status and JSON body to answer.
func (g *Gateway) forward(ctx context.Context, socket, user, method string, target *url.URL, body json.RawMessage) (int, json.RawMessage) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.UpstreamTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target.String(), bytes.NewReader(body))
	if err != nil {
		return http.StatusBadRequest, errorBody("cannot build the request")
	}
	req.Header.Set("X-Socket-Id", socket)
	if user != "" {
		req.Header.Set("X-Socket-User", user)
	}
	req.Header.Set("Accept", "application/json")
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := g.httpClient.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return http.StatusGatewayTimeout, errorBody("upstream did not answer in time")
		}
		g.log.Warn("socket request failed", "socket", socket, "err", err)
		return http.StatusBadGateway, errorBody("upstream unreachable")
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxResponseBody+1))
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return http.StatusGatewayTimeout, errorBody("upstream did not answer in time")
	case err != nil:
		return http.StatusBadGateway, errorBody("reading the upstream response failed")
	case int64(len(raw)) > g.cfg.MaxResponseBody:
		return http.StatusBadGateway, errorBody("upstream response too large")
	}
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return resp.StatusCode, nil
	case json.Valid(raw):
		return resp.StatusCode, raw
	default:
		// Not JSON (text, HTML): hand it over as a JSON string.
		s, _ := json.Marshal(string(raw))
		return resp.StatusCode, s
	}
}
