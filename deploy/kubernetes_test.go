package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// manifests are deploy/kubernetes's objects, by kind.
type manifests struct {
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	pdbs         []*policyv1.PodDisruptionBudget
	policies     []*networkingv1.NetworkPolicy
}

// loadManifests decodes every document of every file strictly into its
// Kubernetes API type: a field the type lacks (a typo, a misplaced key)
// or a kind not expected here fails.
func loadManifests(t *testing.T, dir string) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	var m manifests
	for _, f := range files {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(readFile(t, f))))
		for i := 1; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			where := fmt.Sprintf("%s, document %d", f, i)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 StatefulSet":
				o := new(appsv1.StatefulSet)
				m.statefulSets, obj = append(m.statefulSets, o), o
			case "v1 Service":
				o := new(corev1.Service)
				m.services, obj = append(m.services, o), o
			case "policy/v1 PodDisruptionBudget":
				o := new(policyv1.PodDisruptionBudget)
				m.pdbs, obj = append(m.pdbs, o), o
			case "networking.k8s.io/v1 NetworkPolicy":
				o := new(networkingv1.NetworkPolicy)
				m.policies, obj = append(m.policies, o), o
			default:
				t.Fatalf("%s: unexpected %s %s", where, tm.APIVersion, tm.Kind)
			}
			if err := decodeStrict(doc, obj); err != nil {
				t.Fatalf("%s: not a valid %s: %v", where, tm.Kind, err)
			}
		}
	}
	return m
}

// decodeStrict decodes as the API server does: field names matched
// case-sensitively, and unknown or repeated fields refused (sigs.k8s.io/yaml's
// own strict mode would take fsgroup for fsGroup).
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

var commentLine = regexp.MustCompile(`(?m)^\s*#.*$`)

