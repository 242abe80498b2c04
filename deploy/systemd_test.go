package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unit is a systemd unit file: section, then key, then its values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, name string) unit {
	t.Helper()
	u := unit{}
	var section string
	sc := bufio.NewScanner(strings.NewReader(string(readFile(t, name))))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case section == "":
			t.Fatalf("%s:%d: %q outside a section", name, n, line)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s:%d: %q is not key=value", name, n, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	return u
}

// get is the last value of a key, as systemd takes for most.
func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// parseEnvFile reads an EnvironmentFile: KEY=VALUE lines, # comments.
func parseEnvFile(t *testing.T, name string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for n, line := range strings.Split(string(readFile(t, name)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			t.Fatalf("%s:%d: %q is not KEY=VALUE", name, n+1, line)
		}
		env[k] = strings.Trim(v, `"'`)
	}
	return env
}

// TestSystemdUnit checks the unit and its environment file against chatd
// (settings, data dir, shutdown time, file limit) and has systemd-analyze
// verify it. The service is not started: no systemd runs here.
func TestSystemdUnit(t *testing.T) {
	const service, envFile, sysusers = "systemd/chatd.service", "systemd/chatd.env", "systemd/chatd.sysusers"
	u := parseUnit(t, service)
	env := parseEnvFile(t, envFile)
	s := func(key string) string { return u.get("Service", key) }

	exec0 := strings.Fields(s("ExecStart"))
	if len(exec0) == 0 || !filepath.IsAbs(exec0[0]) || filepath.Base(exec0[0]) != "chatd" {
		t.Fatalf("ExecStart %q: want chatd by its absolute path", s("ExecStart"))
	}
	config := checkChatdConfig(t, envFile+" with "+service, exec0[1:], env)

	// The data dir is the state directory systemd makes and chowns.
	if dir := configValue(t, config, "data-dir"); dir != "/var/lib/"+s("StateDirectory") {
		t.Errorf("--data-dir %s is not /var/lib/ + StateDirectory (%q)", dir, s("StateDirectory"))
	}
	if user := s("User"); user == "" || user == "root" || u.get("Service", "DynamicUser") == "yes" {
		t.Errorf("User=%q: want a system user of chatd's own", user)
	} else {
		// sysusers.d: u NAME ID GECOS HOME SHELL
		f := strings.Fields(lastLine(string(readFile(t, sysusers))))
		if len(f) < 2 || f[0] != "u" || f[1] != user {
			t.Errorf("%s does not make the user %s", sysusers, user)
		}
	}
	if got := s("EnvironmentFile"); got != "/etc/chatd/chatd.env" {
		t.Errorf("EnvironmentFile=%s, want /etc/chatd/chatd.env (docs/deploying.md)", got)
	}

	// SIGTERM drains; SIGKILL comes only past --shutdown-timeout.
	if sig := s("KillSignal"); sig != "" && sig != "SIGTERM" {
		t.Errorf("KillSignal=%s: chatd drains on SIGTERM", sig)
	}
	shutdown, err := time.ParseDuration(configValue(t, config, "shutdown-timeout"))
	if err != nil {
		t.Fatal(err)
	}
	if stop, err := time.ParseDuration(s("TimeoutStopSec")); err != nil || stop < shutdown+5*time.Second {
		t.Errorf("TimeoutStopSec=%s: want at least --shutdown-timeout %s + 5s", s("TimeoutStopSec"), shutdown)
	}
	if n, err := strconv.Atoi(s("LimitNOFILE")); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%s: want at least 65536, one file per connection", s("LimitNOFILE"))
	}
	for key, want := range map[string]string{"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "Restart": "on-failure"} {
		if got := s(key); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}

	// systemd's own reading: unknown keys and bad values, which systemd
	// only warns about and ignores. The binary and environment file are
	// the test's, since verify checks that they exist.
	analyze, err := lookPath("systemd-analyze")
	if err != nil {
		t.Skipf("systemd-analyze verify not run: %v", err)
	}
	dir := t.TempDir()
	envCopy := filepath.Join(dir, "chatd.env")
	if err := os.WriteFile(envCopy, readFile(t, envFile), 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("EnvironmentFile=/etc/chatd/chatd.env", "EnvironmentFile="+envCopy,
		"ExecStart="+exec0[0], "ExecStart="+chatd(t)).Replace(string(readFile(t, service)))
	unitCopy := filepath.Join(dir, "chatd.service")
	if err := os.WriteFile(unitCopy, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", unitCopy).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "chatd.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
