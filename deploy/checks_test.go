package deploy

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// imageRepo is the image `make image` builds (Dockerfile), before any tag.
const imageRepo = "socketrooms"

// servedHTTP lists, per binary, the HTTP paths each listener flag serves:
// cmd/membership-server/main.go (the metrics mux) and the gateway's Handler
// in internal/gateway/gateway.go.
var servedHTTP = map[string]map[string][]string{
	"membership-server": {"metrics-addr": {"/metrics", "/healthz"}},
	"gateway":           {"ws-addr": {"/ws", "/healthz", "/metrics"}},
	"etcd":              {"listen-metrics-urls": {"/metrics", "/health", "/livez", "/readyz"}},
}

// grpcFlag is the flag of each binary's gRPC listener, which serves
// grpc.health.v1 without a token.
var grpcFlag = map[string]string{"membership-server": "grpc-addr", "gateway": "grpc-addr"}

// Stand-ins for downward-API values, so that arguments built from them can
// be checked: a pod IP, and a pod name as long as Kubernetes makes them.
const podIP = "10.1.2.3"

func podNameFor(pt podTemplate) string {
	switch pt.kind {
	case "StatefulSet":
		return pt.owner + "-0"
	default: // Deployment: <name>-<pod-template-hash>-<5 random>, cut to 63
		n := pt.owner + "-7d9f8b6c5d-x2x4z"
		if len(n) > 63 {
			n = n[:63]
		}
		return n
	}
}

// podTemplate is a workload's pod template with where it came from.
type podTemplate struct {
	*corev1.PodTemplateSpec
	id, kind, owner string
	replicas        int32
	claims          []corev1.PersistentVolumeClaim
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

func podTemplates(r *rendering) []podTemplate {
	var out []podTemplate
	for _, o := range r.objects {
		switch o := o.(type) {
		case *appsv1.Deployment:
			o.Spec.Template.Namespace = o.Namespace
			out = append(out, podTemplate{&o.Spec.Template, "Deployment " + o.Name, "Deployment", o.Name, replicas(o.Spec.Replicas), nil})
		case *appsv1.StatefulSet:
			o.Spec.Template.Namespace = o.Namespace
			out = append(out, podTemplate{&o.Spec.Template, "StatefulSet " + o.Name, "StatefulSet", o.Name, replicas(o.Spec.Replicas), o.Spec.VolumeClaimTemplates})
		}
	}
	return out
}

// checker collects the problems of one rendering.
type checker struct {
	r        *rendering
	bins     map[string]*binary
	pods     []podTemplate
	problems []string
	// etcd's transaction limits as each etcd pod runs with them, and as each
	// of our containers sizes its transactions (compared in checkTxnLimits).
	etcdLimits []txnLimits
	ourLimits  []txnLimits
}

// txnLimits are the values of etcd's --max-request-bytes and --max-txn-ops
// (ours: --etcd-max-request-bytes, --etcd-max-txn-ops), defaults filled in.
type txnLimits struct {
	id                string
	requestBytes, ops string
}

// etcd's defaults of --max-request-bytes and --max-txn-ops, which our
// flags' defaults repeat.
const etcdDefaultRequestBytes, etcdDefaultTxnOps = "1572864", "128"

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// checkTxnLimits: our binaries size every transaction to etcd's limits,
// which a client cannot read from etcd, so they must be told the values the
// etcd StatefulSet runs with; a larger value makes etcd refuse transactions,
// a smaller one only costs throughput but is still a mistake.
func (c *checker) checkTxnLimits() {
	for _, o := range c.ourLimits {
		for _, e := range c.etcdLimits {
			if o.requestBytes != e.requestBytes {
				c.errorf("%s: --etcd-max-request-bytes=%s, but %s runs with --max-request-bytes=%s", o.id, o.requestBytes, e.id, e.requestBytes)
			}
			if o.ops != e.ops {
				c.errorf("%s: --etcd-max-txn-ops=%s, but %s runs with --max-txn-ops=%s", o.id, o.ops, e.id, e.ops)
			}
		}
	}
}

func (c *checker) errorf(format string, args ...any) {
	c.problems = append(c.problems, c.r.dir+": "+fmt.Sprintf(format, args...))
}

// check returns every way the rendering disagrees with the binaries or with
// itself; none is what TestManifests wants.
func check(r *rendering, bins map[string]*binary) []string {
	c := &checker{r: r, bins: bins, pods: podTemplates(r)}
	if len(c.pods) == 0 {
		c.errorf("no workloads")
	}
	for _, pt := range c.pods {
		c.checkPod(pt)
	}
	for _, o := range r.objects {
		switch o := o.(type) {
		case *corev1.Service:
			c.checkService(o)
		case *networkingv1.NetworkPolicy:
			c.checkNetworkPolicy(o)
		case *policyv1.PodDisruptionBudget:
			if len(c.selected(o.Namespace, o.Spec.Selector)) == 0 {
				c.errorf("PodDisruptionBudget %s selects no pods", o.Name)
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			c.checkHPA(o)
		}
	}
	c.checkTxnLimits()
	return c.problems
}

// named is what every API object's ObjectMeta provides.
type named interface {
	GetName() string
	GetNamespace() string
}

// find returns the rendered object of type T named name in namespace ns.
func find[T named](r *rendering, ns, name string) (T, bool) {
	for _, o := range r.objects {
		if t, ok := o.(T); ok && t.GetName() == name && t.GetNamespace() == ns {
			return t, true
		}
	}
	var zero T
	return zero, false
}

// selected returns the pod templates in ns that sel matches (none for an
// empty selector, which would match everything by accident).
func (c *checker) selected(ns string, sel *metav1.LabelSelector) []podTemplate {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return nil
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.errorf("selector %v: %v", sel, err)
		return nil
	}
	var out []podTemplate
	for _, pt := range c.pods {
		if pt.Namespace == ns && s.Matches(labels.Set(pt.Labels)) {
			out = append(out, pt)
		}
	}
	return out
}

// declaresPort reports whether some container of pt declares port (by name
// or number).
func declaresPort(pt podTemplate, port intstr.IntOrString) bool {
	for _, ctr := range pt.Spec.Containers {
		if containerPort(ctr, port) != 0 {
			return true
		}
	}
	return false
}

// containerPort resolves port against ctr's declared ports; 0 if undeclared.
func containerPort(ctr corev1.Container, port intstr.IntOrString) int32 {
	for _, p := range ctr.Ports {
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
			return p.ContainerPort
		}
	}
	return 0
}