func stripComments(doc []byte) []byte { return commentLine.ReplaceAll(doc, nil) }

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t, "kubernetes")
	if len(m.statefulSets) != 1 || len(m.pdbs) != 1 || len(m.policies) != 1 {
		t.Fatalf("want one StatefulSet, one PodDisruptionBudget and one NetworkPolicy; have %d, %d, %d",
			len(m.statefulSets), len(m.pdbs), len(m.policies))
	}
	sts := m.statefulSets[0]
	spec := sts.Spec
	pod := spec.Template
	podLabels := labels.Set(pod.Labels)
	selects := func(what string, sel *metav1.LabelSelector) {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() || !s.Matches(podLabels) {
			t.Errorf("%s's selector %v does not select chatd's pods (%v)", what, sel, err)
		}
	}
	selects("the StatefulSet", spec.Selector)
	if spec.Replicas == nil || *spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", spec.Replicas)
	}
	// The first node is ready only once its peers have joined it.
	if spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: with OrderedReady the second pod waits for a first that waits for it", spec.PodManagementPolicy)
	}
	replicas := int(*spec.Replicas)

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if c.Image == "" {
		t.Error("the container has no image")
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] == 0 || ports["routes"] == 0 {
		t.Fatalf("the container's ports %v lack http or routes", c.Ports)
	}
	if a := pod.Annotations["prometheus.io/port"]; a != strconv.Itoa(int(ports["http"])) {
		t.Errorf("prometheus.io/port %q is not the http port %d", a, ports["http"])
	}

	// Services: the headless one names the pods for the routes; each
	// selects the pods and targets a port the container has.
	var headless *corev1.Service
	for _, s := range m.services {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) || len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s does not select chatd's pods", s.Name)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String || ports[p.TargetPort.StrVal] == 0 {
				t.Errorf("Service %s port %s targets %v, not a named port of the container", s.Name, p.Name, p.TargetPort)
			}
		}
		if s.Name == spec.ServiceName {
			headless = s
		}
	}
	if headless == nil {
		t.Fatalf("no Service %q, the StatefulSet's serviceName", spec.ServiceName)
	}
	if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: clusterIP %q, publishNotReadyAddresses %v; want a headless service that names pods before they are ready",
			headless.Name, headless.Spec.ClusterIP, headless.Spec.PublishNotReadyAddresses)
	}
	if len(headless.Spec.Ports) != 1 || headless.Spec.Ports[0].Port != ports["routes"] {
		t.Errorf("Service %s ports %v: want the routes port %d", headless.Name, headless.Spec.Ports, ports["routes"])
	}

	// chatd's flags and settings, as a pod would run them.
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = sts.Name + "-0"
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = secretExample(t, e.Name)
		default:
			t.Errorf("env %s: a source this test does not know: %+v", e.Name, e.ValueFrom)
		}
	}
	var args []string
	for _, a := range c.Args {
		args = append(args, expandK8s(t, a, env))
	}
	if len(c.Command) > 0 {
		t.Errorf("command %q replaces the image's entrypoint; give chatd's flags as args", c.Command)
	}
	config := checkChatdConfig(t, "statefulset.yaml", args, env)
	if got := configValue(t, config, "name"); got != sts.Name+"-0" {
		t.Errorf("--name is %q, want the pod's name (stable across restarts, as JetStream needs)", got)
	}
	if _, port, _ := net.SplitHostPort(configValue(t, config, "http")); port != strconv.Itoa(int(ports["http"])) {
		t.Errorf("--http %s is not on the http port %d", configValue(t, config, "http"), ports["http"])
	}
	if _, port, _ := net.SplitHostPort(configValue(t, config, "cluster")); port != strconv.Itoa(int(ports["routes"])) {
		t.Errorf("--cluster %s is not on the routes port %d", configValue(t, config, "cluster"), ports["routes"])
	}
	// Every pod, and only these, on the headless service's names.
	routes := strings.Split(configValue(t, config, "routes"), ",")
	want := map[string]bool{}
	for i := range replicas {
		want[fmt.Sprintf("nats-route://%s-%d.%s:%d", sts.Name, i, headless.Name, ports["routes"])] = true
	}
	for _, r := range routes {
		if !want[r] {
			t.Errorf("--routes entry %q is not a pod of the StatefulSet on its headless service", r)
		}
		delete(want, r)
	}
	if len(want) > 0 {
		t.Errorf("--routes lacks %v", want)
	}
	dataDir := configValue(t, config, "data-dir")
	var mounted bool
	for _, vm := range c.VolumeMounts {
		for _, vct := range spec.VolumeClaimTemplates {
			mounted = mounted || vm.Name == vct.Name && vm.MountPath == dataDir
		}
	}
	if !mounted {
		t.Errorf("--data-dir %s is not a volume claimed for each pod: the JetStream store would not survive a restart", dataDir)
	}

	// Probes: paths chatd serves, on its http port; liveness never on
	// /readyz, which is 503 whenever the cluster lacks a majority.
	probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}
	wantPath := map[string]string{"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
	for name, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", name)
			continue
		}
		if p.HTTPGet.Path != wantPath[name] || p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe GET %s on %s, want %s on http", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath[name])
		}
	}
	if p := c.StartupProbe; p != nil {
		// chatd serves HTTP only once started: a clustered node waits up
		// to 2 minutes for its peers, and up to 1 for PostgreSQL.
		if budget := time.Duration(p.PeriodSeconds*p.FailureThreshold) * time.Second; budget < 3*time.Minute {
			t.Errorf("the startup probe gives chatd %s to start, less than the 3 minutes it may wait", budget)
		}
	}
	addr := startChatd(t, "--dev", "--data-dir", t.TempDir())
	for name, p := range probes {
		if p == nil || p.HTTPGet == nil {
			continue
		}
		if code := getStatus(t, "http://"+addr+p.HTTPGet.Path); code != http.StatusOK {
			t.Errorf("%s probe: a ready chatd answers GET %s with %d", name, p.HTTPGet.Path, code)
		}
	}

	// The drain: preStop's sleep, then SIGTERM and --shutdown-timeout,
	// all within the grace period, with time to spare before SIGKILL.
	shutdown, err := time.ParseDuration(configValue(t, config, "shutdown-timeout"))
	if err != nil {
		t.Fatal(err)
	}
	var sleep time.Duration
	if l := c.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Exec == nil || len(l.PreStop.Exec.Command) != 2 || l.PreStop.Exec.Command[0] != "sleep" {
		t.Error("no preStop sleep: proxies would still send clients to a node that turns them away")
	} else if s, err := strconv.Atoi(l.PreStop.Exec.Command[1]); err != nil || s < 1 {
		t.Errorf("preStop sleep %q", l.PreStop.Exec.Command[1])
	} else {
		sleep = time.Duration(s) * time.Second
	}
	grace := 30 * time.Second // Kubernetes' default
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if need := sleep + shutdown + 5*time.Second; grace < need {
		t.Errorf("terminationGracePeriodSeconds %s < preStop %s + --shutdown-timeout %s + 5s: SIGKILL would cut the drain", grace, sleep, shutdown)
	}

	// Resources, and GOMEMLIMIT below the memory limit (docs/operations.md).
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		t.Errorf("resources: want cpu and memory requests and a memory limit, have %v", c.Resources)
	}
	if gml, err := goMemLimit(env["GOMEMLIMIT"]); err != nil {
		t.Errorf("GOMEMLIMIT: %v", err)
	} else if share := float64(gml) / float64(lim.Memory().Value()); share < 0.7 || share > 0.9 {
		t.Errorf("GOMEMLIMIT %s is %.0f%% of the memory limit %s, want 70-90%%", env["GOMEMLIMIT"], share*100, lim.Memory())
	}

	// Not root, and the image's user.
	psc, csc := pod.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("the pod may run as root")
	} else if uid := dockerfileUID(t); *psc.RunAsUser != uid {
		t.Errorf("runAsUser %d is not the Dockerfile's USER %d, which owns the image's data dir", *psc.RunAsUser, uid)
	}
	if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Error("the container may escalate privileges or write outside its volume")
	}

	// A voluntary disruption may take one node: two of three would lose
	// JetStream's majority.
	pdb := m.pdbs[0]
	selects("the PodDisruptionBudget", pdb.Spec.Selector)
	if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.Type != intstr.Int || replicas-mu.IntValue() < replicas/2+1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v: want a majority of %d nodes left", mu, replicas)
	}

	// Only chatd's pods reach the routes.
	np := m.policies[0]
	selects("the NetworkPolicy", &np.Spec.PodSelector)
	var routesOpen, httpOpen bool
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil || p.Port.Type != intstr.String || ports[p.Port.StrVal] == 0 {
				t.Errorf("NetworkPolicy port %v is not a named port of the container", p.Port)
				continue
			}
			switch p.Port.StrVal {
			case "http":
				httpOpen = true
			case "routes":
				routesOpen = true
				if len(rule.From) == 0 {
					t.Error("NetworkPolicy opens the routes to everyone")
				}
				for _, from := range rule.From {
					if from.PodSelector == nil || from.NamespaceSelector != nil || from.IPBlock != nil {
						t.Errorf("NetworkPolicy lets %+v reach the routes", from)
					} else {
						selects("the routes' NetworkPolicy peer", from.PodSelector)
					}
				}
			}
		}
	}
	if !routesOpen || !httpOpen {
		t.Errorf("NetworkPolicy: routes open to peers %v, http open %v; want both", routesOpen, httpOpen)
	}
}

