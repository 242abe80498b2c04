// Package testlog is the logger of the components a test starts: silent,
// unless CHATD_TEST_LOG is set, when everything down to debug goes to
// standard error.
package testlog

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"
)

// New returns the logger.
func New() *slog.Logger {
	if os.Getenv("CHATD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Buffer is a log destination that many goroutines may write to while a
// test reads what it holds.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
