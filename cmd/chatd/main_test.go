package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

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
		{[]string{"--http", "127.0.0.1:0"}, "--dev"},
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
	if err := cmd.Wait(); err != nil {
		t.Fatalf("chatd exited with %v\n%s", err, <-rest)
	}
	if out := <-rest; !strings.Contains(out, "shutdown complete") {
		t.Fatalf("no clean shutdown in the log:\n%s", out)
	}
}
