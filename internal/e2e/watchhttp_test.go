package e2e

import (
	"bufio"
	"bytes"
	bin "encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/testutil"
)

// connectFrame reads one Connect streaming envelope: flags and message.
func connectFrame(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, bin.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		t.Fatal(err)
	}
	return head[0], msg
}

// WatchMembership streams over Connect with JSON through the HTTP API: the
// starting progress message arrives, and a bad filter ends the stream with
// the Connect error naming the field.
func TestWatchMembershipOverConnectJSON(t *testing.T) {
	e := testutil.StartEtcd(t)
	httpAddr := testutil.FreeAddr(t)
	startServerProcess(t, e.Endpoint, "--http-addr", httpAddr)
	url := "http://" + httpAddr + "/membership.v1.MembershipService/WatchMembership"
	post := func(body string) *http.Response {
		var b bytes.Buffer
		b.WriteByte(0)
		bin.Write(&b, bin.BigEndian, uint32(len(body)))
		b.WriteString(body)
		req, err := http.NewRequest(http.MethodPost, url, &b)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/connect+json")
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := post(`{"room":"lobby"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	flags, msg := connectFrame(t, bufio.NewReader(resp.Body))
	var m struct {
		Progress struct {
			Revision string `json:"revision"`
		} `json:"progress"`
	}
	if flags != 0 || json.Unmarshal(msg, &m) != nil || m.Progress.Revision == "" {
		t.Fatalf("first frame %d %s, want a progress message", flags, msg)
	}

	resp = post(`{"socketId":"nope"}`)
	flags, msg = connectFrame(t, bufio.NewReader(resp.Body))
	if flags&2 == 0 || !strings.Contains(string(msg), `"invalid_argument"`) || !strings.Contains(string(msg), `"field":"socket_id"`) {
		t.Fatalf("end of stream %d %s, want invalid_argument on socket_id", flags, msg)
	}
}
