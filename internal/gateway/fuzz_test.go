package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/socketrooms/membership/internal/store"
)

// FuzzClientFrame feeds arbitrary client frames to the frame handler: it must
// never panic, and every frame either closes the socket with a code or leaves
// only well-formed JSON frames queued for it.
func FuzzClientFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"request","id":1,"method":"POST","path":"/leaveFunRoom","body":{"roomName":"fun"}}`,
		`{"type":"request","id":"a","path":"//evil/x"}`,
		`{"type":"request","id":{},"path":"/x"}`,
		`{"type":"request"}`,
		`{"type":"hello"}`,
		`{"type":`,
		`[]`,
		`null`,
		"\xff\xfe",
	} {
		f.Add(websocket.TextMessage, []byte(seed))
	}
	f.Add(websocket.BinaryMessage, []byte(`{"type":"request","id":1,"path":"/x"}`))
	// A client that is never used: the frame handler does not touch etcd.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, Logger: zap.NewNop()})
	if err != nil {
		f.Fatal(err)
	}
	defer cli.Close()
	g, err := New(Config{ID: "fuzz", AdvertiseAddr: "127.0.0.1:1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, cli)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, typ int, data []byte) {
		// A registered-but-held client: frames queue and are never written.
		c := newClient(store.NewSocketID("fuzz", 1), nil, 64, 4, time.Second, func() bool { return true })
		code, _ := g.handleFrame(context.Background(), c, typ, data)
		c.mu.Lock()
		queued := c.queue
		c.mu.Unlock()
		if code != 0 {
			if len(queued) != 0 {
				t.Fatalf("closing with %d but queued %d frames", code, len(queued))
			}
			return
		}
		for _, q := range queued {
			if q.seq != 0 || !json.Valid(q.b) {
				t.Fatalf("queued a frame that is not JSON, or numbered: %q (seq %d)", q.b, q.seq)
			}
		}
	})
}
