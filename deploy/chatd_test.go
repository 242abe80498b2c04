// Package deploy checks the deployment files of chatd (the Dockerfile,
// Kubernetes manifests, compose file, systemd unit, dashboard and alert
// rules) against the real chatd: its flags, its settings, its HTTP paths
// and the metrics it exports. It is a module of its own so that the
// Kubernetes and Prometheus libraries never become chatd's dependencies.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// root is the repository's root, where chatd's module is.
const root = ".."

var (
	buildOnce sync.Once
	buildDir  string
	chatdBin  string
	buildErr  error
)

// TestMain removes the binary built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// chatd builds the real binary from the working tree, once for all tests.
func chatd(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "chatd-deploy-test-"); buildErr != nil {
			return
		}
		chatdBin = filepath.Join(buildDir, "chatd")
		cmd := exec.Command("go", "build", "-o", chatdBin, "./cmd/chatd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/chatd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return chatdBin
}

// settingLine is a line of --print-config: a setting, or a secret that is
// set and so hidden.
var settingLine = regexp.MustCompile(`(?m)^(?:# )?([a-z][a-z0-9-]*) = `)

var (
	settingsOnce sync.Once
	settingsSet  map[string]bool
	settingsErr  error
)

// settings are the names of chatd's settings, as --print-config lists
// them, with the flags that act on one run (docs/configuration.md).
func settings(t *testing.T) map[string]bool {
	t.Helper()
	bin := chatd(t)
	settingsOnce.Do(func() {
		out, err := exec.Command(bin, "--dev", "--print-config").Output()
		if err != nil {
			settingsErr = fmt.Errorf("chatd --dev --print-config: %v", err)
			return
		}
		settingsSet = map[string]bool{"config": true, "print-config": true, "version": true, "help": true}
		for _, m := range settingLine.FindAllStringSubmatch(string(out), -1) {
			settingsSet[m[1]] = true
		}
		if len(settingsSet) < 20 || !settingsSet["data-dir"] || !settingsSet["routes"] {
			settingsErr = fmt.Errorf("--print-config did not list chatd's settings:\n%s", out)
		}
	})
	if settingsErr != nil {
		t.Fatal(settingsErr)
	}
	return settingsSet
}

// flagName is the setting a command-line argument names, if it is a flag.
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") {
		return "", false
	}
	name := strings.TrimLeft(arg, "-")
	name, _, _ = strings.Cut(name, "=")
	return name, true
}

// envSetting is the setting a CHATD_ variable names, if it is one.
func envSetting(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "CHATD_")
	if !ok {
		return "", false
	}
	return strings.ReplaceAll(strings.ToLower(rest), "_", "-"), true
}

// checkChatdConfig checks a way of running chatd from a deployment file:
// every flag and CHATD_ variable names one of chatd's settings, and chatd
// itself, given these arguments and this environment alone, accepts them
// (--print-config exits 0 only for a configuration chatd would start with).
// It returns the effective configuration.
func checkChatdConfig(t *testing.T, where string, args []string, env map[string]string) string {
	t.Helper()
	known := settings(t)
	for _, a := range args {
		if name, ok := flagName(a); ok && !known[name] {
			t.Errorf("%s: chatd has no flag --%s", where, name)
		}
	}
	var environ []string
	for k, v := range env {
		if name, ok := envSetting(k); ok && !known[name] {
			t.Errorf("%s: %s names no setting of chatd's (no --%s)", where, k, name)
		}
		environ = append(environ, k+"="+v)
	}
	slices.Sort(environ)
	cmd := exec.Command(chatd(t), append(slices.Clone(args), "--print-config")...)
	cmd.Env = append(environ, "PATH="+os.Getenv("PATH")) // nothing of this machine's CHATD_*
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Errorf("%s: chatd refuses the configuration (%v): %s\nargs %q\nenv %q", where, err, strings.TrimSpace(stderr.String()), args, environ)
	}
	return string(out)
}

// configValue is a setting's value in --print-config's output, unquoted.
func configValue(t *testing.T, config, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + ` = (.*)$`).FindStringSubmatch(config)
	if m == nil {
		t.Fatalf("--print-config has no %s:\n%s", key, config)
	}
	return strings.Trim(m[1], `"`)
}

// startChatd runs the binary with args (and --http on a free loopback
// port) and returns its HTTP address once it logs that it is ready.
func startChatd(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(chatd(t), append([]string{"--http", "127.0.0.1:0", "--log-format", "text"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := regexp.MustCompile(`msg="chatd ready" http=(\S+)`)
	found := make(chan string, 1)
	var logText strings.Builder
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logText.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := ready.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // never block chatd's logging
	}()
	select {
	case addr := <-found:
		return addr
	case <-time.After(90 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("chatd %q did not become ready within 90s:\n%s", args, logText.String())
		return ""
	}
}

// readFile reads a file of the repository (name relative to deploy/).
func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lookPath finds a tool this machine may lack; the caller skips without it.
func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("%s is not installed", name)
	}
	return p, err
}
