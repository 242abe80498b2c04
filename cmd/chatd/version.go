package main

import (
	"io"
	"log/slog"
	"runtime/debug"

	"github.com/chatd/chatd/config"
)

// buildVersion is the version -ldflags set, else the module version of a
// `go install ...@version` build, else the VCS revision the build stamped
// (with "-dirty" for uncommitted changes), else "dev".
func buildVersion(ldflags string) string {
	bi, ok := debug.ReadBuildInfo()
	return versionFrom(ldflags, bi, ok)
}

func versionFrom(ldflags string, bi *debug.BuildInfo, ok bool) string {
	if ldflags != "" {
		return ldflags
	}
	if !ok || bi == nil {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// newLogger logs at the configured level, as text (dev) or JSON.
func newLogger(w io.Writer, cfg config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
