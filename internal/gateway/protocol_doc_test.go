package gateway

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// protocolConsts reads protocol.go's constants: the value of every frame
// type, and the code of every close code the gateway sends (from the code
// at the start of each one's comment, checked against its value).
func protocolConsts(t *testing.T) (frameTypes []string, closeCodes []int) {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "protocol.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]int{
		"closeNormal": closeNormal, "closeGoingAway": closeGoingAway, "closeProtocolError": closeProtocolError,
		"closeUnsupportedData": closeUnsupportedData, "closeBadData": closeBadData,
		"closePolicyViolation": closePolicyViolation, "closeTooBig": closeTooBig, "closeInternal": closeInternal,
		"closeServiceRestart": closeServiceRestart, "closeTryAgainLater": closeTryAgainLater,
	}
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || len(spec.Names) != 1 {
			return true
		}
		name := spec.Names[0].Name
		switch {
		case strings.HasPrefix(name, "frame") && len(spec.Values) == 1:
			if lit, ok := spec.Values[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				v, _ := strconv.Unquote(lit.Value)
				frameTypes = append(frameTypes, v)
			}
		case strings.HasPrefix(name, "close") && name != "closeAbnormal":
			v, ok := values[name]
			if !ok {
				t.Errorf("protocol.go's close code %s is not known to this test: add it here and to the docs", name)
				return true
			}
			closeCodes = append(closeCodes, v)
		}
		return true
	})
	slices.Sort(frameTypes)
	slices.Sort(closeCodes)
	return frameTypes, closeCodes
}

// docCloseCodes returns the codes of the close-code table rows ("| 1000 |")
// of a markdown file.
func docCloseCodes(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var codes []int
	for _, m := range regexp.MustCompile(`(?m)^\| (1\d\d\d) \|`).FindAllStringSubmatch(string(b), -1) {
		c, _ := strconv.Atoi(m[1])
		codes = append(codes, c)
	}
	slices.Sort(codes)
	return codes
}

// The README's and docs/ARCHITECTURE.md's close-code tables list exactly the
// codes protocol.go says the gateway sends, and the architecture's frame
// table exactly its frame types.
func TestProtocolDocsMatchProtocolFile(t *testing.T) {
	frames, codes := protocolConsts(t)
	if len(codes) < 8 || len(frames) < 6 {
		t.Fatalf("read %v and %v from protocol.go", codes, frames)
	}
	for _, path := range []string{"../../README.md", "../../docs/ARCHITECTURE.md"} {
		if got := docCloseCodes(t, path); !slices.Equal(got, codes) {
			t.Errorf("%s lists close codes %v; protocol.go sends %v", path, got, codes)
		}
	}
	b, err := os.ReadFile("../../docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range regexp.MustCompile("(?m)^\\| (?:server|client) → (?:client|server) \\| ([^|]+) \\|").FindAllStringSubmatch(string(b), -1) {
		for _, typ := range regexp.MustCompile("`([a-z]+)`").FindAllStringSubmatch(m[1], -1) {
			got = append(got, typ[1])
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, frames) {
		t.Errorf("docs/ARCHITECTURE.md lists frame types %v; protocol.go has %v", got, frames)
	}
}