func (c *checker) checkService(s *corev1.Service) {
	pods := c.selected(s.Namespace, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	if len(pods) == 0 {
		c.errorf("Service %s selects no pods", s.Name)
	}
	for _, p := range s.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		for _, pt := range pods {
			if !declaresPort(pt, target) {
				c.errorf("Service %s port %s targets %s, which %s does not declare", s.Name, p.Name, target.String(), pt.id)
			}
		}
	}
}

func (c *checker) checkNetworkPolicy(np *networkingv1.NetworkPolicy) {
	pods := c.selected(np.Namespace, &np.Spec.PodSelector)
	if len(pods) == 0 {
		c.errorf("NetworkPolicy %s selects no pods", np.Name)
	}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil {
				continue
			}
			for _, pt := range pods {
				if !declaresPort(pt, *p.Port) {
					c.errorf("NetworkPolicy %s opens port %s, which %s does not declare", np.Name, p.Port.String(), pt.id)
				}
			}
		}
		for _, peer := range rule.From {
			if peer.PodSelector == nil {
				continue
			}
			// A podSelector alone is this namespace; with an empty namespace
			// selector it is any namespace, of which this one is checked. With
			// labelled namespaces the pods are elsewhere.
			if peer.NamespaceSelector != nil && (len(peer.NamespaceSelector.MatchLabels) > 0 || len(peer.NamespaceSelector.MatchExpressions) > 0) {
				continue
			}
			if len(c.selected(np.Namespace, peer.PodSelector)) == 0 {
				c.errorf("NetworkPolicy %s admits pods %v, which no workload here runs", np.Name, peer.PodSelector.MatchLabels)
			}
		}
	}
}

func (c *checker) checkHPA(h *autoscalingv2.HorizontalPodAutoscaler) {
	ref := h.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
		c.errorf("HorizontalPodAutoscaler %s scales a %s %s; only Deployments are checked", h.Name, ref.APIVersion, ref.Kind)
		return
	}
	d, ok := find[*appsv1.Deployment](c.r, h.Namespace, ref.Name)
	if !ok {
		c.errorf("HorizontalPodAutoscaler %s scales Deployment %s, which is not rendered", h.Name, ref.Name)
		return
	}
	lo := replicas(h.Spec.MinReplicas)
	if n := replicas(d.Spec.Replicas); n < lo || n > h.Spec.MaxReplicas {
		c.errorf("Deployment %s has %d replicas, outside its autoscaler's %d..%d", d.Name, n, lo, h.Spec.MaxReplicas)
	}
	for _, m := range h.Spec.Metrics {
		if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil || m.Resource.Target.Type != autoscalingv2.UtilizationMetricType {
			continue
		}
		// Utilization is relative to the request: without one the autoscaler
		// cannot compute it and does nothing.
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if _, ok := ctr.Resources.Requests[m.Resource.Name]; !ok {
				c.errorf("HorizontalPodAutoscaler %s scales on %s, but container %s requests none", h.Name, m.Resource.Name, ctr.Name)
			}
		}
	}
}