// secretExample is a value for a variable that a Secret gives.
func secretExample(t *testing.T, name string) string {
	switch name {
	case "CHATD_JWT_SECRET":
		return strings.Repeat("s", 48)
	case "CHATD_POSTGRES_URL":
		return "postgres://chatd@db:5432/chatd?sslmode=verify-full"
	case "CHATD_CLUSTER_PASSWORD":
		return strings.Repeat("p", 32)
	}
	t.Errorf("env %s from a Secret: the test has no example value for it", name)
	return ""
}

var k8sVar = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandK8s expands $(VAR) as Kubernetes does in args.
func expandK8s(t *testing.T, s string, env map[string]string) string {
	return k8sVar.ReplaceAllStringFunc(s, func(ref string) string {
		name := k8sVar.FindStringSubmatch(ref)[1]
		v, ok := env[name]
		if !ok {
			t.Errorf("%s refers to $(%s), which the container's env does not define", s, name)
		}
		return v
	})
}

// goMemLimit reads GOMEMLIMIT as the Go runtime does: bytes with an
// optional B, KiB, MiB, GiB or TiB.
func goMemLimit(s string) (int64, error) {
	for i, unit := range []string{"TiB", "GiB", "MiB", "KiB", "B"} {
		if n, ok := strings.CutSuffix(s, unit); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v << (10 * (4 - i)), err
		}
	}
	if s == "" {
		return 0, errors.New("not set")
	}
	return strconv.ParseInt(s, 10, 64)
}

// getStatus is the status of a GET, retried for a few seconds while
// chatd's readiness settles.
func getStatus(t *testing.T, u string) int {
	t.Helper()
	var code int
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get(u)
		if err == nil {
			code = resp.StatusCode
			_ = resp.Body.Close()
		}
		if code == http.StatusOK || time.Now().After(deadline) {
			return code
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dockerfileUID is the numeric user of the Dockerfile's last USER.
func dockerfileUID(t *testing.T) int64 {
	t.Helper()
	var uid int64 = -1
	for _, line := range strings.Split(string(readFile(t, filepath.Join(root, "Dockerfile"))), "\n") {
		if rest, ok := strings.CutPrefix(line, "USER "); ok {
			user, _, _ := strings.Cut(strings.TrimSpace(rest), ":")
			n, err := strconv.ParseInt(user, 10, 64)
			if err != nil {
				t.Fatalf("Dockerfile USER %q is not numeric", rest)
			}
			uid = n
		}
	}
	if uid < 0 {
		t.Fatal("the Dockerfile has no USER")
	}
	return uid
}
