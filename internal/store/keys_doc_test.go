package store

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// docSection returns the lines of the markdown section titled heading, up
// to the next heading of the same or a higher level.
func docSection(t *testing.T, path, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			if in {
				break
			}
			in = line == heading
			continue
		}
		if in {
			out = append(out, line)
		}
	}
	if !in {
		t.Fatalf("%s has no section %q", path, heading)
	}
	return out
}

// The keyspace table of docs/ARCHITECTURE.md lists exactly the keys this
// package writes, spelled as keys builds them.
func TestArchitectureDocKeyspace(t *testing.T) {
	want := documentedKeys()
	var got []string
	for _, line := range docSection(t, "../../docs/ARCHITECTURE.md", "## etcd keyspace") {
		if cell, ok := strings.CutPrefix(line, "| `"); ok {
			key, _, _ := strings.Cut(cell, "`")
			got = append(got, key)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("docs/ARCHITECTURE.md keyspace lists %q; the store writes %q", got, want)
	}
}

// The keyspace table of the package doc (store.go) lists the same keys.
func TestPackageDocKeyspace(t *testing.T) {
	b, err := os.ReadFile("store.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _ := strings.Cut(string(b), "\npackage store")
	var got []string
	for _, line := range strings.Split(doc, "\n") {
		if row, ok := strings.CutPrefix(line, "//\t"); ok {
			if f := strings.Fields(row); len(f) > 0 {
				got = append(got, f[0])
			}
		}
	}
	slices.Sort(got)
	if want := documentedKeys(); !slices.Equal(got, want) {
		t.Errorf("store.go's package doc lists %q; the store writes %q", got, want)
	}
}

// documentedKeys are the keys the store writes, spelled as keys builds
// them, sorted.
func documentedKeys() []string {
	k := keys{prefix: ""}
	want := []string{
		k.gateway("{gateway}"),
		k.socket("{socket}"),
		k.moveMarker("{socket}"),
		k.gwmPrefix("{gateway}") + "{socket}/" + escapeRoom("{room}"),
		k.room("{room}", "{socket}"),
		k.user("{user}", "{socket}"),
		k.gwmPrefix("{gateway}") + disconnectSegment + "{socket}",
	}
	slices.Sort(want)
	return want
}