func (c *checker) checkPod(pt podTemplate) {
	spec := &pt.Spec
	if len(c.selected(pt.Namespace, &metav1.LabelSelector{MatchLabels: pt.Labels})) == 0 {
		c.errorf("%s has no labels", pt.id)
	}
	for _, ctr := range spec.Containers {
		c.checkSecurity(pt, ctr)
		c.checkResources(pt, ctr)
		env := c.envValues(pt, ctr)
		c.checkVarRefs(pt, ctr, env)
		c.checkMounts(pt, ctr)
		for _, pr := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe, ctr.StartupProbe} {
			if pr != nil {
				c.checkProbePort(pt, ctr, pr)
			}
		}
		switch {
		case ctr.Image == imageRepo || strings.HasPrefix(ctr.Image, imageRepo+":") || strings.HasPrefix(ctr.Image, imageRepo+"@"):
			c.checkOurs(pt, ctr, env)
		case len(ctr.Command) > 0 && path.Base(ctr.Command[0]) == "etcd":
			c.checkEtcd(pt, ctr, env)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		c.errorf("%s mounts a service account token; nothing here calls the Kubernetes API", pt.id)
	}
}

// checkSecurity: every container runs as a non-root user, on a read-only
// root filesystem, without privilege escalation or capabilities, under the
// runtime's seccomp profile.
func (c *checker) checkSecurity(pt podTemplate, ctr corev1.Container) {
	psc := pt.Spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	sc := ctr.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	id := pt.id + " container " + ctr.Name
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil {
		nonRoot = psc.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		c.errorf("%s: runAsNonRoot is not true", id)
	}
	user := sc.RunAsUser
	if user == nil {
		user = psc.RunAsUser
	}
	if user != nil && *user == 0 {
		c.errorf("%s: runs as user 0", id)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		c.errorf("%s: readOnlyRootFilesystem is not true", id)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		c.errorf("%s: allowPrivilegeEscalation is not false", id)
	}
	if sc.Privileged != nil && *sc.Privileged {
		c.errorf("%s: privileged", id)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		c.errorf("%s: capabilities are not exactly drop ALL", id)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		c.errorf("%s: seccompProfile is not RuntimeDefault", id)
	}
}

func (c *checker) checkResources(pt podTemplate, ctr corev1.Container) {
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := ctr.Resources.Requests[r]; !ok {
			c.errorf("%s container %s requests no %s", pt.id, ctr.Name, r)
		}
	}
	if _, ok := ctr.Resources.Limits[corev1.ResourceMemory]; !ok {
		c.errorf("%s container %s has no memory limit", pt.id, ctr.Name)
	}
}

// envValues resolves a container's environment as far as the rendering
// allows: literal values, ConfigMap and Secret keys (which must exist), and
// the downward API's pod name and IP as stand-ins. Every variable is declared
// one by one (no envFrom), so this test sees them all.
func (c *checker) envValues(pt podTemplate, ctr corev1.Container) map[string]string {
	if len(ctr.EnvFrom) > 0 {
		c.errorf("%s container %s uses envFrom; name each variable so its flag can be checked", pt.id, ctr.Name)
	}
	env := map[string]string{}
	for _, e := range ctr.Env {
		if _, dup := env[e.Name]; dup {
			c.errorf("%s container %s sets %s twice", pt.id, ctr.Name, e.Name)
		}
		v := e.Value
		switch vf := e.ValueFrom; {
		case vf == nil:
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			cm, ok := find[*corev1.ConfigMap](c.r, pt.Namespace, ref.Name)
			if !ok {
				c.errorf("%s container %s: %s reads ConfigMap %s, which is not rendered", pt.id, ctr.Name, e.Name, ref.Name)
			} else if val, ok := cm.Data[ref.Key]; !ok {
				c.errorf("%s container %s: %s reads key %s, which ConfigMap %s lacks", pt.id, ctr.Name, e.Name, ref.Key, ref.Name)
			} else {
				v = val
			}
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			if s, ok := find[*corev1.Secret](c.r, pt.Namespace, ref.Name); ok {
				if _, ok := s.Data[ref.Key]; !ok && s.StringData[ref.Key] == "" {
					c.errorf("%s container %s: %s reads key %s, which Secret %s lacks", pt.id, ctr.Name, e.Name, ref.Key, ref.Name)
				}
				v = "secret"
			} else if !slices.Contains(c.r.externalSecrets, ref.Name) {
				c.errorf("%s container %s: %s reads Secret %s, which is not rendered", pt.id, ctr.Name, e.Name, ref.Name)
			}
		case vf.FieldRef != nil:
			switch vf.FieldRef.FieldPath {
			case "metadata.name":
				v = podNameFor(pt)
			case "status.podIP":
				v = podIP
			case "metadata.namespace":
				v = pt.Namespace
			default:
				v = "field:" + vf.FieldRef.FieldPath
			}
		case vf.ResourceFieldRef != nil:
			v = "1"
		}
		env[e.Name] = v
	}
	return env
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkVarRefs: Kubernetes leaves $(NAME) as it is when the container has no
// variable NAME, so a typo would reach the binary as literal text.
func (c *checker) checkVarRefs(pt podTemplate, ctr corev1.Container, env map[string]string) {
	for _, a := range slices.Concat(ctr.Command, ctr.Args) {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if _, ok := env[m[1]]; !ok {
				c.errorf("%s container %s: %q refers to $(%s), which the container does not define", pt.id, ctr.Name, a, m[1])
			}
		}
	}
}

