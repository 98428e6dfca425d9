package deploy

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestChecksCatch breaks the rendered base in one way at a time and expects
// check to name each break: the checks TestManifests relies on can fail.
func TestChecksCatch(t *testing.T) {
	bins := binaries(t)
	container := func(r *rendering, kind, owner, name string) *corev1.Container {
		for _, pt := range podTemplates(r) {
			if pt.kind == kind && pt.owner == owner {
				for i := range pt.Spec.Containers {
					if pt.Spec.Containers[i].Name == name {
						return &pt.Spec.Containers[i]
					}
				}
			}
		}
		t.Fatalf("no container %s in %s %s", name, kind, owner)
		return nil
	}
	ms := func(r *rendering) *corev1.Container {
		return container(r, "Deployment", "membership-server", "membership-server")
	}
	gw := func(r *rendering) *corev1.Container { return container(r, "Deployment", "chat", "gateway") }
	etcd := func(r *rendering) *corev1.Container { return container(r, "StatefulSet", "etcd", "etcd") }
	setArg := func(c *corev1.Container, prefix, arg string) {
		for i, a := range c.Args {
			if strings.HasPrefix(a, prefix) {
				c.Args[i] = arg
				return
			}
		}
		t.Fatalf("container %s has no argument %s", c.Name, prefix)
	}
	setEnv := func(c *corev1.Container, name string, e corev1.EnvVar) {
		for i := range c.Env {
			if c.Env[i].Name == name {
				c.Env[i] = e
				return
			}
		}
		t.Fatalf("container %s has no variable %s", c.Name, name)
	}
	service := func(r *rendering, name string) *corev1.Service {
		s, ok := find[*corev1.Service](r, "", name)
		if !ok {
			t.Fatalf("no Service %s", name)
		}
		return s
	}

	cases := []struct {
		name   string
		mutate func(r *rendering)
		want   string
	}{
		{"unknown flag", func(r *rendering) { ms(r).Args = append(ms(r).Args, "--no-such-flag=1") }, "membership-server has no flag --no-such-flag"},
		{"flag without value", func(r *rendering) { ms(r).Args = append(ms(r).Args, "--grpc-addr", ":50051") }, "is not --flag=value"},
		{"variable without flag", func(r *rendering) {
			ms(r).Env = append(ms(r).Env, corev1.EnvVar{Name: "MEMBERSHIP_NO_SUCH", Value: "1"})
		}, "MEMBERSHIP_NO_SUCH names no flag"},
		{"other binary's variable", func(r *rendering) {
			gw(r).Env = append(gw(r).Env, corev1.EnvVar{Name: "MEMBERSHIP_ETCD_PREFIX", Value: "/x/"})
		}, "is membership-server's variable"},
		{"port and address disagree", func(r *rendering) { setArg(ms(r), "--grpc-addr=", "--grpc-addr=:50052") }, "port grpc is 50051, but --grpc-addr=:50052"},
		{"loopback listener", func(r *rendering) { setArg(ms(r), "--metrics-addr=", "--metrics-addr=127.0.0.1:50052") }, "listens on loopback only"},
		{"listener left at default", func(r *rendering) {
			c := gw(r)
			c.Args = c.Args[1:] // --ws-addr
		}, "--ws-addr is left at its default"},
		{"path not served", func(r *rendering) {
			gw(r).ReadinessProbe.HTTPGet.Path = "/ready"
		}, "HTTP probe /ready on port ws"},
		{"gRPC probe off the gRPC port", func(r *rendering) {
			ms(r).LivenessProbe.GRPC.Port = 50052
		}, "gRPC probe on port 50052"},
		{"probe on undeclared port", func(r *rendering) { ms(r).ReadinessProbe.GRPC.Port = 1234 }, "probes port 1234, which it does not declare"},
		{"token outside mounts", func(r *rendering) {
			setArg(ms(r), "--auth-token-file=", "--auth-token-file=/etc/other/api-token")
		}, "is on no mounted volume"},
		{"token not in the volume", func(r *rendering) {
			setArg(gw(r), "--auth-token-file=", "--auth-token-file=/etc/socketrooms/tokens/api-token")
		}, "holds no file api-token"},
		{"unreadable token", func(r *rendering) {
			for _, pt := range podTemplates(r) {
				pt.Spec.SecurityContext.FSGroup = nil
			}
		}, "cannot read tokens/api-token"},
		{"undefined variable", func(r *rendering) {
			setArg(gw(r), "--advertise-addr=", "--advertise-addr=$(POD_IPX):50061")
		}, "refers to $(POD_IPX)"},
		{"advertised port", func(r *rendering) {
			setArg(gw(r), "--advertise-addr=", "--advertise-addr=$(POD_IP):50062")
		}, "is not the gRPC listener's port 50061"},
		{"bad gateway id", func(r *rendering) { setArg(gw(r), "--gateway-id=", "--gateway-id=chat.v2") }, "breaks the rule [A-Za-z0-9_-]{1,64}"},
		{"etcd limits differ", func(r *rendering) {
			c := etcd(r)
			c.Args = append(c.Args, "--max-txn-ops=64")
		}, "--etcd-max-txn-ops=128, but StatefulSet etcd container etcd runs with --max-txn-ops=64"},
		{"our limits differ", func(r *rendering) {
			c := gw(r)
			c.Args = append(c.Args, "--etcd-max-request-bytes=3145728")
		}, "--etcd-max-request-bytes=3145728, but StatefulSet etcd container etcd runs with --max-request-bytes=1572864"},
		{"embedded etcd", func(r *rendering) {
			c := ms(r)
			c.Env = c.Env[1:] // MEMBERSHIP_ETCD_ENDPOINTS
		}, "no --etcd-endpoints"},
		{"endpoint not a member", func(r *rendering) {
			setEnv(gw(r), "GATEWAY_ETCD_ENDPOINTS", corev1.EnvVar{Name: "GATEWAY_ETCD_ENDPOINTS", Value: "http://etcd-3.etcd:2379"})
		}, "etcd endpoint http://etcd-3.etcd:2379 is no member"},
		{"missing ConfigMap key", func(r *rendering) {
			ms(r).Env[0].ValueFrom.ConfigMapKeyRef.Key = "etcd-endpoint"
		}, "reads key etcd-endpoint"},
		{"writable root", func(r *rendering) {
			f := false
			ms(r).SecurityContext.ReadOnlyRootFilesystem = &f
		}, "readOnlyRootFilesystem is not true"},
		{"privilege escalation", func(r *rendering) { gw(r).SecurityContext.AllowPrivilegeEscalation = nil }, "allowPrivilegeEscalation is not false"},
		{"no CPU request under an autoscaler", func(r *rendering) {
			delete(ms(r).Resources.Requests, corev1.ResourceCPU)
		}, "scales on cpu, but container membership-server requests none"},
		{"binary path", func(r *rendering) { ms(r).Command = []string{"/usr/local/bin/membership-server"} }, "the Dockerfile puts the binary at /membership-server"},
		{"Service target port", func(r *rendering) {
			service(r, "chat").Spec.Ports[0].TargetPort = intstr.FromString("http")
		}, "Service chat port ws targets http"},
		{"Service selector", func(r *rendering) {
			service(r, "membership-server").Spec.Selector["app.kubernetes.io/name"] = "membership"
		}, "Service membership-server selects no pods"},
		{"NetworkPolicy peer", func(r *rendering) {
			np, _ := find[*networkingv1.NetworkPolicy](r, "", "gateway")
			np.Spec.Ingress[1].From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] = "membership"
		}, "NetworkPolicy gateway admits pods"},
		{"NetworkPolicy port", func(r *rendering) {
			np, _ := find[*networkingv1.NetworkPolicy](r, "", "etcd")
			p := intstr.FromInt(2378)
			np.Spec.Ingress[0].Ports[0].Port = &p
		}, "NetworkPolicy etcd opens port 2378"},
		{"unknown etcd flag", func(r *rendering) { etcd(r).Args = append(etcd(r).Args, "--experimental-no-such=1") }, "etcd has no flag --experimental-no-such"},
		{"etcd member list", func(r *rendering) {
			setArg(etcd(r), "--initial-cluster=", "--initial-cluster=etcd-0=http://etcd-0.etcd:2380,etcd-1=http://etcd-1.etcd:2380")
		}, "--initial-cluster names [etcd-0 etcd-1]"},
		{"etcd peer URL", func(r *rendering) {
			setArg(etcd(r), "--initial-advertise-peer-urls=", "--initial-advertise-peer-urls=http://$(POD_NAME):2380")
		}, "--initial-advertise-peer-urls=http://$(POD_NAME):2380"},
		{"etcd quota", func(r *rendering) {
			setArg(etcd(r), "--quota-backend-bytes=", "--quota-backend-bytes=17179869184")
		}, "more than half the 20Gi volume"},
		{"etcd memory under its quota", func(r *rendering) {
			etcd(r).Resources.Limits[corev1.ResourceMemory] = resource.MustParse("4Gi")
		}, "memory limit 4Gi is not above --quota-backend-bytes"},
		{"etcd release", func(r *rendering) { etcd(r).Image = "gcr.io/etcd-development/etcd:v3.5.0" }, "not the etcd v3."},
		{"etcd ordered start", func(r *rendering) {
			sts, _ := find[*appsv1.StatefulSet](r, "", "etcd")
			sts.Spec.PodManagementPolicy = appsv1.OrderedReadyPodManagement
		}, "starts members one by one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := renderAndDecode(t, "k8s/base", kustomizations[0].externalSecrets)
			if p := check(r, bins); len(p) > 0 {
				t.Fatalf("the untouched base has problems: %v", p)
			}
			tc.mutate(r)
			problems := check(r, bins)
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %q", tc.want, problems)
		})
	}
}
