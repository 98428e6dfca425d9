package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/app"
	"github.com/socketrooms/membership/internal/testutil"
)

// httpCall sends one request to the membership-server's HTTP API and returns
// the status and the body.
func httpCall(t *testing.T, method, url, contentType, body string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// httpError is the error body of both HTTP forms: the Connect error JSON
// (code is a string, details carry "type" and "debug") and the
// google.rpc.Status JSON of REST routes (code is a number, details carry
// "@type" and the detail's own fields).
type httpError struct {
	Code    json.RawMessage   `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

type errorInfo struct {
	Type     string            `json:"@type"`
	Reason   string            `json:"reason"`
	Domain   string            `json:"domain"`
	Metadata map[string]string `json:"metadata"`
}

// wantHTTPError checks an error body: connect selects the Connect form
// (code name) over the REST one (google.rpc.Status, numeric code); either way
// an ErrorInfo with the reason and, when field is set, metadata "field".
func wantHTTPError(t *testing.T, status int, body []byte, wantStatus int, connect bool, code codes.Code, reason, field string) {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("HTTP status %d, want %d: %s", status, wantStatus, body)
	}
	var e httpError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	if connect {
		want := strings.ToLower(code.String())
		if code == codes.InvalidArgument {
			want = "invalid_argument"
		}
		if string(e.Code) != `"`+want+`"` {
			t.Fatalf("Connect code %s, want %q: %s", e.Code, want, body)
		}
	} else if string(e.Code) != jsonInt(int(code)) {
		t.Fatalf("google.rpc.Status code %s, want %d: %s", e.Code, code, body)
	}
	for _, d := range e.Details {
		var info errorInfo
		if connect {
			var cd struct {
				Type  string    `json:"type"`
				Debug errorInfo `json:"debug"`
			}
			if err := json.Unmarshal(d, &cd); err != nil {
				t.Fatal(err)
			}
			if cd.Type != "google.rpc.ErrorInfo" {
				continue
			}
			info = cd.Debug
		} else {
			if err := json.Unmarshal(d, &info); err != nil {
				t.Fatal(err)
			}
			if info.Type != "type.googleapis.com/google.rpc.ErrorInfo" {
				continue
			}
		}
		if info.Reason != reason || info.Domain != "membership.v1" || (field != "" && info.Metadata["field"] != field) {
			t.Fatalf("ErrorInfo %+v, want reason %s field %q: %s", info, reason, field, body)
		}
		return
	}
	t.Fatalf("no google.rpc.ErrorInfo detail: %s", body)
}

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }

// The HTTP API is the gRPC API: a Join over Connect JSON, a Leave and a
// ListMembers over REST act on the same memberships a gRPC client sees, and
// the socket's gateway applies them.
func TestHTTPAPIJoinLeaveList(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := startGateway(t, e, "gw1", 10*time.Second)
	httpAddr := testutil.FreeAddr(t)
	api, _ := startServerProcess(t, e.Endpoint, "--http-addr", httpAddr)
	base := "http://" + httpAddr
	s := dial(t, g.WSURL)
	room := "team/a b" // "/" and " " travel percent-encoded in one path segment

	st, body := httpCall(t, http.MethodPost, base+"/membership.v1.MembershipService/Join", "application/json",
		`{"socketId":"`+s.ID+`","room":"`+room+`","waitFor":"WAIT_FOR_APPLY"}`)
	if st != http.StatusOK {
		t.Fatalf("Connect Join: %d %s", st, body)
	}
	var jr struct {
		Revision string `json:"revision"`
	}
	if err := json.Unmarshal(body, &jr); err != nil || jr.Revision == "" {
		t.Fatalf("Connect Join response %s: %v", body, err)
	}
	s.Expect("joined", room)
	if got := members(t, api, room); !hasMember(got, s.ID) {
		t.Fatalf("gRPC sees members %v after an HTTP Join", got)
	}

	st, body = httpCall(t, http.MethodGet, base+"/v1/rooms/team%2Fa%20b/members", "", "")
	if st != http.StatusOK {
		t.Fatalf("REST ListMembers: %d %s", st, body)
	}
	var lm struct {
		Members []struct {
			SocketID string `json:"socketId"`
			Gateway  string `json:"gateway"`
		} `json:"members"`
	}
	if err := json.Unmarshal(body, &lm); err != nil || len(lm.Members) != 1 || lm.Members[0].SocketID != s.ID || lm.Members[0].Gateway != "gw1" {
		t.Fatalf("REST ListMembers %s: %v", body, err)
	}

	st, body = httpCall(t, http.MethodDelete, base+"/v1/rooms/team%2Fa%20b/members/"+s.ID+"?waitFor=WAIT_FOR_APPLY", "", "")
	if st != http.StatusOK || !strings.Contains(string(body), `"wasMember":true`) {
		t.Fatalf("REST Leave: %d %s", st, body)
	}
	s.Expect("left", room)
	if got := members(t, api, room); len(got) != 0 {
		t.Fatalf("gRPC sees members %v after an HTTP Leave", got)
	}
	// The same Leave through the binary Connect codec: nothing left to leave.
	req, _ := protoMarshal(t, &membershipv1.LeaveRequest{SocketId: s.ID, Room: room})
	st, body = httpCall(t, http.MethodPost, base+"/membership.v1.MembershipService/Leave", "application/proto", string(req))
	if st != http.StatusOK {
		t.Fatalf("Connect binary Leave: %d %s", st, body)
	}
	var lr membershipv1.LeaveResponse
	if err := protoUnmarshal(body, &lr); err != nil || lr.WasMember || lr.Revision == 0 {
		t.Fatalf("Connect binary Leave response %v: %v", &lr, err)
	}

	// gRPC-Web: a length-prefixed message in, a message frame and a trailer
	// frame (flag 0x80) with grpc-status 0 out.
	msg, _ := protoMarshal(t, &membershipv1.GetSocketRequest{SocketId: s.ID})
	frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
	st, body = httpCall(t, http.MethodPost, base+"/membership.v1.MembershipService/GetSocket", "application/grpc-web+proto", string(frame))
	if st != http.StatusOK || len(body) < 5 || body[0] != 0 {
		t.Fatalf("gRPC-Web GetSocket: %d %q", st, body)
	}
	n := int(body[1])<<24 | int(body[2])<<16 | int(body[3])<<8 | int(body[4])
	var gs membershipv1.GetSocketResponse
	if len(body) < 5+n || protoUnmarshal(body[5:5+n], &gs) != nil || gs.GetSocket().GetGateway() != "gw1" {
		t.Fatalf("gRPC-Web GetSocket message: %q", body)
	}
	if trailer := body[5+n:]; len(trailer) < 5 || trailer[0] != 0x80 || !strings.Contains(strings.ToLower(string(trailer[5:])), "grpc-status: 0") {
		t.Fatalf("gRPC-Web GetSocket trailer: %q", trailer)
	}
}

// Bad input over HTTP gets the code, reason and field it gets over gRPC, on
// both transports, and a JSON body that does not decode is INVALID_ARGUMENT
// (MALFORMED_REQUEST), not INTERNAL.
func TestHTTPAPIErrors(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := startGateway(t, e, "gw1", 10*time.Second)
	httpAddr := testutil.FreeAddr(t)
	api, _ := startServerProcess(t, e.Endpoint, "--http-addr", httpAddr)
	base := "http://" + httpAddr
	s := dial(t, g.WSURL)

	// The same request over gRPC, for reference.
	_, err := api.Join(t.Context(), &membershipv1.JoinRequest{SocketId: s.ID})
	wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "room")

	st, body := httpCall(t, http.MethodPost, base+"/membership.v1.MembershipService/Join", "application/json",
		`{"socketId":"`+s.ID+`","room":""}`)
	wantHTTPError(t, st, body, http.StatusBadRequest, true, codes.InvalidArgument, "INVALID_ARGUMENT", "room")
	st, body = httpCall(t, http.MethodPost, base+"/v1/rooms/%20/members", "application/json", `{"socketId":"not-a-socket"}`)
	wantHTTPError(t, st, body, http.StatusBadRequest, false, codes.InvalidArgument, "INVALID_ARGUMENT", "socket_id")
	st, body = httpCall(t, http.MethodGet, base+"/v1/rooms/"+strings.Repeat("x", 257)+"/members", "", "")
	wantHTTPError(t, st, body, http.StatusBadRequest, false, codes.InvalidArgument, "INVALID_ARGUMENT", "room")

	for _, c := range []struct {
		name, url, ct string
		connect       bool
	}{
		{"Connect", base + "/membership.v1.MembershipService/Join", "application/json", true},
		{"REST", base + "/v1/rooms/r/members", "application/json", false},
	} {
		st, body := httpCall(t, http.MethodPost, c.url, c.ct, `{"socketId": "`+s.ID+`",`)
		t.Run("malformed JSON over "+c.name, func(t *testing.T) {
			wantHTTPError(t, st, body, http.StatusBadRequest, c.connect, codes.InvalidArgument, "MALFORMED_REQUEST", "")
		})
		// A misspelt enum value is refused, not read as the default
		// (WAIT_FOR_COMMIT); a field this schema lacks is ignored.
		st, body = httpCall(t, http.MethodPost, c.url, c.ct, `{"socketId":"`+s.ID+`","room":"r","waitFor":"WAIT_FOR_APPLIED"}`)
		t.Run("unknown enum name over "+c.name, func(t *testing.T) {
			wantHTTPError(t, st, body, http.StatusBadRequest, c.connect, codes.InvalidArgument, "MALFORMED_REQUEST", "")
			if !strings.Contains(string(body), "WAIT_FOR_APPLIED") {
				t.Errorf("the error does not name the value: %s", body)
			}
		})
		st, body = httpCall(t, http.MethodPost, c.url, c.ct, `{"socketId":"`+s.ID+`","room":"r","fieldFromANewerSchema":1}`)
		t.Run("unknown field over "+c.name, func(t *testing.T) {
			if st != http.StatusOK {
				t.Errorf("status %d, want 200: %s", st, body)
			}
		})
	}
}

// A token-protected server wants the bearer token over HTTP as over gRPC.
func TestHTTPAPIBearerToken(t *testing.T) {
	e := testutil.StartEtcd(t)
	httpAddr := testutil.FreeAddr(t)
	startServerProcess(t, e.Endpoint, "--http-addr", httpAddr, "--auth-token-file", tokenFile(t, "api-secret"))
	base := "http://" + httpAddr

	st, body := httpCall(t, http.MethodGet, base+"/v1/rooms", "", "")
	if st != http.StatusUnauthorized {
		t.Fatalf("REST without a token: %d %s", st, body)
	}
	st, body = httpCall(t, http.MethodPost, base+"/membership.v1.MembershipService/ListRooms", "application/json", `{}`,
		"Authorization", "Bearer not-it")
	if st != http.StatusUnauthorized || !strings.Contains(string(body), `"unauthenticated"`) {
		t.Fatalf("Connect with a wrong token: %d %s", st, body)
	}
	st, body = httpCall(t, http.MethodGet, base+"/v1/rooms", "", "", "Authorization", "Bearer api-secret")
	if st != http.StatusOK {
		t.Fatalf("REST with the token: %d %s", st, body)
	}
}

// Browsers at an origin named in --http-cors-origins get their preflight
// answered; others get no CORS grant.
func TestHTTPAPICORSPreflight(t *testing.T) {
	e := testutil.StartEtcd(t)
	httpAddr := testutil.FreeAddr(t)
	startServerProcess(t, e.Endpoint, "--http-addr", httpAddr, "--http-cors-origins", "https://app.example")
	preflight := func(origin string) http.Header {
		req, _ := http.NewRequest(http.MethodOptions, "http://"+httpAddr+"/membership.v1.MembershipService/Join", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type") // as browsers send it: sorted, lower case
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header
	}
	h := preflight("https://app.example")
	if h.Get("Access-Control-Allow-Origin") != "https://app.example" || !strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "authorization") {
		t.Fatalf("preflight from an allowed origin: %v", h)
	}
	if h := preflight("https://evil.example"); h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight from another origin: %v", h)
	}
}

func protoMarshal(t *testing.T, m proto.Message) ([]byte, error) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b, nil
}

func protoUnmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }

// One invalid request of each RPC gets, over Connect and over its REST route,
// the code, ErrorInfo reason and field it gets over gRPC.
func TestHTTPAPIInvalidRequestPerRPC(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := startGateway(t, e, "gw1", 10*time.Second)
	httpAddr := testutil.FreeAddr(t)
	_, _, grpcAddr := startServerProcessAt(t, e.Endpoint, "--http-addr", httpAddr)
	base := "http://" + httpAddr
	s := dial(t, g.WSURL)
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	long := strings.Repeat("x", 257) // past the 256-byte room limit
	for _, c := range []struct {
		method         string
		req, resp      proto.Message
		restVerb, path string
		restBody       string
	}{
		{"Join", &membershipv1.JoinRequest{SocketId: s.ID, Room: long}, &membershipv1.JoinResponse{},
			http.MethodPost, "/v1/rooms/" + long + "/members", `{"socketId":"` + s.ID + `"}`},
		{"Leave", &membershipv1.LeaveRequest{SocketId: s.ID, Room: long}, &membershipv1.LeaveResponse{},
			http.MethodDelete, "/v1/rooms/" + long + "/members/" + s.ID, ""},
		{"ListRooms", &membershipv1.ListRoomsRequest{PageSize: -1}, &membershipv1.ListRoomsResponse{},
			http.MethodGet, "/v1/rooms?pageSize=-1", ""},
		{"ListMembers", &membershipv1.ListMembersRequest{Room: long}, &membershipv1.ListMembersResponse{},
			http.MethodGet, "/v1/rooms/" + long + "/members", ""},
		{"GetSocket", &membershipv1.GetSocketRequest{SocketId: "not-a-socket"}, &membershipv1.GetSocketResponse{},
			http.MethodGet, "/v1/sockets/not-a-socket", ""},
		{"Broadcast", &membershipv1.BroadcastRequest{Rooms: []string{long}, Event: "e"}, &membershipv1.BroadcastResponse{},
			http.MethodPost, "/v1/broadcast", `{"rooms":["` + long + `"],"event":"e"}`},
		{"Blast", &membershipv1.BlastRequest{Event: long}, &membershipv1.BlastResponse{},
			http.MethodPost, "/v1/blast", `{"event":"` + long + `"}`},
		{"LeaveAll", &membershipv1.LeaveAllRequest{Room: long}, &membershipv1.LeaveAllResponse{},
			http.MethodPost, "/v1/rooms/" + long + ":leaveAll", ""},
		{"AddRoomMembersToRooms", &membershipv1.AddRoomMembersToRoomsRequest{SourceRoom: long, DestRooms: []string{"d"}}, &membershipv1.AddRoomMembersToRoomsResponse{},
			http.MethodPost, "/v1/rooms/" + long + ":addMembersToRooms", `{"destRooms":["d"]}`},
		{"RemoveRoomMembersFromRooms", &membershipv1.RemoveRoomMembersFromRoomsRequest{SourceRoom: long, DestRooms: []string{"d"}}, &membershipv1.RemoveRoomMembersFromRoomsResponse{},
			http.MethodPost, "/v1/rooms/" + long + ":removeMembersFromRooms", `{"destRooms":["d"]}`},
		{"Join", &membershipv1.JoinRequest{User: "u", SocketId: s.ID, Room: "r"}, &membershipv1.JoinResponse{},
			http.MethodPost, "/v1/rooms/r/members", `{"user":"u","socketId":"` + s.ID + `"}`},
		{"ListSockets", &membershipv1.ListSocketsRequest{User: long}, &membershipv1.ListSocketsResponse{},
			http.MethodGet, "/v1/users/" + long + "/sockets", ""},
		{"GetRoom", &membershipv1.GetRoomRequest{Room: long}, &membershipv1.GetRoomResponse{},
			http.MethodGet, "/v1/rooms/" + long, ""},
		{"ListGateways", &membershipv1.ListGatewaysRequest{PageSize: 1001}, &membershipv1.ListGatewaysResponse{},
			http.MethodGet, "/v1/gateways?pageSize=1001", ""},
		{"Disconnect", &membershipv1.DisconnectRequest{Room: "r", Code: 3999}, &membershipv1.DisconnectResponse{},
			http.MethodPost, "/v1/sockets:disconnect", `{"room":"r","code":3999}`},
	} {
		t.Run(c.method, func(t *testing.T) {
			full := "/membership.v1.MembershipService/" + c.method
			err := cc.Invoke(t.Context(), full, c.req, c.resp)
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("gRPC: %v, want INVALID_ARGUMENT", err)
			}
			info := wantStatus(t, err, codes.InvalidArgument, "INVALID_ARGUMENT", "")
			field := info.Metadata["field"]
			if field == "" {
				t.Fatalf("gRPC error names no field: %v", err)
			}
			js, err := protojson.Marshal(c.req)
			if err != nil {
				t.Fatal(err)
			}
			code, body := httpCall(t, http.MethodPost, base+full, "application/json", string(js))
			wantHTTPError(t, code, body, http.StatusBadRequest, true, codes.InvalidArgument, info.Reason, field)
			ct := ""
			if c.restBody != "" {
				ct = "application/json"
			}
			code, body = httpCall(t, c.restVerb, base+c.path, ct, c.restBody)
			wantHTTPError(t, code, body, http.StatusBadRequest, false, codes.InvalidArgument, info.Reason, field)
		})
	}
}

// --max-inflight-payload-bytes holds over HTTP: with room for one Broadcast,
// a second one, over REST or Connect, is refused OVERLOADED before its
// request is read while the first one's body is still coming, and the
// budget is back once the first call ends.
func TestHTTPAPIInflightPayloadBudget(t *testing.T) {
	e := testutil.StartEtcd(t)
	httpAddr, metricsAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	startServerProcess(t, e.Endpoint, "--http-addr", httpAddr, "--metrics-addr", metricsAddr, "--max-inflight-payload-bytes", "4194304")
	base := "http://" + httpAddr

	// The held call is written by hand: its headers and the first half of
	// its body now, the rest later. (Go's client buffers the headers with a
	// body's first bytes when they come at once.)
	held, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	const heldBody = `{"rooms":["r"],"event":"e"}`
	if _, err := fmt.Fprintf(held, "POST /v1/broadcast HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		httpAddr, len(heldBody), heldBody[:15]); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(held), nil)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	// A probe sent before the held call's headers arrive would take the
	// budget itself; the gauge shows when the held call holds it.
	waitFor(t, 10*time.Second, "the held Broadcast to reserve", func() bool {
		_, metrics := httpCall(t, http.MethodGet, "http://"+metricsAddr+"/metrics", "", "")
		return strings.Contains(string(metrics), "\nmembership_inflight_payload_bytes 4.194304e+06\n")
	})
	st, body := httpCall(t, http.MethodPost, base+"/v1/broadcast", "application/json", `{"rooms":["r"],"event":"e"}`)
	wantHTTPError(t, st, body, http.StatusTooManyRequests, false, codes.ResourceExhausted, "OVERLOADED", "")
	st, body = httpCall(t, http.MethodPost, base+"/membership.v1.MembershipService/Blast", "application/json", `{"event":"e"}`)
	if st != http.StatusTooManyRequests || !strings.Contains(string(body), `"resource_exhausted"`) || !strings.Contains(string(body), `"google.rpc.ErrorInfo"`) {
		t.Fatalf("Connect Blast while the budget is held: %d %s", st, body)
	}
	if _, err := io.WriteString(held, heldBody[15:]); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != http.StatusOK {
		t.Fatalf("held Broadcast: %d", code)
	}
	st, body = httpCall(t, http.MethodPost, base+"/v1/blast", "application/json", `{"event":"e"}`)
	if st != http.StatusOK {
		t.Fatalf("Blast after the held call ended: %d %s", st, body)
	}
}

// --tls-cert-file serves the HTTP API over TLS too (HTTP/2 where the client
// offers it), with the gRPC listener's certificate.
func TestHTTPAPITLS(t *testing.T) {
	e := testutil.StartEtcd(t)
	ca := testutil.NewCA(t, "cluster")
	srvCert, srvKey := ca.Issue("server")
	httpAddr := testutil.FreeAddr(t)
	cmd := exec.Command(binary(t, "membership-server"), "--grpc-addr", testutil.FreeAddr(t), "--etcd-endpoints", e.Endpoint,
		"--log-level", "error", "--metrics-addr", "", "--http-addr", httpAddr,
		"--tls-cert-file", srvCert, "--tls-key-file", srvKey)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	cfg, err := app.ClientTLSConfig(ca.File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	var resp *http.Response
	waitFor(t, 30*time.Second, "the HTTP API over TLS", func() bool {
		resp, err = client.Get("https://" + httpAddr + "/v1/rooms")
		return err == nil
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("ListRooms over HTTPS: %s %d %s", resp.Proto, resp.StatusCode, body)
	}
	if resp, err := http.Get("http://" + httpAddr + "/v1/rooms"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plaintext HTTP answered on a TLS listener")
		}
	}
}

// Without TLS the HTTP API speaks HTTP/2 to a client that starts with it
// (h2c by prior knowledge, as Connect clients for servers do) and HTTP/1.1
// to everyone else.
func TestHTTPAPIServesH2C(t *testing.T) {
	e := testutil.StartEtcd(t)
	httpAddr := testutil.FreeAddr(t)
	startServerProcess(t, e.Endpoint, "--http-addr", httpAddr)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &protocols}}
	for _, c := range []struct {
		client *http.Client
		major  int
	}{{h2c, 2}, {http.DefaultClient, 1}} {
		resp, err := c.client.Post("http://"+httpAddr+"/membership.v1.MembershipService/ListRooms", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != c.major {
			t.Fatalf("ListRooms over Connect: %s %d %s, want HTTP/%d", resp.Proto, resp.StatusCode, body, c.major)
		}
	}
}

// Calls over HTTP are counted in the gRPC server's metrics, by method and
// code, like calls over gRPC.
func TestHTTPAPICallsCountedInMetrics(t *testing.T) {
	e := testutil.StartEtcd(t)
	httpAddr, metricsAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	startServerProcess(t, e.Endpoint, "--http-addr", httpAddr, "--metrics-addr", metricsAddr)
	if st, body := httpCall(t, http.MethodGet, "http://"+httpAddr+"/v1/rooms", "", ""); st != http.StatusOK {
		t.Fatalf("ListRooms: %d %s", st, body)
	}
	if st, _ := httpCall(t, http.MethodGet, "http://"+httpAddr+"/v1/sockets/nope", "", ""); st != http.StatusBadRequest {
		t.Fatalf("GetSocket of a malformed id: %d", st)
	}
	_, metrics := httpCall(t, http.MethodGet, "http://"+metricsAddr+"/metrics", "", "")
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="ListRooms",grpc_service="membership.v1.MembershipService",grpc_type="unary"} 1`,
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="GetSocket",grpc_service="membership.v1.MembershipService",grpc_type="unary"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