func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// checkMounts: mounted volumes exist, Secrets and ConfigMaps they come from
// are rendered (or documented as created by the operator) with the keys
// listed, and the files are readable by the container's user.
func (c *checker) checkMounts(pt podTemplate, ctr corev1.Container) {
	for _, m := range ctr.VolumeMounts {
		i := slices.IndexFunc(pt.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			if !slices.ContainsFunc(pt.claims, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name }) {
				c.errorf("%s container %s mounts volume %s, which the pod does not have", pt.id, ctr.Name, m.Name)
			}
			continue
		}
		v := pt.Spec.Volumes[i]
		var keys []string
		var items []corev1.KeyToPath
		var mode *int32
		switch {
		case v.Secret != nil:
			items, mode = v.Secret.Items, v.Secret.DefaultMode
			if s, ok := find[*corev1.Secret](c.r, pt.Namespace, v.Secret.SecretName); ok {
				keys = sortedKeys(s.Data)
				for k := range s.StringData {
					keys = append(keys, k)
				}
			} else if !slices.Contains(c.r.externalSecrets, v.Secret.SecretName) {
				c.errorf("%s volume %s: Secret %s is not rendered", pt.id, v.Name, v.Secret.SecretName)
				continue
			} else {
				keys = nil // unknown: created by the operator
			}
		case v.ConfigMap != nil:
			items, mode = v.ConfigMap.Items, v.ConfigMap.DefaultMode
			cm, ok := find[*corev1.ConfigMap](c.r, pt.Namespace, v.ConfigMap.Name)
			if !ok {
				c.errorf("%s volume %s: ConfigMap %s is not rendered", pt.id, v.Name, v.ConfigMap.Name)
				continue
			}
			keys = sortedKeys(cm.Data)
		default:
			continue
		}
		for _, it := range items {
			if keys != nil && !slices.Contains(keys, it.Key) {
				c.errorf("%s volume %s lists key %s, which its source lacks (has %v)", pt.id, v.Name, it.Key, keys)
			}
			itemMode := mode
			if it.Mode != nil {
				itemMode = it.Mode
			}
			c.checkReadable(pt, ctr, v.Name+"/"+it.Path, itemMode)
		}
		if len(items) == 0 {
			c.checkReadable(pt, ctr, v.Name, mode)
		}
	}
}

func (c *checker) checkReadable(pt podTemplate, ctr corev1.Container, file string, mode *int32) {
	perm := int32(0o644) // Kubernetes' default for Secret and ConfigMap files
	if mode != nil {
		perm = *mode
	}
	// Files belong to root, and to the pod's fsGroup when it has one.
	fsGroup := pt.Spec.SecurityContext != nil && pt.Spec.SecurityContext.FSGroup != nil
	if perm&0o004 == 0 && !(fsGroup && perm&0o040 != 0) {
		c.errorf("%s container %s cannot read %s (mode %#o, fsGroup set: %v)", pt.id, ctr.Name, file, perm, fsGroup)
	}
}

