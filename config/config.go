// Package config reads chatd's settings from flags and CHATD_* environment
// variables (flags win) and validates them, naming the setting at fault.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
)

// Config is chatd's effective configuration.
type Config struct {
	Dev               bool
	HTTPAddr          string
	DataDir           string
	NATSURL           string
	NATSListen        string
	ServerName        string
	LogLevel          slog.Level
	HistoryMaxAge     time.Duration
	HistoryMaxPerRoom int64
	DedupeWindow      time.Duration
	HeartBeat         time.Duration
	HeartBeatGrace    time.Duration
	ConnectTimeout    time.Duration
	MaxFrameSize      int
	MaxSubscriptions  int
	ShutdownTimeout   time.Duration
	ShowVersion       bool
}

// EnvPrefix prefixes every environment variable: --data-dir is CHATD_DATA_DIR.
const EnvPrefix = "CHATD"

// Parse reads args (without the program name) and the environment. A bad
// value yields an error that names the flag.
func Parse(args []string) (Config, error) {
	var c Config
	var level string
	fs := c.flags(&level)
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix(EnvPrefix)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("config: invalid --log-level %q: want debug, info, warn or error", level)
	}
	if c.ShowVersion {
		return c, nil
	}
	return c, c.Validate()
}

// flags defines every setting on a flag set bound to c.
func (c *Config) flags(level *string) *flag.FlagSet {
	fs := flag.NewFlagSet("chatd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&c.Dev, "dev", false, "dev mode: embedded NATS with JetStream, CONNECT login is the user id, rooms auto-joined")
	fs.StringVar(&c.HTTPAddr, "http", "127.0.0.1:8080", "HTTP listen address (WebSocket at /ws, /healthz, /readyz)")
	fs.StringVar(&c.DataDir, "data-dir", "./chatd-data", "directory for the embedded NATS JetStream store")
	fs.StringVar(&c.NATSURL, "nats-url", "", "connect to this NATS (comma-separated URLs) instead of embedding one")
	fs.StringVar(&c.NATSListen, "nats-listen", "", "host:port for the embedded NATS client port (default: none, in-process only)")
	fs.StringVar(&c.ServerName, "name", "", "node name (default: the host name)")
	fs.StringVar(level, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.HistoryMaxAge, "history-max-age", 0, "drop room messages older than this from JetStream (0: keep)")
	fs.Int64Var(&c.HistoryMaxPerRoom, "history-max-per-room", 0, "keep at most this many messages per room in JetStream (0: no cap)")
	fs.DurationVar(&c.DedupeWindow, "dedupe-window", 2*time.Minute, "how long a client-msg-id is remembered")
	fs.DurationVar(&c.HeartBeat, "heartbeat", 10*time.Second, "STOMP heart-beat interval the server offers and asks for")
	fs.DurationVar(&c.HeartBeatGrace, "heartbeat-grace", 5*time.Second, "how long past the agreed heart-beat interval a silent client is kept")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "how long a new WebSocket may take to send its STOMP CONNECT")
	fs.IntVar(&c.MaxFrameSize, "max-frame-size", 64<<10, "largest STOMP frame accepted after CONNECT, in bytes")
	fs.IntVar(&c.MaxSubscriptions, "max-subscriptions", 64, "subscriptions per STOMP session")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")

	return fs
}

// Usage returns the flag list for --help.
func Usage() string {
	var c Config
	var level string
	fs := c.flags(&level)
	var b strings.Builder
	b.WriteString("usage: chatd --dev [flags]\n\nEvery flag can also be set as CHATD_<FLAG>, for example CHATD_DATA_DIR.\n\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

// Validate checks settings that parse but make no sense.
func (c Config) Validate() error {
	if !c.Dev {
		return errors.New("config: --dev (CHATD_DEV) is required: this build authenticates users only in dev mode, " +
			"where the CONNECT login header is the user id")
	}
	if err := checkHostPort("--http", c.HTTPAddr); err != nil {
		return err
	}
	if c.NATSURL == "" {
		if strings.TrimSpace(c.DataDir) == "" {
			return errors.New("config: --data-dir must not be empty with an embedded NATS server")
		}
	} else {
		for _, u := range strings.Split(c.NATSURL, ",") {
			if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
				return err
			}
		}
	}
	if c.NATSListen != "" {
		if c.NATSURL != "" {
			return errors.New("config: --nats-listen applies to the embedded server and cannot be used with --nats-url")
		}
		if err := checkHostPort("--nats-listen", c.NATSListen); err != nil {
			return err
		}
	}
	switch {
	case c.HistoryMaxAge < 0:
		return fmt.Errorf("config: invalid --history-max-age %s: must not be negative", c.HistoryMaxAge)
	case c.HistoryMaxPerRoom < 0:
		return fmt.Errorf("config: invalid --history-max-per-room %d: must not be negative", c.HistoryMaxPerRoom)
	case c.DedupeWindow < 0:
		return fmt.Errorf("config: invalid --dedupe-window %s: must not be negative", c.DedupeWindow)
	case c.HeartBeat != 0 && c.HeartBeat < 100*time.Millisecond:
		return fmt.Errorf("config: invalid --heartbeat %s: 0 (off) or at least 100ms", c.HeartBeat)
	case c.HeartBeatGrace <= 0:
		return fmt.Errorf("config: invalid --heartbeat-grace %s: must be positive", c.HeartBeatGrace)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("config: invalid --connect-timeout %s: must be positive", c.ConnectTimeout)
	case c.MaxFrameSize < 1024 || c.MaxFrameSize > 16<<20:
		return fmt.Errorf("config: invalid --max-frame-size %d: 1024 to %d bytes", c.MaxFrameSize, 16<<20)
	case c.MaxSubscriptions < 1:
		return fmt.Errorf("config: invalid --max-subscriptions %d: at least 1", c.MaxSubscriptions)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("config: invalid --shutdown-timeout %s: must be positive", c.ShutdownTimeout)
	}
	return nil
}

func checkHostPort(flagName, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("config: invalid %s %q: want host:port (%v)", flagName, addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("config: invalid %s %q: port must be 0-65535", flagName, addr)
	}
	return nil
}

func checkNATSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("config: invalid --nats-url %q: %v", s, err)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("config: invalid --nats-url %q: scheme must be nats, tls, ws or wss", s)
	}
	if u.Host == "" {
		return fmt.Errorf("config: invalid --nats-url %q: no host", s)
	}
	return nil
}
