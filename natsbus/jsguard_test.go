package natsbus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/storage"
)

// TestFullDiskDisablesAndRecovers: an embedded single node whose store's
// disk fills up stops taking writes (nats-server's "critical write
// error"); writes fail as unavailable, Ready says the disk is full (and
// /readyz with it), an ERROR line says so, and once the disk has room
// again JetStream restarts, the stream holds what it held, and writes
// are taken again (without the restart they never were). The disk is a
// small tmpfs: root only.
func TestFullDiskDisablesAndRecovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a small tmpfs to fill needs root (CI runs as root)")
	}
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })

	logs := &testlog.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := Start(ctx, Options{DataDir: dir, ServerName: "fulldisk", Durability: DurabilityFsync,
		Logger:       slog.New(slog.NewTextHandler(io.MultiWriter(logs), &slog.HandlerOptions{Level: slog.LevelWarn})),
		jsCheckEvery: 100 * time.Millisecond, jsMinFree: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	l, err := bus.OpenMessageLog(ctx, LogConfig{Replicas: 1, DuplicateWindow: time.Minute, MaxMsgSize: 64 << 10, Durability: DurabilityFsync})
	if err != nil {
		t.Fatal(err)
	}
	c := l.NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	store := func(data []byte) error {
		done := make(chan error, 1)
		c.Submit("r", data, "", "", nil, func(_ uint64, err error) { done <- err })
		return <-done
	}
	if err := store([]byte(`{"n":"before"}`)); err != nil {
		t.Fatal(err)
	}
	// JetStream sized its store when the disk was empty; a file it does
	// not know about now takes most of the room.
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 36<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 32<<10)
	start := time.Now()
	var storeErr error
	for i := 0; i < 2000 && storeErr == nil; i++ {
		storeErr = store(append([]byte(`{"x":"`), append(big, `"}`...)...))
	}
	if storeErr == nil {
		t.Fatal("64 MiB written to a 48 MiB disk without an error")
	}
	t.Logf("the disk filled after %v: %v", time.Since(start), storeErr)
	ready := func() error {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return bus.Ready(rctx)
	}
	waitUntil(t, "Ready to fail", func() bool { return ready() != nil })
	if err := ready(); !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("Ready: %v, want it to say the disk is full", err)
	}
	if err := store([]byte(`{"n":"while full"}`)); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("a write while JetStream is off: %v, want it unavailable", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "Ready again", func() bool { return ready() == nil })
	for _, line := range []string{"the JetStream store's disk is full", "restarting JetStream"} {
		if !strings.Contains(logs.String(), line) {
			t.Fatalf("no line saying %q; log:\n%s", line, logs.String())
		}
	}
	if strings.Contains(logs.String(), "JetStream is disabled on this node") && !strings.Contains(logs.String(), "JetStream is on again") {
		t.Fatalf("JetStream was turned off and no line says it is on again; log:\n%s", logs.String())
	}
	// The store answers again, and still holds what it held.
	var err2 error
	waitUntil(t, "a write to be taken", func() bool { err2 = store([]byte(`{"n":"after"}`)); return err2 == nil })
	first, err := l.After(context.Background(), "r", 0, 1)
	if err != nil || len(first) != 1 || string(first[0].Data) != `{"n":"before"}` {
		t.Fatalf("after recovery the room starts with %v (%v), want the message stored before", first, err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
