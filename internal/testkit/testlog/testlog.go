// Package testlog is the logger of the components a test starts: silent,
// unless CHATD_TEST_LOG is set, when everything down to debug goes to
// standard error.
package testlog

import (
	"io"
	"log/slog"
	"os"
)

// New returns the logger.
func New() *slog.Logger {
	if os.Getenv("CHATD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
