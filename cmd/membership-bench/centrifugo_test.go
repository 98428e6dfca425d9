package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCentrifugoPieces checks the peer scenario's Centrifugo side against a
// real node: the generated config is accepted, a client connects with an
// HMAC-signed token, is subscribed on the server side through the gRPC API,
// receives one publication, and is unsubscribed. It needs the Centrifugo
// binary that `make bench BENCH_ARGS="-scenario peer"` builds into .bin/ and
// is skipped without it, so that `make test` does not build Centrifugo.
func TestCentrifugoPieces(t *testing.T) {
	bin, err := filepath.Abs("../../.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "centrifugo")); err != nil {
		t.Skip("no .bin/centrifugo (make bench BENCH_ARGS=\"-scenario peer\" builds it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := startCentrifugo(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.stop()
	s, err := c.dial(ctx, "u1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	frames := make(chan string, 16)
	go s.read(func(b []byte) { frames <- string(b) })
	ch := centrifugoNamespace + ":one"
	if err := c.subscribe(ctx, ch, s.user, s.client); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := c.publish(ctx, ch, []byte(`{"t":42}`)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	var got []string
	for !strings.Contains(strings.Join(got, ""), `"t":42`) {
		select {
		case f := <-frames:
			got = append(got, f)
		case <-ctx.Done():
			t.Fatalf("no publication; frames: %q", got)
		}
	}
	if err := c.unsubscribe(ctx, ch, s.user, s.client); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	// A channel outside any namespace is refused, as an error of the call.
	if err := c.subscribe(ctx, "nons:one", s.user, s.client); err == nil {
		t.Fatal("subscribe to an unknown namespace: no error")
	}
}
