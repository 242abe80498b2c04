package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/coder/websocket"
)

// freeAddr finds an address for a process that binds it itself later,
// below Linux's ephemeral range so outgoing connections cannot take it.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := "127.0.0.1:" + strconv.Itoa(20000+rand.IntN(12000))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			_ = ln.Close()
			return addr
		}
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

// buildChatd builds the real binary once per test.
func buildChatd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "chatd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestBadConfigStopsWithTheSettingNamed(t *testing.T) {
	bin := buildChatd(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dev", "--http", "localhost"}, "--http"},
		{[]string{"--dev", "--nats-url", "redis://127.0.0.1:6379"}, "--nats-url"},
		{[]string{"--http", "127.0.0.1:0"}, "--jwt-secret"},
		{[]string{"--dev", "--postgres-url", "postgres://chatd:s3cret@db:notaport/chatd"}, "--postgres-url"},
		{[]string{"--dev", "--postgres-url", "mysql://chatd:s3cret@db/chatd"}, "--postgres-url"},
		{[]string{"--dev", "--tls-cert", "/nonexistent/tls.crt"}, "--tls-key"},
		{[]string{"--jwt-secret", strings.Repeat("s", 32), "--name", "n1", "--cluster", "127.0.0.1:0",
			"--routes", "nats-route://127.0.0.1:6222"}, "--insecure-cluster"},
		{[]string{"--jwt-secret", strings.Repeat("s", 32), "--nats-url", "nats://127.0.0.1:4222", "--nats-creds", "/nonexistent.creds"}, "--nats-creds"},
	} {
		cmd := exec.Command(bin, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err == nil || !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%v: exit %v, want 2", tc.args, err)
		}
		if !strings.Contains(stderr.String(), tc.want) {
			t.Fatalf("%v: stderr %q does not name %s", tc.args, stderr.String(), tc.want)
		}
		if strings.Contains(stderr.String(), "s3cret") {
			t.Fatalf("%v: stderr shows the password: %q", tc.args, stderr.String())
		}
	}
	if out, err := exec.Command(bin, "--version").Output(); err != nil || !strings.HasPrefix(string(out), "chatd ") {
		t.Fatalf("--version: %q %v", out, err)
	}
}

// TestSIGTERMShutsDownGracefully runs chatd as a user would and stops it
// with SIGTERM: the connected client is told to reconnect (ERROR, then
// WebSocket close 1012) and the process exits 0.
func TestSIGTERMShutsDownGracefully(t *testing.T) {
	bin := buildChatd(t)
	cmd := exec.Command(bin, "--dev", "--http", "127.0.0.1:0", "--data-dir", t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	logs := bufio.NewScanner(stderr)
	ready := regexp.MustCompile(`msg="chatd ready" http=(\S+)`)
	var addr string
	var logText strings.Builder
	for logs.Scan() {
		logText.WriteString(logs.Text() + "\n")
		if m := ready.FindStringSubmatch(logs.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatalf("chatd never became ready:\n%s", logText.String())
	}
	if !strings.Contains(logText.String(), "DEV MODE") {
		t.Errorf("dev mode is not announced at start:\n%s", logText.String())
	}
	rest := make(chan string, 1)
	go func() { b, _ := io.ReadAll(stderr); rest <- string(b) }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Write(ctx, websocket.MessageText, []byte("CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\n\n\x00")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := ws.Read(ctx); err != nil || !strings.HasPrefix(string(b), "CONNECTED") {
		t.Fatalf("connect: %q %v", b, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var sawError bool
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusServiceRestart {
				t.Fatalf("close status %v (%v), want 1012", code, err)
			}
			break
		}
		if strings.HasPrefix(string(b), "ERROR") && strings.Contains(string(b), "message:server shutting down") {
			sawError = true
		}
	}
	if !sawError {
		t.Fatal("no ERROR frame before the close")
	}
	// The log is read to its end before Wait, which closes the pipe and
	// could otherwise cut the last lines off.
	var out string
	select {
	case out = <-rest:
	case <-ctx.Done():
		t.Fatal("chatd did not exit after SIGTERM")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("chatd exited with %v\n%s", err, out)
	}
	if !strings.Contains(out, "shutdown complete") {
		t.Fatalf("no clean shutdown in the log:\n%s", out)
	}
}

// TestConfigFileAndPrintConfig runs the binary with a config file, the
// environment and flags, and reads back what --print-config says.
func TestConfigFileAndPrintConfig(t *testing.T) {
	bin := buildChatd(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "chatd.toml")
	if err := os.WriteFile(file, []byte("dev = true\nheartbeat = \"4s\"\ndata-dir = \"/from/file\"\nhttp = \"127.0.0.1:9001\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--print-config", "--http", "127.0.0.1:9003")
	cmd.Env = append(os.Environ(), "CHATD_CONFIG="+file, "CHATD_DATA_DIR=/from/env", "CHATD_HTTP=127.0.0.1:9002")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("--print-config: %v", err)
	}
	for _, line := range []string{"dev = true", `heartbeat = "4s"`, `data-dir = "/from/env"`, `http = "127.0.0.1:9003"`,
		`log-format = "text"`, `shutdown-timeout = "15s"`} {
		if !strings.Contains(string(out), "\n"+line+"\n") {
			t.Errorf("--print-config lacks %s:\n%s", line, out)
		}
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("dev = true\nmax-subscription = 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd = exec.Command(bin, "--config", bad)
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), `unknown key "max-subscription"`) {
		t.Fatalf("unknown key: exit %v, stderr %q", err, stderr.String())
	}
}

func TestVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "chatd")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "--version").Output(); err != nil || string(out) != "chatd v9.8.7\n" {
		t.Fatalf("--version with -ldflags: %q %v", out, err)
	}
	for _, tc := range []struct {
		ldflags string
		bi      *debug.BuildInfo
		want    string
	}{
		{"v1.0.0", &debug.BuildInfo{Main: debug.Module{Version: "v2.0.0"}}, "v1.0.0"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v2.0.0"}}, "v2.0.0"}, // go install ...@v2.0.0
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "ada4e32abcdef0123456789"}, {Key: "vcs.modified", Value: "true"}}}, "ada4e32abcde-dirty"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"", nil, "dev"},
	} {
		if got := versionFrom(tc.ldflags, tc.bi, tc.bi != nil); got != tc.want {
			t.Errorf("versionFrom(%q, %+v) = %q, want %q", tc.ldflags, tc.bi, got, tc.want)
		}
	}
}