// checkProbePort: a probe's port is one the container declares.
func (c *checker) checkProbePort(pt podTemplate, ctr corev1.Container, pr *corev1.Probe) {
	var port intstr.IntOrString
	switch {
	case pr.HTTPGet != nil:
		port = pr.HTTPGet.Port
	case pr.TCPSocket != nil:
		port = pr.TCPSocket.Port
	case pr.GRPC != nil:
		port = intstr.FromInt32(pr.GRPC.Port)
	default:
		return
	}
	if containerPort(ctr, port) == 0 {
		c.errorf("%s container %s probes port %s, which it does not declare", pt.id, ctr.Name, port.String())
	}
}

// args parses --name=value arguments. The binaries' flag package would also
// take "--name value" and "-name", but one form keeps this parse exact.
func (c *checker) args(pt podTemplate, ctr corev1.Container, b *binary) map[string]string {
	out := map[string]string{}
	for _, a := range ctr.Args {
		name, val, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			c.errorf("%s container %s: argument %q is not --flag=value", pt.id, ctr.Name, a)
			continue
		}
		if _, known := b.flags[name]; !known {
			c.errorf("%s container %s: %s has no flag --%s", pt.id, ctr.Name, b.name, name)
		}
		if _, dup := out[name]; dup {
			c.errorf("%s container %s: --%s given twice", pt.id, ctr.Name, name)
		}
		out[name] = val
	}
	return out
}

// checkOurs checks a container of our image against the binary it runs.
func (c *checker) checkOurs(pt podTemplate, ctr corev1.Container, env map[string]string) {
	id := pt.id + " container " + ctr.Name
	if len(ctr.Command) != 1 {
		c.errorf("%s: command must name the binary (the image's default is membership-server)", id)
		return
	}
	name := path.Base(ctr.Command[0])
	b, ok := c.bins[name]
	if !ok || b.envPrefix == "" {
		c.errorf("%s runs %s, which the image does not ship", id, ctr.Command[0])
		return
	}
	if want, err := imagePath(name); err != nil {
		c.errorf("%s: %v", id, err)
	} else if ctr.Command[0] != want {
		c.errorf("%s runs %s; the Dockerfile puts the binary at %s", id, ctr.Command[0], want)
	}

	// Effective flag values: the command line wins over the environment,
	// as app.ParseFlags does.
	flags := c.args(pt, ctr, b)
	for k, v := range flags {
		flags[k] = expand(v, env)
	}
	for _, e := range ctr.Env {
		var other *binary
		for _, ob := range c.bins {
			if ob.envPrefix != "" && ob != b && strings.HasPrefix(e.Name, ob.envPrefix) {
				other = ob
			}
		}
		if other != nil {
			c.errorf("%s: %s is %s's variable, not %s's", id, e.Name, other.name, b.name)
			continue
		}
		if !strings.HasPrefix(e.Name, b.envPrefix) {
			continue
		}
		flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(e.Name, b.envPrefix), "_", "-"))
		if _, known := b.flags[flag]; !known {
			c.errorf("%s: %s names no flag of %s (--%s)", id, e.Name, b.name, flag)
			continue
		}
		if _, set := flags[flag]; set {
			c.errorf("%s: --%s is both an argument and %s; the argument wins", id, flag, e.Name)
			continue
		}
		flags[flag] = env[e.Name]
	}

	if _, ok := b.flags["etcd-max-txn-ops"]; ok {
		c.ourLimits = append(c.ourLimits, txnLimits{id: id,
			requestBytes: orDefault(flags["etcd-max-request-bytes"], etcdDefaultRequestBytes),
			ops:          orDefault(flags["etcd-max-txn-ops"], etcdDefaultTxnOps)})
	}

	// Listeners: a port named N is what --N-addr listens on, on every
	// interface (the defaults are loopback addresses, unreachable from
	// outside the pod).
	listen := map[string]int32{} // flag → port
	for _, p := range ctr.Ports {
		flag := p.Name + "-addr"
		if _, known := b.flags[flag]; !known {
			c.errorf("%s: port %s has no flag --%s to match", id, p.Name, flag)
			continue
		}
		v, set := flags[flag]
		if !set {
			c.errorf("%s: port %s is declared, but --%s is left at its default", id, p.Name, flag)
			continue
		}
		host, port, err := net.SplitHostPort(v)
		if err != nil {
			c.errorf("%s: --%s=%s: %v", id, flag, v, err)
			continue
		}
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
			c.errorf("%s: --%s=%s listens on loopback only", id, flag, v)
		}
		if port != strconv.Itoa(int(p.ContainerPort)) {
			c.errorf("%s: port %s is %d, but --%s=%s", id, p.Name, p.ContainerPort, flag, v)
		}
		listen[flag] = p.ContainerPort
	}
	if f := grpcFlag[name]; listen[f] == 0 {
		c.errorf("%s: no port is declared for the gRPC listener --%s", id, f)
	}

	// Probes: gRPC health on the gRPC listener, HTTP on a path the listener
	// on that port serves.
	for _, pr := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe, ctr.StartupProbe} {
		switch {
		case pr == nil:
		case pr.GRPC != nil:
			if pr.GRPC.Port != listen[grpcFlag[name]] {
				c.errorf("%s: gRPC probe on port %d, not the gRPC listener --%s", id, pr.GRPC.Port, grpcFlag[name])
			}
		case pr.HTTPGet != nil:
			port := containerPort(ctr, pr.HTTPGet.Port)
			served := false
			for flag, paths := range servedHTTP[name] {
				served = served || (listen[flag] == port && port != 0 && slices.Contains(paths, pr.HTTPGet.Path))
			}
			if !served {
				c.errorf("%s: HTTP probe %s on port %s, which %s does not serve there", id, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), name)
			}
		}
	}
	if ctr.ReadinessProbe == nil || ctr.LivenessProbe == nil {
		c.errorf("%s: needs a readiness and a liveness probe", id)
	}

	// Files named by flags (tokens, certificates) lie on a mounted volume.
	for flag, v := range flags {
		if strings.HasSuffix(flag, "-file") && v != "" {
			c.checkFileMounted(pt, ctr, flag, v)
		}
	}

	// etcd: both binaries need an explicit endpoint list of real members
	// (membership-server starts an embedded etcd without one).
	if _, has := b.flags["etcd-endpoints"]; has {
		c.checkEtcdEndpoints(pt, id, flags["etcd-endpoints"])
	}

	// The pod IP alone (the gateway adds its gRPC listener's port, with
	// brackets for IPv6) or with that port.
	if v, set := flags["advertise-addr"]; set && v != podIP {
		_, port, err := net.SplitHostPort(v)
		if err != nil || port != strconv.Itoa(int(listen[grpcFlag[name]])) {
			c.errorf("%s: --advertise-addr=%s is not the gRPC listener's port %d", id, v, listen[grpcFlag[name]])
		}
		if !strings.HasPrefix(v, podIP+":") {
			c.errorf("%s: --advertise-addr=%s is not the pod IP (status.podIP)", id, v)
		}
	}
	if v, set := flags["gateway-id"]; set {
		// The rule is in the flag's help: "[A-Za-z0-9_-]{1,64}".
		rule := regexp.MustCompile(`\[[^\]]+\]\{\d+,\d+\}`).FindString(b.flags["gateway-id"])
		if rule == "" {
			c.errorf("%s: --gateway-id's help states no rule to check it against", id)
		} else if !regexp.MustCompile("^" + rule + "$").MatchString(v) {
			c.errorf("%s: --gateway-id=%s (for pod names like it) breaks the rule %s", id, v, rule)
		}
	}
}

