package socketio

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// SailsMethods are the event names sails.io.js 1.x emits a virtual request
// under: the request method in lower case (SailsSocket.prototype.request,
// `socket._raw.emit(requestCtx.method, requestCtx, ack)`); sails.io.js has
// shorthands for the first five, and request({method}) sends any of them.
var SailsMethods = []string{"get", "post", "put", "patch", "delete", "head", "options"}

// IsSailsMethod reports whether an event name is one of SailsMethods.
func IsSailsMethod(name string) bool {
	for _, m := range SailsMethods {
		if m == name {
			return true
		}
	}
	return false
}

// VirtualRequest is a Sails virtual request: the EVENT
//
//	2<ack id>["post",{"method":"post","headers":{…},"data":{…},"url":"/leaveFunRoom"}]
//
// that io.socket.post("/leaveFunRoom", {…}, cb) sends.
type VirtualRequest struct {
	// Method is the HTTP method, from the event name: "POST".
	Method string
	// URL is the request object's url as sent (sails.io.js strips trailing
	// slashes); the caller resolves it against its upstream.
	URL string
	// Headers are the request object's headers (sails.io.js merges
	// io.sails.headers in). Strings are kept; numbers and booleans become
	// their JSON text; null is dropped. They are the client's word: a
	// gateway must not let them replace the headers it sets itself
	// (X-Socket-Id above all); see the package doc.
	Headers http.Header
	// Data is the request object's data, raw JSON ({} when absent). For
	// a GET, sails.io.js passes its data argument here too (Sails reads it as
	// parameters); the caller decides how to forward it.
	Data json.RawMessage
	// HasAck and AckID: the ack the answer goes to. sails.io.js always asks
	// for one; without it there is nobody to answer.
	HasAck bool
	AckID  uint64
}

