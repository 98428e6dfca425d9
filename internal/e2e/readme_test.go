package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/socketrooms/membership/internal/testutil"
)

// The README is part of the product: its grpcurl sessions are run here with
// the pinned grpcurl against running binaries, and every flag the binaries
// have must be documented in it.

const readmePath = "../../README.md"

// A console block: each "$ command" line with the output shown under it.
type readmeCommand struct {
	line   string
	output string
}

// readmeConsoleBlocks returns the ```console blocks of the README section
// whose heading is title ("## title").
func readmeConsoleBlocks(t *testing.T, title string) [][]readmeCommand {
	t.Helper()
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\n## "+title+"\n")
	if start < 0 {
		t.Fatalf("README has no section %q", title)
	}
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var blocks [][]readmeCommand
	for _, part := range strings.Split(section, "```console\n")[1:] {
		body, _, ok := strings.Cut(part, "\n```")
		if !ok {
			t.Fatalf("unterminated console block in %q", title)
		}
		var block []readmeCommand
		for _, line := range strings.Split(body, "\n") {
			if cmd, ok := strings.CutPrefix(line, "$ "); ok {
				block = append(block, readmeCommand{line: cmd})
			} else if len(block) > 0 {
				block[len(block)-1].output += line + "\n"
			}
		}
		blocks = append(blocks, block)
	}
	if len(blocks) == 0 {
		t.Fatalf("README section %q has no console blocks", title)
	}
	return blocks
}

var (
	grpcurlOnce sync.Once
	grpcurlPath string
	grpcurlErr  error
)

// grpcurlBinary is the pinned grpcurl: $GRPCURL (make test passes the one
// in .bin/) or one built from tools/go.mod.
func grpcurlBinary(t *testing.T) string {
	t.Helper()
	grpcurlOnce.Do(func() {
		if p := os.Getenv("GRPCURL"); p != "" {
			grpcurlPath = p
			return
		}
		binary(t, "gateway") // makes binDir
		grpcurlPath = filepath.Join(binDir, "grpcurl")
		cmd := exec.Command("go", "build", "-o", grpcurlPath, "github.com/fullstorydev/grpcurl/cmd/grpcurl")
		cmd.Dir = "../../tools"
		if out, err := cmd.CombinedOutput(); err != nil {
			grpcurlErr = &buildError{out: string(out), err: err}
		}
	})
	if grpcurlErr != nil {
		t.Fatal(grpcurlErr)
	}
	return grpcurlPath
}

// runReadmeBlocks runs every grpcurl and curl command of blocks with API, S,
// TOKEN and HTTP set to the stack's values (after the block's own exports,
// which hold example values), and checks each against the output the README
// shows: an error's code and message, a JSON answer's (curl prints error
// bodies as JSON too) fields and values (revisions, socket ids and times
// differ from run to run: only their types are compared), or other text
// exactly.
func runReadmeBlocks(t *testing.T, blocks [][]readmeCommand, env map[string]string) {
	t.Helper()
	grpcurl := grpcurlBinary(t)
	ran := 0
	for _, block := range blocks {
		var exports []string
		for _, c := range block {
			if strings.HasPrefix(c.line, "export ") {
				exports = append(exports, c.line)
				continue
			}
			if !strings.HasPrefix(c.line, "grpcurl ") && !strings.HasPrefix(c.line, "curl ") {
				continue // e.g. starting a socket client
			}
			ran++
			// The session by hand names make run's address literally.
			line := strings.ReplaceAll(c.line, "127.0.0.1:50051", env["API"])
			script := "set -e\n" + strings.Join(exports, "\n") + "\n"
			for _, k := range []string{"API", "S", "TOKEN", "HTTP"} {
				script += fmt.Sprintf("export %s=%q\n", k, env[k])
			}
			cmd := exec.Command("bash", "-c", script+line)
			cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(grpcurl)+string(os.PathListSeparator)+os.Getenv("PATH"))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			got := stdout.String()
			want := c.output
			switch {
			case strings.HasPrefix(want, "ERROR:"):
				if err == nil {
					t.Errorf("%s\nsucceeded, README shows an error:\n%s", c.line, want)
					continue
				}
				for _, key := range []string{"Code:", "Message:"} {
					w := readmeLine(want, key)
					if w == "" {
						t.Errorf("%s\nthe README's error shows no %s line", c.line, key)
					}
					if w != readmeLine(stderr.String(), key) {
						t.Errorf("%s\n%s line %q, README shows %q", c.line, key, readmeLine(stderr.String(), key), w)
					}
				}
			case err != nil:
				t.Errorf("%s\nfailed: %v\n%s%s", c.line, err, got, stderr.String())
			case strings.HasPrefix(want, "{"):
				var w, g any
				if err := json.Unmarshal([]byte(want), &w); err != nil {
					t.Errorf("%s\nREADME output is not JSON: %v", c.line, err)
					continue
				}
				if err := json.Unmarshal([]byte(got), &g); err != nil {
					t.Errorf("%s\noutput is not JSON: %v\n%s", c.line, err, got)
					continue
				}
				if !reflect.DeepEqual(jsonStable(w), jsonStable(g)) {
					t.Errorf("%s\noutput\n%s\ndiffers from what the README shows (beyond revisions, socket ids and times):\n%s", c.line, got, want)
				}
			default:
				if strings.TrimSpace(got) != strings.TrimSpace(want) {
					t.Errorf("%s\noutput\n%s\nREADME shows\n%s", c.line, got, want)
				}
			}
		}
	}
	if ran == 0 {
		t.Fatal("no grpcurl command found")
	}
	t.Logf("%d README commands ran", ran)
}