// imagePath is where the Dockerfile puts a binary: COPY --from=build ... DEST.
func imagePath(name string) (string, error) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(df), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "COPY" || !strings.HasPrefix(f[1], "--from=") {
			continue
		}
		dest := f[len(f)-1]
		for _, src := range f[2 : len(f)-1] {
			if path.Base(src) == name {
				if strings.HasSuffix(dest, "/") {
					return dest + name, nil
				}
				return dest, nil
			}
		}
	}
	return "", fmt.Errorf("the Dockerfile copies no %s into the image", name)
}

func (c *checker) checkFileMounted(pt podTemplate, ctr corev1.Container, flag, file string) {
	for _, m := range ctr.VolumeMounts {
		dir := strings.TrimSuffix(m.MountPath, "/") + "/"
		if !strings.HasPrefix(file, dir) {
			continue
		}
		rel := strings.TrimPrefix(file, dir)
		i := slices.IndexFunc(pt.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			return // reported by checkMounts
		}
		v := pt.Spec.Volumes[i]
		var items []corev1.KeyToPath
		var keys []string
		switch {
		case v.Secret != nil:
			items = v.Secret.Items
			if s, ok := find[*corev1.Secret](c.r, pt.Namespace, v.Secret.SecretName); ok {
				keys = sortedKeys(s.Data)
			}
		case v.ConfigMap != nil:
			items = v.ConfigMap.Items
			if cm, ok := find[*corev1.ConfigMap](c.r, pt.Namespace, v.ConfigMap.Name); ok {
				keys = sortedKeys(cm.Data)
			}
		default:
			return
		}
		if len(items) > 0 {
			if !slices.ContainsFunc(items, func(it corev1.KeyToPath) bool { return it.Path == rel }) {
				c.errorf("%s container %s: --%s=%s, but volume %s holds no file %s", pt.id, ctr.Name, flag, file, v.Name, rel)
			}
		} else if keys != nil && !slices.Contains(keys, rel) {
			c.errorf("%s container %s: --%s=%s, but volume %s holds no file %s", pt.id, ctr.Name, flag, file, v.Name, rel)
		}
		return
	}
	c.errorf("%s container %s: --%s=%s is on no mounted volume", pt.id, ctr.Name, flag, file)
}

