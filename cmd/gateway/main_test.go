package main

import (
	"net"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAdvertiseAddr(t *testing.T) {
	lis := &net.TCPAddr{IP: net.IPv6zero, Port: 50061}
	for flag, want := range map[string]string{
		"":                 "[::]:50061",
		"10.1.2.3":         "10.1.2.3:50061",
		"10.1.2.3:7000":    "10.1.2.3:7000",
		"fd00:10:244::7":   "[fd00:10:244::7]:50061",
		"[fd00::7]:7000":   "[fd00::7]:7000",
		"gw-0.example":     "gw-0.example:50061",
		"gw-0.example:123": "gw-0.example:123",
		"::1":              "[::1]:50061",
		"host:port:extra":  "",
		":7000":            "",
		"10.1.2.3:":        "",
	} {
		got, err := advertiseAddr(flag, lis)
		if want == "" {
			if err == nil {
				t.Errorf("advertiseAddr(%q) = %q, want an error", flag, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("advertiseAddr(%q) = %q, %v; want %q", flag, got, err, want)
		}
	}
}
