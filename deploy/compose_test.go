package deploy

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// imageEnv is the environment the Dockerfile's runtime stage sets.
func imageEnv(t *testing.T) map[string]string {
	t.Helper()
	stages, _ := dockerfile(t)
	env := map[string]string{}
	for _, cmd := range stages[len(stages)-1].Commands {
		if c, ok := cmd.(*instructions.EnvCommand); ok {
			for _, kv := range c.Env {
				env[kv.Key] = kv.Value
			}
		}
	}
	return env
}

// TestComposeCluster loads the compose file as `docker compose` does
// (compose-go, validated against the Compose schema, so an unknown key
// fails) and checks the cluster it describes against chatd: each node's
// settings, its routes to the others, PostgreSQL, ports and volumes.
// Docker itself is not run.
func TestComposeCluster(t *testing.T) {
	file, err := filepath.Abs("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(file),
		ConfigFiles: []types.ConfigFile{{Filename: file}},
		Environment: types.Mapping{}, // nothing of this machine's
	})
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	repo, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}

	var nodes []types.ServiceConfig
	for _, s := range project.Services {
		if s.Build != nil {
			nodes = append(nodes, s)
		}
	}
	slices.SortFunc(nodes, func(a, b types.ServiceConfig) int { return strings.Compare(a.Name, b.Name) })
	if len(nodes) != 3 {
		t.Fatalf("%d services built from the Dockerfile, want 3 chatd nodes", len(nodes))
	}
	base := imageEnv(t)
	names := map[string]bool{}
	published := map[string]string{}
	volumes := map[string]string{}
	for _, s := range nodes {
		where := "compose.yaml service " + s.Name
		if s.Build.Context != repo || (s.Build.Dockerfile != "" && s.Build.Dockerfile != "Dockerfile") {
			t.Errorf("%s: builds %s in %s, want the repository's Dockerfile", where, s.Build.Dockerfile, s.Build.Context)
		}
		// The container's environment: the image's, then the service's.
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range s.Environment {
			if v == nil {
				t.Errorf("%s: %s has no value", where, k)
				continue
			}
			env[k] = *v
		}
		config := checkChatdConfig(t, where, s.Command, env)
		name := configValue(t, config, "name")
		if name == "" || names[name] {
			t.Errorf("%s: --name %q is not unique", where, name)
		}
		names[name] = true

		// Routes: every node, by service name, on its --cluster port.
		_, routePort, _ := net.SplitHostPort(configValue(t, config, "cluster"))
		var want []string
		for _, n := range nodes {
			want = append(want, fmt.Sprintf("nats-route://%s:%s", n.Name, routePort))
		}
		if got := strings.Split(configValue(t, config, "routes"), ","); !slices.Equal(got, want) {
			t.Errorf("%s: --routes %v, want %v", where, got, want)
		}

		// PostgreSQL: a service this one waits for until it is healthy.
		pg, err := url.Parse(configValue(t, config, "postgres-url"))
		if err != nil || pg.Hostname() == "" {
			t.Errorf("%s: --postgres-url %q", where, configValue(t, config, "postgres-url"))
		} else if db, ok := project.Services[pg.Hostname()]; !ok || db.HealthCheck == nil {
			t.Errorf("%s: --postgres-url names %s, not a service with a healthcheck", where, pg.Hostname())
		} else if dep, ok := s.DependsOn[db.Name]; !ok || dep.Condition != types.ServiceConditionHealthy {
			t.Errorf("%s: does not wait for %s to be healthy", where, db.Name)
		}

		// HTTP published on loopback, each node on a port of its own.
		_, httpPort, _ := net.SplitHostPort(configValue(t, config, "http"))
		var served bool
		for _, p := range s.Ports {
			if strconv.Itoa(int(p.Target)) == httpPort {
				served = true
				if p.HostIP != "127.0.0.1" {
					t.Errorf("%s: HTTP published on %q: a dev-mode node must stay on loopback", where, p.HostIP)
				}
				if other, dup := published[p.Published]; dup {
					t.Errorf("%s and %s both publish %s", s.Name, other, p.Published)
				}
				published[p.Published] = s.Name
			}
		}
		if !served {
			t.Errorf("%s: --http port %s is not published", where, httpPort)
		}

		// The JetStream store on a volume of its own.
		var stored bool
		for _, v := range s.Volumes {
			if v.Target == configValue(t, config, "data-dir") && v.Type == types.VolumeTypeVolume {
				stored = true
				if other, dup := volumes[v.Source]; dup {
					t.Errorf("%s and %s share the volume %s", s.Name, other, v.Source)
				}
				volumes[v.Source] = s.Name
			}
		}
		if !stored {
			t.Errorf("%s: --data-dir %s is not on a named volume", where, configValue(t, config, "data-dir"))
		}

		shutdown, err := time.ParseDuration(configValue(t, config, "shutdown-timeout"))
		if err != nil {
			t.Fatal(err)
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < shutdown+5*time.Second {
			t.Errorf("%s: stop_grace_period %v leaves --shutdown-timeout %s no margin before SIGKILL", where, s.StopGracePeriod, shutdown)
		}
		if u := s.Ulimits["nofile"]; u == nil || max(u.Single, u.Soft) < 65536 {
			t.Errorf("%s: want a nofile ulimit of at least 65536: one file per connection", where)
		}
	}
	if _, err := os.Stat(filepath.Join(repo, "Dockerfile")); err != nil {
		t.Error(err)
	}
}