// checkEtcdEndpoints: each endpoint is an etcd member by its stable name
// (<statefulset>-<i>.<headless service>) or a Service, on a port that exists.
func (c *checker) checkEtcdEndpoints(pt podTemplate, id, list string) {
	if strings.TrimSpace(list) == "" {
		c.errorf("%s: no --etcd-endpoints", id)
		return
	}
	for _, ep := range strings.Split(list, ",") {
		hostport := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			if u.Scheme != "http" && u.Scheme != "https" {
				c.errorf("%s: etcd endpoint %s: scheme %s", id, ep, u.Scheme)
			}
			hostport = u.Host
		}
		host, port, err := net.SplitHostPort(hostport)
		if err != nil {
			c.errorf("%s: etcd endpoint %s: %v", id, ep, err)
			continue
		}
		portNum, _ := strconv.Atoi(port)
		member, svcName, isMember := strings.Cut(host, ".")
		if !isMember {
			svc, ok := find[*corev1.Service](c.r, pt.Namespace, host)
			if !ok || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == portNum }) {
				c.errorf("%s: etcd endpoint %s is no Service port here", id, ep)
			}
			continue
		}
		found := false
		for _, o := range c.r.objects {
			sts, ok := o.(*appsv1.StatefulSet)
			if !ok || sts.Namespace != pt.Namespace || sts.Spec.ServiceName != svcName {
				continue
			}
			ord, err := strconv.Atoi(strings.TrimPrefix(member, sts.Name+"-"))
			if err != nil || !strings.HasPrefix(member, sts.Name+"-") || ord < 0 || ord >= int(replicas(sts.Spec.Replicas)) {
				continue
			}
			tmpl := podTemplate{PodTemplateSpec: &sts.Spec.Template}
			found = declaresPort(tmpl, intstr.FromInt(portNum))
		}
		if !found {
			c.errorf("%s: etcd endpoint %s is no member of a StatefulSet here", id, ep)
		}
	}
}