// ParseVirtualRequest reads a Sails virtual request from an EVENT packet.
// ok is false when the event is not named after a Sails method (it is not a
// virtual request; see the package doc for what happens to it). With ok
// true, err (wrapping ErrInvalidRequest) says what is wrong with the request
// object: it must be a JSON object with a string url starting with "/", an
// object of headers when present, and any JSON as data.
func ParseVirtualRequest(p Packet) (req VirtualRequest, ok bool, err error) {
	name, args, err := p.Event()
	if err != nil || !IsSailsMethod(name) {
		return VirtualRequest{}, false, nil
	}
	req = VirtualRequest{Method: strings.ToUpper(name), HasAck: p.HasID, AckID: p.ID, Data: json.RawMessage("{}"), Headers: http.Header{}}
	if len(args) == 0 || args[0][0] != '{' {
		return req, true, invalidRequest("the request must be an object {url, method, headers, data}")
	}
	var ctx struct {
		URL     json.RawMessage `json:"url"`
		Headers json.RawMessage `json:"headers"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(args[0], &ctx); err != nil {
		return req, true, invalidRequest("the request must be an object {url, method, headers, data}")
	}
	if len(ctx.URL) == 0 || ctx.URL[0] != '"' || json.Unmarshal(ctx.URL, &req.URL) != nil || !strings.HasPrefix(req.URL, "/") {
		return req, true, invalidRequest("url must be a string starting with /")
	}
	if len(ctx.Data) > 0 && string(ctx.Data) != "null" {
		req.Data = ctx.Data
	}
	if len(ctx.Headers) > 0 && string(ctx.Headers) != "null" {
		var hs map[string]json.RawMessage
		if ctx.Headers[0] != '{' || json.Unmarshal(ctx.Headers, &hs) != nil {
			return req, true, invalidRequest("headers must be an object")
		}
		for k, raw := range hs {
			switch {
			case string(raw) == "null":
			case raw[0] == '"':
				var s string
				_ = json.Unmarshal(raw, &s)
				req.Headers.Set(k, s)
			case raw[0] == '{' || raw[0] == '[':
				return req, true, invalidRequest("header " + strconv.Quote(k) + " must be a string")
			default: // number, true, false
				req.Headers.Set(k, string(raw))
			}
		}
	}
	return req, true, nil
}

// Target is what the request becomes on the upstream: the path (with its
// query) and the JSON body. For GET and HEAD, which carry no body, the
// top-level fields of an object Data are added to the query instead, the
// way Sails reads them as parameters: io.socket.get("/things", {limit: 10})
// becomes GET /things?limit=10. A string value is sent as it is, any other
// value as its JSON text; fields already in the url's query are kept and
// the data's are appended. Other methods send URL unchanged and Data as the
// body.
func (r VirtualRequest) Target() (path string, body json.RawMessage, err error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return r.URL, r.Data, nil
	}
	var fields map[string]json.RawMessage
	if len(r.Data) == 0 || r.Data[0] != '{' {
		if len(r.Data) == 0 || string(r.Data) == "null" {
			return r.URL, nil, nil
		}
		return "", nil, invalidRequest("data of a " + r.Method + " must be an object")
	}
	if err := json.Unmarshal(r.Data, &fields); err != nil {
		return "", nil, invalidRequest("data must be valid JSON")
	}
	if len(fields) == 0 {
		return r.URL, nil, nil
	}
	q := url.Values{}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		raw := fields[k]
		var s string
		if raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
			q.Add(k, s)
		} else {
			q.Add(k, string(raw))
		}
	}
	base, _, _ := strings.Cut(r.URL, "#") // a fragment never reaches a server
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + q.Encode(), nil, nil
}

func invalidRequest(reason string) error {
	return &DecodeError{Kind: ErrInvalidRequest, Reason: reason, Offset: -1}
}

// AppendSailsResponse appends the ACK that answers a virtual request, in the
// shape sails.io.js's ack handler takes (`serverResponded(responseCtx)`,
// which calls cb(responseCtx.body, new JWR(responseCtx))):
//
//	3<id>[{"body":<body>,"headers":{…},"statusCode":<status>}]
//
// body is raw JSON copied as is (null when empty); headers are written with
// their first value each. The JWR sets jwr.error for a status outside
// 200–399, so a refusal is an answer with a 4xx or 5xx status.
func AppendSailsResponse(dst []byte, nsp string, ackID uint64, status int, headers http.Header, body json.RawMessage) []byte {
	dst = appendHeader(dst, Ack, nsp)
	dst = strconv.AppendUint(dst, ackID, 10)
	dst = append(dst, `[{"body":`...)
	if len(bytes.TrimSpace(body)) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, body...)
	}
	dst = append(dst, `,"headers":{`...)
	first := true
	for _, k := range sortedKeys(headers) {
		if len(headers[k]) == 0 {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, strings.ToLower(k))
		dst = append(dst, ':')
		dst = appendJSONString(dst, headers[k][0])
	}
	dst = append(dst, `},"statusCode":`...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	return append(dst, `}]`...)
}

// SailsResponse is the decoded form of AppendSailsResponse's payload
// (responseCtx in sails.io.js).
type SailsResponse struct {
	Body       json.RawMessage   `json:"body"`
	Headers    map[string]string `json:"headers"`
	StatusCode int               `json:"statusCode"`
}

// StatusUnhandledEvent is the status of the answer to an event that is
// neither a Sails method nor handled by the server (see AppendUnhandledEvent).
const StatusUnhandledEvent = http.StatusNotFound

// AppendUnhandledEvent appends the ack answer to an EVENT the server does
// not handle (any event a client emits other than SailsMethods): a Sails
// response with StatusUnhandledEvent and a body {"error":"…"} naming the
// event and the way to reach the application. It is JWR-shaped so that a
// sails.io.js cb and a socket.io-client ack both get a readable refusal.
func AppendUnhandledEvent(dst []byte, nsp string, ackID uint64, event string) []byte {
	msg := "event " + strconv.Quote(event) + " is not handled: emit get, post, put, patch or delete with {url, headers, data} to send a request to the application"
	body := appendJSONString([]byte(`{"error":`), msg)
	body = append(body, '}')
	return AppendSailsResponse(dst, nsp, ackID, StatusUnhandledEvent, nil, body)
}

// SailsSDK is what sails.io.js says of itself in the handshake query
// (__sails_io_sdk_version, __sails_io_sdk_platform, __sails_io_sdk_language,
// added to every connection's query by sails.io.js 1.x).
type SailsSDK struct {
	Version  string // "1.2.1"
	Platform string // "browser" or "node"
	Language string // "javascript"
}

// SailsSDKFromQuery reads the sails.io.js query parameters; ok is false when
// the connection did not come from sails.io.js (no __sails_io_sdk_version).
func SailsSDKFromQuery(q url.Values) (sdk SailsSDK, ok bool) {
	sdk = SailsSDK{
		Version:  q.Get("__sails_io_sdk_version"),
		Platform: q.Get("__sails_io_sdk_platform"),
		Language: q.Get("__sails_io_sdk_language"),
	}
	return sdk, sdk.Version != ""
}

func sortedKeys(h http.Header) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