func readmeLine(text, key string) string {
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, key) {
			return l
		}
	}
	return ""
}

// readmeVolatile are the fields that differ from run to run: for them only
// the type is compared.
var readmeVolatile = map[string]bool{"revision": true, "socketId": true, "connectedAt": true}

// jsonStable is a JSON value with the volatile fields' values replaced by
// their types.
func jsonStable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			if readmeVolatile[k] {
				m[k] = fmt.Sprintf("%T", x)
			} else {
				m[k] = jsonStable(x)
			}
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = jsonStable(x)
		}
		return s
	default:
		return v
	}
}

// "A session by hand": a plaintext stack without tokens, as make run starts.
func TestREADMESessionByHand(t *testing.T) {
	e := testutil.StartEtcd(t)
	g := startGatewayProcess(t, e, "gw-local", 10*time.Second)
	_, _, addr := startServerProcessAt(t, e.Endpoint)
	s := dial(t, g.WSURL)
	runReadmeBlocks(t, readmeConsoleBlocks(t, "A session by hand"), map[string]string{"API": addr, "S": s.ID})
}

// "Operating": the recipes against a membership-server that requires a token,
// with a gateway that checks JWTs: the socket is user alice's.
func TestREADMEOperatingRecipes(t *testing.T) {
	e := testutil.StartEtcd(t)
	key, keyFile := jwtKey(t)
	g := startGatewayProcess(t, e, "gw-a", 10*time.Second, "--jwt-public-key-file", keyFile)
	httpAddr := testutil.FreeAddr(t)
	_, _, addr := startServerProcessAt(t, e.Endpoint, "--auth-token-file", tokenFile(t, "readme-token"), "--http-addr", httpAddr)
	s := dial(t, g.WSURL+"?token="+signToken(t, key, "alice", time.Now().Add(time.Hour)))
	runReadmeBlocks(t, readmeConsoleBlocks(t, "Operating"), map[string]string{"API": addr, "S": s.ID, "TOKEN": "readme-token",
		"HTTP": "http://" + httpAddr})
}

// Every flag of both binaries is in the README.
func TestREADMEDocumentsEveryFlag(t *testing.T) {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, name := range []string{"membership-server", "gateway"} {
		out, err := exec.Command(binary(t, name), "-h").CombinedOutput()
		if err != nil {
			t.Fatalf("%s -h: %v\n%s", name, err, out)
		}
		flags := flagLine.FindAllStringSubmatch(string(out), -1)
		if len(flags) < 10 {
			t.Fatalf("%s -h lists %d flags:\n%s", name, len(flags), out)
		}
		for _, f := range flags {
			if !bytes.Contains(raw, []byte("`--"+f[1]+"`")) {
				t.Errorf("%s flag --%s is not in the README", name, f[1])
			}
		}
	}
}

// The Quick start's port table lists every address a binary listens on by
// default, with the flag that moves it: exactly the flags ending in -addr
// that have a default, but for the demo page's API address, which is
// dialled, not listened on.
func TestREADMEQuickStartListsEveryDefaultPort(t *testing.T) {
	raw, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	_, quick, _ := strings.Cut(string(raw), "\n## Quick start\n")
	quick, _, _ = strings.Cut(quick, "\n## ")
	row := regexp.MustCompile("(?m)^\\| (\\d+) \\| [^|]+ \\| ([a-z-]+) `--([a-z0-9-]+)` \\|$")
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(quick, -1) {
		got[m[2]+" --"+m[3]] = m[1]
	}
	def := regexp.MustCompile(`(?m)^  -([a-z0-9-]+-addr) string\n[^\n]*\(default "[^"]*:(\d+)"\)`)
	want := map[string]string{}
	for _, name := range []string{"membership-server", "gateway"} {
		out, err := exec.Command(binary(t, name), "-h").CombinedOutput()
		if err != nil {
			t.Fatalf("%s -h: %v\n%s", name, err, out)
		}
		for _, m := range def.FindAllStringSubmatch(string(out), -1) {
			if m[1] != "demo-api-addr" {
				want[name+" --"+m[1]] = m[2]
			}
		}
	}
	if len(want) < 5 || !reflect.DeepEqual(got, want) {
		t.Errorf("Quick start lists ports %v; the binaries listen by default on %v", got, want)
	}
}
