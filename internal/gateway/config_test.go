package gateway

import (
	"testing"
	"time"
)

// The default RegisterWait outlasts the longest a previous process with
// the same settings holds the id: its drain and the drain's tail (drainTail:
// handoffs under way, then late Delivers), or its lease after a crash.
func TestDefaultRegisterWaitOutlastsTheDrainsTail(t *testing.T) {
	for _, tc := range []struct {
		drain, ttl, want time.Duration
	}{
		{25 * time.Second, 10 * time.Second, 45 * time.Second}, // the tail (15 s) outlasts the TTL
		{25 * time.Second, 2 * time.Second, 45 * time.Second},
		{5 * time.Second, 30 * time.Second, 40 * time.Second}, // the TTL outlasts the tail
		{0, 2 * time.Second, 7 * time.Second},                 // no drain, no tail
	} {
		c := Config{ID: "gw", AdvertiseAddr: "127.0.0.1:1", DrainTimeout: tc.drain, LeaseTTL: tc.ttl}
		if err := c.setDefaults(); err != nil {
			t.Fatal(err)
		}
		if c.RegisterWait != tc.want {
			t.Errorf("drain %v, lease TTL %v: RegisterWait %v, want %v", tc.drain, tc.ttl, c.RegisterWait, tc.want)
		}
		if tc.drain > 0 && c.RegisterWait < tc.drain+drainTail {
			t.Errorf("drain %v: RegisterWait %v is shorter than the drain and its tail (%v)", tc.drain, c.RegisterWait, tc.drain+drainTail)
		}
	}
}
