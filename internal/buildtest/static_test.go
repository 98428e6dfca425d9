// Package buildtest checks how the project's binaries are built for the
// container image.
package buildtest

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// The image's build step produces static binaries: no dynamic loader, no
// shared libraries, so they run on a base image without libc.
func TestImageBuildIsStatic(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ELF check on Linux only")
	}
	out := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "build-static.sh"), out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-static.sh: %v\n%s", err, b)
	}
	for _, name := range []string{"membership-server", "gateway"} {
		f, err := elf.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s asks for a dynamic loader", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s links %v", name, libs)
		}
		f.Close()
		if b, err := exec.Command(filepath.Join(out, name), "--help").CombinedOutput(); err != nil {
			t.Errorf("%s --help: %v\n%s", name, err, b)
		}
	}
}
