package service

import (
	"context"
	"testing"

	"github.com/socketrooms/membership/internal/store"
)

// TestSocketsFromRequestAllocs keeps reading a Join's or Leave's one socket
// to the one allocation of its result: error values and field names are
// built only for a request that needs them.
func TestSocketsFromRequestAllocs(t *testing.T) {
	id := store.NewSocketID("gateway-1", 0x694d7c3a1b2f0e11).String()
	ctx := context.Background()
	n := testing.AllocsPerRun(100, func() {
		if _, err := socketsFromRequest(ctx, id, nil, 64); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("%v allocations to read one socket id, want 1", n)
	}
}
