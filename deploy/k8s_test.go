// Package deploy tests the Kubernetes manifests in k8s/: every kustomization
// renders, every object decodes strictly into its Kubernetes API type, and the
// manifests agree with the binaries they run (flags, environment variables,
// ports, probes, mounted files) and with each other (selectors, references).
//
// It is a module of its own so that the Kubernetes libraries stay out of the
// production module's dependencies.
package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The kustomizations rendered, and what each may refer to without rendering
// it: the base documents that operators create the tokens Secret themselves.
var kustomizations = []struct {
	dir             string
	externalSecrets []string
}{
	{dir: "k8s/base", externalSecrets: []string{"socketrooms-tokens"}},
	{dir: "k8s/overlays/dev"},
	// The base with components/tls, whose Secret is the operator's too.
	{dir: "testdata/tls", externalSecrets: []string{"socketrooms-tokens", "socketrooms-tls", "socketrooms-gateway-tls"}},
}

// newTyped maps each apiVersion/kind the manifests may use to its Go type.
// Anything else is an error: a kind missing here is one no check looks at.
var newTyped = map[string]func() any{
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                              func() any { return &corev1.Secret{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"v1/Namespace":                           func() any { return &corev1.Namespace{} },
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                    func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return &networkingv1.NetworkPolicy{} },
}

// decodeStrict decodes one object (YAML or JSON) into its API type, refusing
// unknown and duplicate fields, which the API server would otherwise drop
// or pick one of without a word.
func decodeStrict(doc []byte) (any, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	mk, ok := newTyped[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("no Go type known for %s %s", tm.APIVersion, tm.Kind)
	}
	obj := mk()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// render builds the kustomization in dir the way kubectl apply -k does and
// returns each object's YAML.
func render(dir string) ([][]byte, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		docs = append(docs, y)
	}
	return docs, nil
}

// rendering is one kustomization's objects, decoded.
type rendering struct {
	dir             string
	externalSecrets []string
	objects         []any
}

func renderAndDecode(t *testing.T, dir string, externalSecrets []string) *rendering {
	t.Helper()
	docs, err := render(dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	if len(docs) == 0 {
		t.Fatalf("%s renders no objects", dir)
	}
	r := &rendering{dir: dir, externalSecrets: externalSecrets}
	for _, d := range docs {
		obj, err := decodeStrict(d)
		if err != nil {
			t.Errorf("%s: %v\n%s", dir, err, d)
			continue
		}
		r.objects = append(r.objects, obj)
	}
	return r
}

func TestManifests(t *testing.T) {
	bins := binaries(t)
	for _, k := range kustomizations {
		t.Run(filepath.Base(k.dir), func(t *testing.T) {
			r := renderAndDecode(t, k.dir, k.externalSecrets)
			for _, p := range check(r, bins) {
				t.Error(p)
			}
		})
	}
}

// TestBase pins what the base promises production: an etcd quorum of three
// members spread over nodes, and three API replicas.
func TestBase(t *testing.T) {
	r := renderAndDecode(t, "k8s/base", nil)
	var sts *appsv1.StatefulSet
	var dep *appsv1.Deployment
	for _, o := range r.objects {
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			if o.Name == "etcd" {
				sts = o
			}
		case *appsv1.Deployment:
			if o.Name == "membership-server" {
				dep = o
			}
		}
	}
	if sts == nil || dep == nil {
		t.Fatal("base renders no StatefulSet etcd or no Deployment membership-server")
	}
	if n := replicas(sts.Spec.Replicas); n != 3 {
		t.Errorf("etcd has %d replicas, want 3", n)
	}
	if n := replicas(dep.Spec.Replicas); n != 3 {
		t.Errorf("membership-server has %d replicas, want 3", n)
	}
	aa := sts.Spec.Template.Spec.Affinity
	if aa == nil || aa.PodAntiAffinity == nil || !slices.ContainsFunc(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution,
		func(t corev1.PodAffinityTerm) bool { return t.TopologyKey == "kubernetes.io/hostname" }) {
		t.Error("etcd members are not required to run on different nodes")
	}
}

// TestDevOverlay: the dev overlay runs the image `make image` builds, in a
// namespace of its own, and renders every Secret it refers to.
func TestDevOverlay(t *testing.T) {
	r := renderAndDecode(t, "k8s/overlays/dev", nil)
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`docker build -t (\S+) `).FindSubmatch(makefile)
	if m == nil {
		t.Fatal("no `docker build -t IMAGE` in ../Makefile")
	}
	want := string(m[1])
	seen := 0
	for _, pt := range podTemplates(r) {
		if pt.Namespace != "socketrooms-dev" {
			t.Errorf("%s is in namespace %q, want socketrooms-dev", pt.id, pt.Namespace)
		}
		for _, c := range pt.Spec.Containers {
			if strings.HasPrefix(c.Image, imageRepo+":") || c.Image == imageRepo {
				seen++
				if c.Image != want {
					t.Errorf("%s container %s runs %s, want %s (make image)", pt.id, c.Name, c.Image, want)
				}
			}
		}
	}
	if seen == 0 {
		t.Errorf("no container runs %s", want)
	}
}