// TestJSONLogsCarryTheSession runs chatd with JSON logs at debug level,
// opens a session that fails, and checks its log lines name the session
// and the user; it also fetches the page and /metrics from the binary.
func TestJSONLogsCarryTheSession(t *testing.T) {
	bin := buildChatd(t)
	cmd := exec.Command(bin, "--dev", "--log-format", "json", "--log-level", "debug", "--http", "127.0.0.1:0",
		"--data-dir", t.TempDir())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan map[string]any, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"msg": "NOT JSON: " + sc.Text()}
			}
			lines <- m
		}
	}()
	next := func(what string, match func(map[string]any) bool) map[string]any {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-lines:
				if !ok {
					t.Fatalf("chatd exited before logging %s", what)
				}
				if s, _ := m["msg"].(string); strings.HasPrefix(s, "NOT JSON") {
					t.Fatalf("a log line is not JSON: %s", s)
				}
				if match(m) {
					return m
				}
			case <-timeout:
				t.Fatalf("no log line for %s within 20s", what)
			}
		}
	}
	ready := next("chatd ready", func(m map[string]any) bool { return m["msg"] == "chatd ready" })
	addr, _ := ready["http"].(string)

	for path, want := range map[string]string{"/": "<title>chatd</title>", "/metrics": "chatd_websocket_connections_total"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ws.CloseNow() }()
	if err := ws.Write(ctx, websocket.MessageText, []byte("CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\n\n\x00")); err != nil {
		t.Fatal(err)
	}
	_, b, err := ws.Read(ctx)
	if err != nil || !strings.HasPrefix(string(b), "CONNECTED") {
		t.Fatalf("connect: %q %v", b, err)
	}
	session := regexp.MustCompile(`\nsession:(\S+)\n`).FindStringSubmatch(string(b))
	if session == nil {
		t.Fatalf("no session header in %q", b)
	}
	if err := ws.Write(ctx, websocket.MessageText, []byte("SEND\ndestination:/app/nowhere\n\n{}\x00")); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"session connected", "session error", "session closed"} {
		m := next(msg, func(m map[string]any) bool { return m["msg"] == msg })
		if m["session"] != session[1] || m["user"] != "alice" {
			t.Errorf("%q log line has session %v user %v, want %s alice: %v", msg, m["session"], m["user"], session[1], m)
		}
	}
}

// TestSIGHUPReloadsTLS: SIGHUP loads --tls-cert and --tls-key again
// (rather than killing chatd, SIGHUP's default), and chatd then stops
// cleanly on SIGTERM.
func TestSIGHUPReloadsTLS(t *testing.T) {
	bin := buildChatd(t)
	pair := certtest.NewCA(t, "chatd").Issue("chatd")
	cmd := exec.Command(bin, "--dev", "--http", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-format", "text",
		"--tls-cert", pair.CertFile, "--tls-key", pair.KeyFile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	waitFor := func(what string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("chatd exited before logging %q", what)
				}
				if strings.Contains(l, what) {
					return
				}
			case <-timeout:
				t.Fatalf("chatd did not log %q", what)
			}
		}
	}
	waitFor(`msg="chatd ready"`)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(`msg="TLS certificate reloaded"`)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor("shutdown complete")
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("chatd exited with %v", err)
	}
}