// checkEtcd checks an etcd member's flags against etcd's, and its cluster
// configuration against the StatefulSet and Services that carry it.
func (c *checker) checkEtcd(pt podTemplate, ctr corev1.Container, env map[string]string) {
	id := pt.id + " container " + ctr.Name
	b := c.bins["etcd"]
	args := c.args(pt, ctr, b)
	c.etcdLimits = append(c.etcdLimits, txnLimits{id: id,
		requestBytes: orDefault(args["max-request-bytes"], etcdDefaultRequestBytes),
		ops:          orDefault(args["max-txn-ops"], etcdDefaultTxnOps)})
	for _, e := range ctr.Env {
		if strings.HasPrefix(e.Name, "ETCD_") {
			c.errorf("%s: %s: set etcd's flags as arguments, where this test checks them", id, e.Name)
		}
	}

	// The image is the etcd release the root module embeds and tests with.
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		c.errorf("%v", err)
		return
	}
	m := regexp.MustCompile(`go\.etcd\.io/etcd/server/v3 (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		c.errorf("../go.mod requires no go.etcd.io/etcd/server/v3")
	} else if !strings.HasSuffix(ctr.Image, ":"+string(m[1])) {
		c.errorf("%s runs %s, not the etcd %s of ../go.mod", id, ctr.Image, m[1])
	}

	if pt.kind != "StatefulSet" {
		c.errorf("%s: etcd runs in a StatefulSet (stable names and volumes)", id)
		return
	}
	sts, _ := find[*appsv1.StatefulSet](c.r, pt.Namespace, pt.owner)
	svc, ok := find[*corev1.Service](c.r, pt.Namespace, sts.Spec.ServiceName)
	switch {
	case !ok:
		c.errorf("%s: serviceName %s is not rendered", pt.id, sts.Spec.ServiceName)
	case svc.Spec.ClusterIP != corev1.ClusterIPNone:
		c.errorf("Service %s (the StatefulSet's serviceName) is not headless", svc.Name)
	case !svc.Spec.PublishNotReadyAddresses:
		c.errorf("Service %s does not publish unready members: they cannot find each other to become ready", svc.Name)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		c.errorf("%s starts members one by one: the first is never ready without a quorum", pt.id)
	}

	portOf := func(flag string) string {
		u, err := url.Parse(args[flag])
		if err != nil || u.Port() == "" {
			c.errorf("%s: --%s=%s has no port", id, flag, args[flag])
			return ""
		}
		n, _ := strconv.Atoi(u.Port())
		if containerPort(ctr, intstr.FromInt(n)) == 0 {
			c.errorf("%s: --%s=%s, a port the container does not declare", id, flag, args[flag])
		}
		return u.Port()
	}
	peer, client, metrics := portOf("listen-peer-urls"), portOf("listen-client-urls"), portOf("listen-metrics-urls")

	name := expand(args["name"], env)
	if name != podNameFor(pt) {
		c.errorf("%s: --name=%s is not the pod name", id, args["name"])
	}
	self := fmt.Sprintf("http://%s.%s:", name, sts.Spec.ServiceName)
	if v := expand(args["initial-advertise-peer-urls"], env); v != self+peer {
		c.errorf("%s: --initial-advertise-peer-urls=%s, want %s", id, args["initial-advertise-peer-urls"], self+peer)
	}
	if v := expand(args["advertise-client-urls"], env); v != self+client {
		c.errorf("%s: --advertise-client-urls=%s, want %s", id, args["advertise-client-urls"], self+client)
	}
	var members []string
	for _, m := range strings.Split(args["initial-cluster"], ",") {
		n, u, _ := strings.Cut(m, "=")
		if want := fmt.Sprintf("http://%s.%s:%s", n, sts.Spec.ServiceName, peer); u != want {
			c.errorf("%s: --initial-cluster member %s at %s, want %s", id, n, u, want)
		}
		members = append(members, n)
	}
	var want []string
	for i := range replicas(sts.Spec.Replicas) {
		want = append(want, fmt.Sprintf("%s-%d", sts.Name, i))
	}
	if !slices.Equal(members, want) {
		c.errorf("%s: --initial-cluster names %v; the StatefulSet's pods are %v", id, members, want)
	}

	// Health probes on the metrics listener.
	for _, pr := range []*corev1.Probe{ctr.ReadinessProbe, ctr.LivenessProbe, ctr.StartupProbe} {
		if pr == nil || pr.HTTPGet == nil {
			continue
		}
		if strconv.Itoa(int(containerPort(ctr, pr.HTTPGet.Port))) != metrics || !slices.Contains(servedHTTP["etcd"]["listen-metrics-urls"], pr.HTTPGet.Path) {
			c.errorf("%s: probe %s on port %s is not etcd's metrics listener", id, pr.HTTPGet.Path, pr.HTTPGet.Port.String())
		}
	}
	if ctr.ReadinessProbe == nil || ctr.LivenessProbe == nil {
		c.errorf("%s: needs a readiness and a liveness probe", id)
	}

	// The data directory is on the claim, and the backend quota fits in it.
	var claim *corev1.PersistentVolumeClaim
	for _, vm := range ctr.VolumeMounts {
		if strings.HasPrefix(args["data-dir"], strings.TrimSuffix(vm.MountPath, "/")+"/") {
			for i := range sts.Spec.VolumeClaimTemplates {
				if sts.Spec.VolumeClaimTemplates[i].Name == vm.Name {
					claim = &sts.Spec.VolumeClaimTemplates[i]
				}
			}
		}
	}
	if claim == nil {
		c.errorf("%s: --data-dir=%s is not on a volume claim", id, args["data-dir"])
		return
	}
	quota, err := strconv.ParseInt(args["quota-backend-bytes"], 10, 64)
	if err != nil || quota <= 0 {
		c.errorf("%s: --quota-backend-bytes=%s", id, args["quota-backend-bytes"])
		return
	}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	// The WAL and snapshots need room beside the database.
	if quota > size.Value()/2 {
		c.errorf("%s: --quota-backend-bytes=%d is more than half the %s volume", id, quota, size.String())
	}
	if args["auto-compaction-retention"] == "" {
		c.errorf("%s: no --auto-compaction-retention: history grows until the quota is hit", id)
	}
	// etcd maps its whole database: a memory limit under the quota gets the
	// members OOM-killed, all together, as the database grows.
	if mem, ok := ctr.Resources.Limits[corev1.ResourceMemory]; ok && mem.Value() <= quota {
		c.errorf("%s: memory limit %s is not above --quota-backend-bytes=%d", id, mem.String(), quota)
	}
}
