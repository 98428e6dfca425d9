package socketio

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/socketrooms/membership/internal/testutil/nodejs"
)

// clientRun runs a scenario of offline-clients.cjs: the released client
// code (socket.io-client 4.8.4; sails.io.js 1.2.1 on socket.io-client 2.5.0)
// reads the packets given here and reports what the application saw and
// what the client sent.
func clientRun(t *testing.T, scenario string, in map[string]string) (sent []string, seen any, query string) {
	t.Helper()
	stdin, _ := json.Marshal(in)
	var out struct {
		Sent  []string `json:"sent"`
		Seen  any      `json:"seen"`
		Query string   `json:"query"`
	}
	if err := json.Unmarshal(nodejs.Run(t, stdin, "offline-clients.cjs", scenario), &out); err != nil {
		t.Fatal(err)
	}
	return out.Sent, out.Seen, out.Query
}

func mustJSON(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustDecode(t *testing.T, v Version, s string) Packet {
	t.Helper()
	p, err := Decode(v, s)
	if err != nil {
		t.Fatalf("Decode(%d, %q): %v", v, s, err)
	}
	return p
}

// TestSocketIOClient4: socket.io-client 4 connects with the CONNECT answer,
// takes its socket.id from it, gets room messages and notices as events,
// gets the refusal of an unhandled event and a Sails-shaped answer through
// its ack callbacks, and reports a refused namespace as connect_error.
func TestSocketIOClient4(t *testing.T) {
	sent, seen, _ := clientRun(t, "v5", map[string]string{
		"connect":    EncodeConnect(V5, "/", "sock-1"),
		"chat":       EncodeEvent("/", "chat", json.RawMessage(`{"text":"hi"}`)),
		"joined":     string(AppendJoined(nil, "/", "fun")),
		"left":       string(AppendLeft(nil, "/", "fun")),
		"typingAck":  string(AppendUnhandledEvent(nil, "/", 0, "typing")),
		"postAck":    string(AppendSailsResponse(nil, "/", 1, 200, http.Header{"Content-Type": {"application/json"}}, json.RawMessage(`{"message":"left fun"}`))),
		"adminError": EncodeConnectError(V5, "/admin", MessageInvalidNamespace, nil),
	})
	want := mustJSON(t, `[
		["connect", "sock-1", true],
		["chat", {"text": "hi"}],
		["membership:joined", "fun"],
		["membership:left", "fun"],
		["typing ack", {"body": {"error": "event \"typing\" is not handled: emit get, post, put, patch or delete with {url, headers, data} to send a request to the application"}, "headers": {}, "statusCode": 404}],
		["post ack", {"body": {"message": "left fun"}, "headers": {"content-type": "application/json"}, "statusCode": 200}],
		["admin connect_error", "Invalid namespace"]
	]`)
	if !reflect.DeepEqual(seen, want) {
		got, _ := json.Marshal(seen)
		t.Errorf("the application saw\n%s", got)
	}
	if len(sent) != 4 {
		t.Fatalf("client sent %q, want 4 packets", sent)
	}
	auth, err := ConnectAuth(mustDecode(t, V5, sent[0]))
	if err != nil || auth.Token != "jwt-1" {
		t.Errorf("CONNECT %q: auth %+v, %v", sent[0], auth, err)
	}
	typing := mustDecode(t, V5, sent[1])
	if name, _, _ := typing.Event(); name != "typing" || !typing.HasID || typing.ID != 0 {
		t.Errorf("emit typing: %q", sent[1])
	}
	if _, ok, _ := ParseVirtualRequest(typing); ok {
		t.Errorf("typing read as a virtual request")
	}
	req, ok, err := ParseVirtualRequest(mustDecode(t, V5, sent[2]))
	if !ok || err != nil || req.Method != "POST" || req.URL != "/leaveFunRoom" || string(req.Data) != `{"roomName":"fun"}` || req.AckID != 1 {
		t.Errorf("emit post %q: %+v, %v, %v", sent[2], req, ok, err)
	}
	if p := mustDecode(t, V5, sent[3]); p.Type != Connect || p.Namespace != "/admin" {
		t.Errorf("CONNECT to /admin: %q", sent[3])
	}
}

// TestSailsClient: sails.io.js over socket.io-client 2 sends its SDK query,
// queues io.socket.post until the protocol-4 CONNECT, sends virtual
// requests ParseVirtualRequest reads, and calls cb(body, jwr) with what
// AppendSailsResponse writes, jwr.error set for a 400.
func TestSailsClient(t *testing.T) {
	sent, seen, query := clientRun(t, "sails", map[string]string{
		"connect": EncodeConnect(V4, "/", ""),
		"chat":    EncodeEvent("/", "chat", json.RawMessage(`{"text":"hi"}`)),
		"ok":      string(AppendSailsResponse(nil, "/", 0, 200, http.Header{"Content-Type": {"application/json"}}, json.RawMessage(`{"message":"left fun"}`))),
		"bad":     string(AppendSailsResponse(nil, "/", 1, 400, nil, json.RawMessage(`{"error":"roomName is required"}`))),
	})
	want := mustJSON(t, `[
		["connect", true],
		["chat", {"text": "hi"}],
		["post cb", {"message": "left fun"}, {"statusCode": 200, "headers": {"content-type": "application/json"}, "error": null}],
		["post cb", {"error": "roomName is required"}, {"statusCode": 400, "headers": {}, "error": "Server responded with a 400 status code:\n`+"```"+`\n{\n  \"error\": \"roomName is required\"\n}\n`+"```"+`"}]
	]`)
	if !reflect.DeepEqual(seen, want) {
		got, _ := json.Marshal(seen)
		t.Errorf("the application saw\n%s", got)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	if sdk, ok := SailsSDKFromQuery(q); !ok || sdk != (SailsSDK{Version: "1.2.1", Platform: "node", Language: "javascript"}) {
		t.Errorf("query %q: %+v, %v", query, sdk, ok)
	}
	if len(sent) != 2 {
		t.Fatalf("client sent %q, want 2 packets", sent)
	}
	for i, data := range []string{`{"roomName":"fun"}`, `{}`} {
		req, ok, err := ParseVirtualRequest(mustDecode(t, V4, sent[i]))
		if !ok || err != nil || req.Method != "POST" || req.URL != "/leaveFunRoom" || string(req.Data) != data ||
			req.Headers.Get("X-App") != "a" || !req.HasAck || req.AckID != uint64(i) {
			t.Errorf("request %d %q: %+v, %v, %v", i, sent[i], req, ok, err)
		}
	}
}