// TestStrictDecodeRefuses proves the strict decoding above can fail: a
// rendered Deployment with an unknown container field, a duplicate field and
// an unknown kind are all refused, while the untouched Deployment is not.
func TestStrictDecodeRefuses(t *testing.T) {
	docs, err := render("k8s/base")
	if err != nil {
		t.Fatal(err)
	}
	var dep []byte
	for _, d := range docs {
		if o, err := decodeStrict(d); err == nil {
			if o, ok := o.(*appsv1.Deployment); ok && o.Name == "membership-server" {
				dep = d
			}
		}
	}
	if dep == nil {
		t.Fatal("no Deployment membership-server in the base decodes")
	}

	var m map[string]any
	if err := yaml.Unmarshal(dep, &m); err != nil {
		t.Fatal(err)
	}
	c := m["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	c["bogusField"] = "x"
	bogus, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(bogus); err == nil || !strings.Contains(err.Error(), "bogusField") {
		t.Errorf("an unknown container field decoded: err = %v", err)
	}

	dup := bytes.Replace(dep, []byte("\nspec:\n"), []byte("\nspec:\n  replicas: 2\n  replicas: 3\n"), 1)
	if _, err := decodeStrict(dup); err == nil {
		t.Error("a duplicate field decoded")
	}

	daemonSet := bytes.Replace(dep, []byte("kind: Deployment\n"), []byte("kind: DaemonSet\n"), 1)
	if _, err := decodeStrict(daemonSet); err == nil {
		t.Error("a kind without a Go type decoded")
	}
}

// binary is what a binary's -h says about it.
type binary struct {
	name      string
	envPrefix string            // e.g. MEMBERSHIP_
	flags     map[string]string // flag name → its usage text
}

var (
	binsOnce sync.Once
	bins     map[string]*binary
	binsErr  error
)

// binaries builds the root module's binaries (and a lister of etcd's flags)
// and reads their flags, once per test binary.
func binaries(t *testing.T) map[string]*binary {
	t.Helper()
	binsOnce.Do(func() { bins, binsErr = buildBinaries() })
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return bins
}

func buildBinaries() (map[string]*binary, error) {
	dir, err := os.MkdirTemp("", "deploy-test-bin")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/membership-server", "./cmd/gateway")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	out := map[string]*binary{}
	for _, name := range []string{"membership-server", "gateway"} {
		help, err := exec.Command(filepath.Join(dir, name), "-h").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s -h: %v\n%s", name, err, help)
		}
		b, err := parseHelp(name, help)
		if err != nil {
			return nil, err
		}
		out[name] = b
	}
	etcd, err := etcdFlags(root, dir)
	if err != nil {
		return nil, err
	}
	out["etcd"] = etcd
	return out, nil
}

// parseHelp reads Go's flag.PrintDefaults format: "  -name type" on one line,
// its usage indented below, after a line naming the environment prefix.
func parseHelp(name string, help []byte) (*binary, error) {
	b := &binary{name: name, flags: map[string]string{}}
	if m := regexp.MustCompile(`set as ([A-Z]+_)FLAG_NAME`).FindSubmatch(help); m != nil {
		b.envPrefix = string(m[1])
	} else {
		return nil, fmt.Errorf("%s -h names no environment prefix:\n%s", name, help)
	}
	flagLine := regexp.MustCompile(`^  -([a-z0-9][a-z0-9-]*)`)
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(help))
	for sc.Scan() {
		if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
			last = m[1]
			b.flags[last] = ""
		} else if last != "" && strings.HasPrefix(sc.Text(), "    \t") {
			b.flags[last] += strings.TrimSpace(sc.Text()) + " "
		}
	}
	if len(b.flags) < 5 {
		return nil, fmt.Errorf("%s -h lists %d flags; the format is not what this test reads:\n%s", name, len(b.flags), help)
	}
	return b, nil
}

// etcdFlags lists the flags of the etcd server release the root module
// embeds, which is the release the etcd image runs (checked in checkEtcd).
// etcd's own main package needs modules the root module does not list, so a
// small lister is built in the root module (a file added through -overlay,
// nothing written to the tree) from embed.Config.AddFlags, which defines all
// of them but the few that etcdmain adds.
func etcdFlags(root, dir string) (*binary, error) {
	const lister = `package main

import (
	"flag"
	"fmt"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	embed.NewConfig().AddFlags(fs)
	fs.VisitAll(func(f *flag.Flag) { fmt.Println(f.Name) })
}
`
	src := filepath.Join(dir, "etcdflags.go")
	if err := os.WriteFile(src, []byte(lister), 0o644); err != nil {
		return nil, err
	}
	overlay := filepath.Join(dir, "overlay.json")
	virtual := filepath.Join(root, "internal", "deploytest-etcdflags", "main.go")
	if err := os.WriteFile(overlay, fmt.Appendf(nil, `{"Replace":{%q:%q}}`, virtual, src), 0o644); err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "etcdflags")
	build := exec.Command("go", "build", "-overlay", overlay, "-o", bin, "./internal/deploytest-etcdflags")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the etcd flag lister: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		return nil, fmt.Errorf("etcd flag lister: %v", err)
	}
	b := &binary{name: "etcd", flags: map[string]string{}}
	for _, f := range strings.Fields(string(out)) {
		b.flags[f] = ""
	}
	// Defined in etcdmain/config.go (newConfig), not in embed.
	for _, f := range []string{"config-file", "discovery-fallback", "initial-cluster-state", "v2-deprecation", "version"} {
		b.flags[f] = ""
	}
	if _, ok := b.flags["initial-cluster"]; !ok {
		return nil, fmt.Errorf("etcd flag lister lists no --initial-cluster: %s", out)
	}
	return b, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
