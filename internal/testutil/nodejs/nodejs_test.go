package nodejs

import (
	"encoding/json"
	"testing"
)

// TestPinnedParsers: the installed clients are the pinned ones, and each
// bundles the socket.io-parser of its protocol revision.
func TestPinnedParsers(t *testing.T) {
	var info map[string]struct {
		Parser   string `json:"parser"`
		Protocol int    `json:"protocol"`
		Client   string `json:"client"`
	}
	if err := json.Unmarshal(Run(t, nil, "parser.cjs", "info"), &info); err != nil {
		t.Fatal(err)
	}
	if v := info["v5"]; v.Client != "4.8.4" || v.Protocol != 5 {
		t.Errorf("socket.io-client %s with parser protocol %d, want 4.8.4 and 5", v.Client, v.Protocol)
	}
	if v := info["v4"]; v.Client != "2.5.0" || v.Protocol != 4 {
		t.Errorf("socket.io-client-v2 %s with parser protocol %d, want 2.5.0 and 4", v.Client, v.Protocol)
	}
}
