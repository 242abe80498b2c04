// Package config reads chatd's settings from flags, CHATD_* environment
// variables and a TOML config file (flags win over the environment, which
// wins over the file) and validates them, naming the setting at fault.
package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompapi/dest"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/peterbourgon/ff/v3"
)

// Config is chatd's effective configuration.
type Config struct {
	Dev        bool
	HTTPAddr   string
	DataDir    string
	NATSURL    string
	NATSListen string
	// NATSPrefix begins the NATS subjects, stream and buckets (natsbus.Names).
	NATSPrefix        string
	ServerName        string
	ClusterName       string
	ClusterListen     string
	Routes            []string
	Replicas          int
	LogLevel          slog.Level
	HistoryMaxAge     time.Duration
	HistoryMaxPerRoom int64
	// Partitions is how many streams the room messages are spread over
	// (natsbus.Names.Partition).
	Partitions int
	// PostgresURL, when set, keeps rooms, memberships, read positions and
	// an archive of every message in PostgreSQL (storage/postgres).
	PostgresURL      string
	DedupeWindow     time.Duration
	HeartBeat        time.Duration
	HeartBeatGrace   time.Duration
	ConnectTimeout   time.Duration
	MaxFrameSize     int
	MaxSubscriptions int
	ShutdownTimeout  time.Duration
	// PprofAddr, when set, serves net/http/pprof there, apart from --http
	// so that profiles are never exposed with the WebSocket endpoint.
	PprofAddr   string
	ShowVersion bool
	// JWT authentication (outside dev mode): an HS256 secret and/or a PEM
	// public key file for RS256 or ES256.
	JWTSecret    string
	JWTPublicKey string
	JWTJWKS      string
	// JWTJWKSURL serves a JWKS fetched at start and every JWTJWKSRefresh.
	JWTJWKSURL     string
	JWTJWKSRefresh time.Duration
	JWTIssuer      string
	JWTAudience    string
	JWTUserClaim   string
	JWTCookie      string
	JWTHeader      string
	// TLSCert and TLSKey, when set, serve --http as HTTPS (and wss://),
	// the pair reloaded when the files change or on SIGHUP.
	TLSCert string
	TLSKey  string
	// TrustedProxies are the addresses whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Route security of the embedded cluster: mutual TLS with a CA and/or
	// a user and password every node gives and requires.
	ClusterTLSCert  string
	ClusterTLSKey   string
	ClusterTLSCA    string
	ClusterUser     string
	ClusterPassword string
	// InsecureCluster lets a node route without TLS or credentials.
	InsecureCluster bool
	// Credentials and TLS for an external NATS (--nats-url).
	NATSCreds    string
	NATSNkey     string
	NATSUser     string
	NATSPassword string
	NATSCA       string
	NATSTLSCert  string
	NATSTLSKey   string
	// LeafRemotes make the embedded server a leaf node of an existing
	// NATS (comma-separated URLs of its leaf node port), with LeafCreds
	// and LeafCA; chatd's stream and buckets then live in that NATS's
	// JetStream, in domain NATSJSDomain.
	LeafRemotes string
	LeafCreds   string
	LeafCA      string
	// NATSJSDomain is the JetStream domain holding chatd's stream and
	// buckets, in an external NATS or the hub of a leaf node.
	NATSJSDomain string
	// AllowedOrigins are the browser origins (host patterns) allowed to
	// open a WebSocket besides the server's own.
	AllowedOrigins []string
	// Abuse limits, enforced outside dev mode.
	SendRate              float64
	SendBurst             int
	MaxConnectionsPerUser int
	// StoreReads bounds the store reads replays and history requests make
	// at once on a node; more wait their turn.
	StoreReads int
	// ReplayShareMiB bounds the history running replays hold for the
	// other replays of their rooms on this node, in MiB (0: none).
	ReplayShareMiB int
	// LogFormat is "text" or "json" (default: text with --dev, else json).
	LogFormat string
	// ConfigFile is the TOML file read below the environment and flags.
	ConfigFile string
	// PrintConfig asks for the effective configuration on stdout.
	PrintConfig bool
	// Durability is what a RECEIPT waits for: fsync, replicated or fast
	// (docs/operations.md, Durability).
	Durability string
	// HeartBeatMin is the shortest heart-beat interval a client may ask for.
	HeartBeatMin time.Duration
	// FlushWindow is how long a busy room gathers messages before writing
	// them to its subscribers (chat.Config.FlushWindow).
	FlushWindow time.Duration
	// WorkingSet bounds the memberships and read positions a node holds
	// in memory for the rooms in use on it (storage/workingset).
	WorkingSet int
	// WriteStallMax bounds how long one write may wait for a client that
	// does not read but keeps sending; 0: no longer than writeTimeout.
	WriteStallMax time.Duration
	// WSPath is the endpoint's path: the raw WebSocket, and with SockJS the
	// SockJS endpoint under it.
	WSPath string
	SockJS bool
	// The STOMP destination templates (docs/configuration.md,
	// Destinations), each with {room} once.
	DestSend         string
	DestRoom         string
	DestHistory      string
	DestHistoryReply string
	DestRead         string
	DestReadEvents   string
	UserPrefix       string
	// MessageFields names the JSON fields of a message, by what they hold
	// (text, id, room, user, unread, created); KeepClientFields keeps a SEND body's other fields.
	MessageFields    map[string]string
	KeepClientFields bool
	// settings is the effective configuration, for WriteTOML.
	settings []setting
}

// The --durability modes (docs/operations.md, Durability).
const (
	DurabilityFsync      = "fsync"
	DurabilityReplicated = "replicated"
	DurabilityFast       = "fast"
)

// writeTimeout is how long the STOMP server lets a write wait for a client
// that has stopped reading and sends nothing (stompws's default, which
// chatd keeps): --write-stall-max extends it, never shortens it.
const writeTimeout = 10 * time.Second

// minJWKSRefresh keeps --jwt-jwks-refresh from hammering the identity
// provider (every node fetches on its own).
const minJWKSRefresh = 10 * time.Second

// EnvPrefix prefixes every environment variable: --data-dir is CHATD_DATA_DIR.
const EnvPrefix = "CHATD"

// Parse reads args (without the program name) and the environment. A bad
// value yields an error that names the flag.
func Parse(args []string) (Config, error) {
	var c Config
	var level string
	fs := c.flags(&level)
	record(fs)
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix(EnvPrefix)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	if err := applyFile(fs, c.ConfigFile); err != nil {
		return c, err
	}
	if c.MessageFields == nil {
		c.MessageFields, _ = parseMessageFields("")
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("config: invalid --log-level %q: want debug, info, warn or error", level)
	}
	if err := c.resolveLogFormat(fs); err != nil {
		return c, err
	}
	c.settings = snapshot(fs)
	if c.ShowVersion || c.PrintConfig {
		return c, nil // main reports what Validate would refuse after printing
	}
	return c, c.Validate()
}

// flags defines every setting on a flag set bound to c.
func (c *Config) flags(level *string) *flag.FlagSet {
	fs, _ := c.groupedFlags(level)
	return fs
}

// flagGroup is one concern's flags, as --help shows them.
type flagGroup struct {
	title, about string
	names        []string
}

// groupedFlags defines every setting, each in the group --help shows it
// under: a flag is in the group whose function defined it.
func (c *Config) groupedFlags(level *string) (*flag.FlagSet, []flagGroup) {
	fs := flag.NewFlagSet("chatd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var groups []flagGroup
	group := func(title, about string, define func()) {
		before := map[string]bool{}
		fs.VisitAll(func(f *flag.Flag) { before[f.Name] = true })
		define()
		g := flagGroup{title: title, about: about}
		fs.VisitAll(func(f *flag.Flag) {
			if !before[f.Name] {
				g.names = append(g.names, f.Name)
			}
		})
		groups = append(groups, g)
	}
	group("Run", "what this run does", func() {
		fs.BoolVar(&c.Dev, "dev", false, "dev mode: embedded NATS with JetStream, CONNECT login is the user id, rooms auto-joined")
		fs.StringVar(&c.ConfigFile, "config", "", "TOML config `file` whose keys are these flags' names; the environment and flags override it")
		fs.BoolVar(&c.PrintConfig, "print-config", false, "print the effective configuration as TOML (secrets hidden) and exit")
		fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	})
	group("Listen", "the HTTP listener and the STOMP endpoint on it", func() {
		fs.StringVar(&c.HTTPAddr, "http", "127.0.0.1:8080", "`host:port` to serve HTTP on (chat page at /, WebSocket at /ws, /metrics, /healthz, /readyz)")
		fs.StringVar(&c.WSPath, "ws-path", "/ws", "path of the STOMP endpoint: a raw WebSocket there, SockJS under it")
		fs.BoolVar(&c.SockJS, "sockjs", true, "serve SockJS (Spring's .withSockJS()) under --ws-path")
		fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate `file` (with its chain) to serve --http as HTTPS and wss://; reloaded when it changes and on SIGHUP")
		fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key `file` of --tls-cert")
		fs.Func("trusted-proxies", "comma-separated CIDRs (or addresses) of TLS-terminating proxies whose X-Forwarded-For names the client in logs (default: none, the header is ignored)", func(v string) error {
			c.TrustedProxies = nil
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p == "" {
					continue
				}
				prefix, err := parsePrefix(p)
				if err != nil {
					return err
				}
				c.TrustedProxies = append(c.TrustedProxies, prefix)
			}
			return nil
		})
		fs.Func("allowed-origins", "comma-separated browser origins (host patterns such as chat.example.com or *.example.com) allowed besides the server's own", func(v string) error {
			c.AllowedOrigins = nil
			for _, o := range strings.Split(v, ",") {
				if o = strings.TrimSpace(o); o != "" {
					c.AllowedOrigins = append(c.AllowedOrigins, o)
				}
			}
			return nil
		})
	})
	group("Authentication", "who a client is, outside dev mode", func() {
		fs.StringVar(&c.JWTSecret, "jwt-secret", "", "HS256 secret (at least 32 bytes) that verifies client tokens")
		fs.StringVar(&c.JWTPublicKey, "jwt-public-key", "", "PEM public key `file` (RSA: RS256, EC P-256: ES256) that verifies client tokens")
		fs.StringVar(&c.JWTJWKS, "jwt-jwks", "", "JSON Web Key Set `file` whose RSA (RS256) and EC P-256 (ES256) keys verify tokens by their kid")
		fs.StringVar(&c.JWTJWKSURL, "jwt-jwks-url", "", "https `URL` of the identity provider's JSON Web Key Set, used as --jwt-jwks is: fetched at start, then every --jwt-jwks-refresh and on an unknown kid")
		fs.DurationVar(&c.JWTJWKSRefresh, "jwt-jwks-refresh", auth.DefaultJWKSRefresh, "how often --jwt-jwks-url is fetched again")
		fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", "required iss claim of client tokens (default: not checked)")
		fs.StringVar(&c.JWTAudience, "jwt-audience", "", "required aud claim of client tokens (default: not checked)")
		fs.StringVar(&c.JWTUserClaim, "jwt-user-claim", "sub", "claim holding the user id")
		fs.StringVar(&c.JWTCookie, "jwt-cookie", "", "cookie of the WebSocket handshake that may carry the token (default: none)")
		fs.StringVar(&c.JWTHeader, "jwt-header", "Authorization", "CONNECT frame header that carries the token, \"Bearer <token>\" or the token alone")
	})
	group("Cluster and NATS", "the embedded NATS server and its cluster, or an external NATS", func() {
		fs.StringVar(&c.ServerName, "name", "", "node name, unique in a cluster (default: the host name)")
		fs.StringVar(&c.ClusterListen, "cluster", "", "`host:port` where the embedded NATS server listens for cluster routes (default: not clustered)")
		fs.Func("routes", "comma-separated peer route URLs, e.g. nats-route://10.0.0.2:6222 (this node's own may be listed)", func(v string) error {
			c.Routes = nil
			for _, r := range strings.Split(v, ",") {
				if r = strings.TrimSpace(r); r != "" {
					c.Routes = append(c.Routes, r)
				}
			}
			return nil
		})
		fs.StringVar(&c.ClusterName, "cluster-name", "chatd", "NATS cluster name shared by every node")
		fs.StringVar(&c.ClusterTLSCert, "cluster-tls-cert", "", "PEM certificate `file` this node shows its peers on cluster routes, both ways (mutual TLS; needs --cluster-tls-key and --cluster-tls-ca)")
		fs.StringVar(&c.ClusterTLSKey, "cluster-tls-key", "", "PEM private key `file` of --cluster-tls-cert")
		fs.StringVar(&c.ClusterTLSCA, "cluster-tls-ca", "", "PEM `file` of the CA that signs every node's --cluster-tls-cert; a peer without such a certificate is refused")
		fs.StringVar(&c.ClusterUser, "cluster-user", "", "user name every node gives and requires on cluster routes (with --cluster-password)")
		fs.StringVar(&c.ClusterPassword, "cluster-password", "", "password of --cluster-user")
		fs.BoolVar(&c.InsecureCluster, "insecure-cluster", false, "allow --cluster without --cluster-tls-* or --cluster-user: anyone who reaches the route port joins the cluster and reads every room (implied by --dev)")
		fs.IntVar(&c.Replicas, "replicas", 0, "JetStream replicas of the stream and KV buckets (0: 3 when the cluster has at least 3 nodes, else 1)")
		fs.StringVar(&c.NATSURL, "nats-url", "", "connect to this NATS (comma-separated `URLs`) instead of embedding one")
		fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials `file` (user JWT and nkey seed, as nsc writes it) for --nats-url")
		fs.StringVar(&c.NATSNkey, "nats-nkey", "", "nkey seed `file` (SU...) for --nats-url")
		fs.StringVar(&c.NATSUser, "nats-user", "", "user name for --nats-url (or user:password@ in the URL)")
		fs.StringVar(&c.NATSPassword, "nats-password", "", "password of --nats-user")
		fs.StringVar(&c.NATSCA, "nats-ca", "", "PEM `file` of the CA that signs --nats-url's server certificates (default: the system's)")
		fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", "", "PEM client certificate `file` for a --nats-url that verifies clients (with --nats-tls-key)")
		fs.StringVar(&c.NATSTLSKey, "nats-tls-key", "", "PEM private key `file` of --nats-tls-cert")
		fs.StringVar(&c.LeafRemotes, "leaf-remote", "", "make the embedded server a leaf node of an existing NATS: comma-separated `URLs` of its leaf node port (nats-leaf://host:7422, or tls:// for TLS); chatd's stream and buckets then live in that NATS's JetStream (--nats-js-domain)")
		fs.StringVar(&c.LeafCreds, "leaf-creds", "", "NATS credentials `file` for the --leaf-remote connection (user JWT and nkey seed)")
		fs.StringVar(&c.LeafCA, "leaf-ca", "", "PEM `file` of the CA that signs --leaf-remote's server certificates (tls:// URLs; default: the system's)")
		fs.StringVar(&c.NATSJSDomain, "nats-js-domain", "", "JetStream `domain` holding chatd's stream and buckets: required with --leaf-remote (the hub's domain), optional with --nats-url")
		fs.StringVar(&c.NATSPrefix, "nats-prefix", natsbus.DefaultPrefix, "first token of chatd's NATS subjects (chat.msg.<room>) and, in capitals, start of its stream's and KV buckets' names (CHAT_MESSAGES): deployments with different prefixes share one NATS without touching each other's data; the same on every node")
		fs.StringVar(&c.NATSListen, "nats-listen", "", "`host:port` for the embedded NATS client port (default: none, in-process only)")
	})
	group("Storage", "JetStream, PostgreSQL and what a RECEIPT waits for", func() {
		fs.StringVar(&c.DataDir, "data-dir", "./chatd-data", "`directory` for the embedded NATS JetStream store")
		fs.StringVar(&c.Durability, "durability", "fsync", "what a RECEIPT waits for: fsync (on disk on every replica that acknowledged), replicated (in memory on a quorum of replicas) or fast (single replica, in memory)")
		fs.StringVar(&c.PostgresURL, "postgres-url", "", "PostgreSQL connection `URL`: rooms, memberships, read positions and an archive of every message go there (default: none, all but messages in JetStream KV)")
		fs.DurationVar(&c.HistoryMaxAge, "history-max-age", 0, "drop room messages older than this from JetStream (0: keep)")
		fs.Int64Var(&c.HistoryMaxPerRoom, "history-max-per-room", 0, "keep at most this many messages per room in JetStream (0: no cap)")
		fs.IntVar(&c.Partitions, "partitions", 1, "how many JetStream streams the room messages are spread over, each room in one of them, each stream with its own leader so that writes spread over the cluster; fixed when the deployment is first started: a node started with another count refuses to start; the same on every node")
		fs.DurationVar(&c.DedupeWindow, "dedupe-window", 2*time.Minute, "how long a client-msg-id (in a cluster, also chatd's own message id) is remembered")
	})
	group("Limits and timeouts", "what one client may do, and how long chatd waits", func() {
		fs.Float64Var(&c.SendRate, "send-rate", 20, "SEND frames per second per session, outside dev mode (0: no limit)")
		fs.IntVar(&c.SendBurst, "send-burst", 40, "SEND frames a session may send at once above --send-rate")
		fs.IntVar(&c.MaxConnectionsPerUser, "max-connections-per-user", 16, "open sessions per user on one node, outside dev mode (0: no limit)")
		fs.IntVar(&c.MaxFrameSize, "max-frame-size", 64<<10, "largest STOMP frame accepted after CONNECT, in bytes")
		fs.IntVar(&c.MaxSubscriptions, "max-subscriptions", 64, "subscriptions per STOMP session")
		fs.IntVar(&c.StoreReads, "store-reads", 32, "store reads that replays and history requests make at once on this node; more wait their turn, first come first served")
		fs.IntVar(&c.ReplayShareMiB, "replay-share", 64, "MiB of history that a room's replays running on this node hold for each other, so that clients reconnecting together read each message from the store once (0: every replay reads its own)")
		fs.DurationVar(&c.HeartBeat, "heartbeat", 10*time.Second, "STOMP heart-beat interval the server offers and asks for")
		fs.DurationVar(&c.HeartBeatMin, "heartbeat-min", time.Second, "shortest STOMP heart-beat interval a client may ask for, either way")
		fs.DurationVar(&c.HeartBeatGrace, "heartbeat-grace", 5*time.Second, "how long past the agreed heart-beat interval a silent client is kept")
		fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "how long a new WebSocket may take to send its STOMP CONNECT")
		fs.DurationVar(&c.WriteStallMax, "write-stall-max", 2*time.Minute, "how long one write may wait for a client that has stopped reading but keeps sending, as one pacing a replay, before it is cut (0: no longer than the 10s write timeout)")
		fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take")
		fs.IntVar(&c.WorkingSet, "working-set", 1_000_000, "how many memberships and read positions a node holds in memory, for the rooms in use on it; the rooms least recently used are dropped beyond it (not those with subscribers on the node), and loaded again when next used")
		fs.DurationVar(&c.FlushWindow, "flush-window", 20*time.Millisecond, "how long a busy room gathers messages before writing them to each subscriber in one write; a room quiet for longer writes at once (0: every burst at once)")
	})
	group("Destinations and messages", "STOMP destinations and message fields, as a Spring app names them", func() {
		fs.StringVar(&c.DestSend, "dest-send", "/app/chat.{room}", "destination a SEND posts a message to")
		fs.StringVar(&c.DestRoom, "dest-room", "/topic/chat.{room}", "destination to SUBSCRIBE to for a room's messages")
		fs.StringVar(&c.DestHistory, "dest-history", "/app/chat.{room}.log", "destination a SEND asks for a page of history at")
		fs.StringVar(&c.DestHistoryReply, "dest-history-reply", "/user/queue/chat.log", "user queue the history pages are answered on")
		fs.StringVar(&c.DestRead, "dest-read", "/app/chat.{room}.read", "destination a SEND marks messages read at")
		fs.StringVar(&c.DestReadEvents, "dest-read-events", "/topic/chat.{room}.read", "destination to SUBSCRIBE to for a room's read receipts")
		fs.StringVar(&c.UserPrefix, "user-prefix", "/user", "prefix of user queues: {user-prefix}/queue/{name}")
		fs.Func("message-fields", "JSON field names of messages, as key=name pairs: text, id, room, user, unread, created (e.g. text=messageText,room=chatroomId)", func(v string) error {
			m, err := parseMessageFields(v)
			if err != nil {
				return err
			}
			c.MessageFields = m
			return nil
		})
		fs.BoolVar(&c.KeepClientFields, "keep-client-fields", true, "keep a SEND body's other top-level fields and give them back with the message")
	})
	group("Observability", "logs and profiles (metrics are always at /metrics)", func() {
		fs.StringVar(level, "log-level", "info", "log level: debug, info, warn or error")
		fs.StringVar(&c.LogFormat, "log-format", "", "log format: text or json (default: text with --dev, else json)")
		fs.StringVar(&c.PprofAddr, "pprof", "", "`host:port` to serve net/http/pprof on, apart from --http (default: off)")
	})
	return fs, groups
}

// messageFieldDefaults are what --message-fields names, with chatd's names.
func messageFieldDefaults() map[string]string {
	return map[string]string{
		"text": "message", "id": "id", "room": "roomId", "user": "userId", "unread": "unreadCount", "created": "createdAt",
	}
}

// parseMessageFields reads --message-fields: key=name pairs, over the
// defaults.
func parseMessageFields(v string) (map[string]string, error) {
	m := messageFieldDefaults()
	for _, pair := range strings.Split(v, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		k, name, ok := strings.Cut(pair, "=")
		k, name = strings.TrimSpace(k), strings.TrimSpace(name)
		if _, known := messageFieldDefaults()[k]; !ok || !known {
			return nil, fmt.Errorf("%q: want key=name with key text, id, room, user, unread or created", pair)
		}
		if !validFieldName(name) {
			return nil, fmt.Errorf("%q: a field name is 1 to 64 characters of letters, digits, _ and $", pair)
		}
		m[k] = name
	}
	seen := map[string]string{}
	for _, k := range []string{"text", "id", "room", "user", "unread", "created"} {
		if other, dup := seen[m[k]]; dup {
			return nil, fmt.Errorf("%s and %s would both be the field %q", other, k, m[k])
		}
		seen[m[k]] = k
	}
	return m, nil
}

func validFieldName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' && r != '$' {
			return false
		}
	}
	return true
}

// usageHead is how chatd is run, the first part of --help.
const usageHead = `usage: chatd --dev [flags]
       chatd (--jwt-secret SECRET | --jwt-public-key FILE | --jwt-jwks FILE | --jwt-jwks-url URL) [flags]
       chatd --print-config [flags]
       chatd --version
       chatd --help

Outside dev mode chatd needs a key that verifies clients' tokens. Every flag
can also be set in the environment, as the variable named beside it, or as a
key of the --config file (data-dir = "/var/lib/chatd"): a flag wins over the
environment, which wins over the file (docs/configuration.md).
`

// Usage is --help: how chatd is run, then every flag under its concern,
// with its environment variable and default.
func Usage() string {
	var c Config
	fs, groups := c.groupedFlags(new(string))
	var b strings.Builder
	b.WriteString(usageHead)
	for _, g := range groups {
		fmt.Fprintf(&b, "\n%s (%s):\n", g.title, g.about)
		for _, name := range g.names {
			f := fs.Lookup(name)
			arg, text := flag.UnquoteUsage(f)
			switch arg {
			case "value":
				arg = "list" // the fs.Func flags
			case "float":
				arg = "number"
			}
			line := "  --" + name
			if arg != "" {
				line += " " + arg
			}
			fmt.Fprintf(&b, "%-40s %s\n", line, EnvName(name))
			switch f.DefValue {
			case "", "0", "0s", "false":
			default:
				text += fmt.Sprintf(" (default %s)", f.DefValue)
			}
			wrap(&b, text, "      ", 80)
		}
	}
	return b.String()
}

// EnvName is the environment variable that sets a flag: --data-dir is
// CHATD_DATA_DIR (as ff derives it).
func EnvName(flagName string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// wrap writes text in lines of at most width, each after indent.
func wrap(b *strings.Builder, text, indent string, width int) {
	line := indent
	for _, w := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line + "\n")
}

// Validate checks settings that parse but make no sense.
func (c Config) Validate() error {
	if !c.Dev && c.JWTSecret == "" && c.JWTPublicKey == "" && c.JWTJWKS == "" && c.JWTJWKSURL == "" {
		return errors.New("config: --jwt-secret (CHATD_JWT_SECRET), --jwt-public-key, --jwt-jwks or --jwt-jwks-url is required " +
			"to authenticate users; or --dev, where the CONNECT login header is the user id")
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		return fmt.Errorf("config: invalid --jwt-secret: %d bytes, want at least 32", len(c.JWTSecret))
	}
	if c.JWTPublicKey != "" {
		if _, err := os.Stat(c.JWTPublicKey); err != nil {
			return fmt.Errorf("config: invalid --jwt-public-key: %w", err)
		}
	}
	if c.JWTJWKS != "" {
		if _, err := os.Stat(c.JWTJWKS); err != nil {
			return fmt.Errorf("config: invalid --jwt-jwks: %w", err)
		}
	}
	if c.JWTJWKSURL != "" {
		if err := auth.CheckJWKSURL(c.JWTJWKSURL); err != nil {
			return fmt.Errorf("config: invalid --jwt-jwks-url %q: %v", hidePasswords(c.JWTJWKSURL), err)
		}
	}
	if c.JWTJWKSRefresh < minJWKSRefresh {
		return fmt.Errorf("config: invalid --jwt-jwks-refresh %s: at least %s", c.JWTJWKSRefresh, minJWKSRefresh)
	}
	if c.JWTUserClaim == "" {
		return errors.New("config: --jwt-user-claim must not be empty")
	}
	if err := checkHostPort("--http", c.HTTPAddr); err != nil {
		return err
	}
	if err := checkKeyPair("--tls-cert", "--tls-key", c.TLSCert, c.TLSKey); err != nil {
		return err
	}
	if err := c.validateNATSAuth(); err != nil {
		return err
	}
	if err := c.validateClusterSecurity(); err != nil {
		return err
	}
	switch {
	case c.LeafRemotes != "": // keeps no store: validateLeaf checked it
	case c.NATSURL == "":
		if strings.TrimSpace(c.DataDir) == "" {
			return errors.New("config: --data-dir must not be empty with an embedded NATS server")
		}
	default:
		for _, u := range strings.Split(c.NATSURL, ",") {
			if err := checkNATSURL(strings.TrimSpace(u)); err != nil {
				return err
			}
		}
	}
	if err := c.validateLeaf(); err != nil {
		return err
	}
	if c.ClusterListen != "" || len(c.Routes) > 0 {
		switch {
		case c.LeafRemotes != "":
			return errors.New("config: --cluster and --routes cannot be used with --leaf-remote: a leaf node keeps no JetStream of its own, and its nodes meet in the hub")
		case c.NATSURL != "":
			return errors.New("config: --cluster and --routes apply to the embedded server and cannot be used with --nats-url")
		case c.ClusterListen == "":
			return errors.New("config: --routes needs --cluster (this node's own route address)")
		case c.ServerName == "":
			return errors.New("config: --name is required with --cluster: every node needs a unique name")
		case strings.TrimSpace(c.ClusterName) == "" || strings.ContainsAny(c.ClusterName, " \t.*>"):
			return fmt.Errorf("config: invalid --cluster-name %q: one word without dots or wildcards", c.ClusterName)
		}
		if err := checkHostPort("--cluster", c.ClusterListen); err != nil {
			return err
		}
		for _, r := range c.Routes {
			if err := checkRouteURL(r); err != nil {
				return err
			}
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("config: invalid --replicas %d: 0 (automatic) to 5", c.Replicas)
	}
	switch c.Durability {
	case DurabilityFsync, DurabilityReplicated:
	case DurabilityFast:
		if c.Replicas > 1 {
			return fmt.Errorf("config: --durability fast cannot be used with --replicas %d: JetStream keeps a stream's writes in memory only with 1 replica; use --durability replicated", c.Replicas)
		}
	default:
		return fmt.Errorf("config: invalid --durability %q: want fsync, replicated or fast", c.Durability)
	}
	if c.PprofAddr != "" {
		if err := checkHostPort("--pprof", c.PprofAddr); err != nil {
			return err
		}
		if c.PprofAddr == c.HTTPAddr && !strings.HasSuffix(c.PprofAddr, ":0") {
			return errors.New("config: --pprof must differ from --http: profiles are served apart from clients")
		}
	}
	if _, err := natsbus.NewNames(c.NATSPrefix); err != nil {
		return fmt.Errorf("config: invalid --nats-prefix: %v", err)
	}
	if c.NATSListen != "" {
		if c.NATSURL != "" {
			return errors.New("config: --nats-listen applies to the embedded server and cannot be used with --nats-url")
		}
		if err := checkHostPort("--nats-listen", c.NATSListen); err != nil {
			return err
		}
	}
	if c.PostgresURL != "" {
		if _, err := pgxpool.ParseConfig(c.PostgresURL); err != nil {
			// pgx's message hides the password.
			return fmt.Errorf("config: invalid --postgres-url: %v", err)
		}
	}
	switch {
	case c.HistoryMaxAge < 0:
		return fmt.Errorf("config: invalid --history-max-age %s: must not be negative", c.HistoryMaxAge)
	case c.HistoryMaxAge > 0 && c.HistoryMaxAge < 100*time.Millisecond:
		return fmt.Errorf("config: invalid --history-max-age %s: 0 (keep) or at least 100ms", c.HistoryMaxAge)
	case c.HistoryMaxAge > 0 && c.DedupeWindow > c.HistoryMaxAge:
		return fmt.Errorf("config: --dedupe-window %s must not exceed --history-max-age %s: a client-msg-id is remembered only while its message is held",
			c.DedupeWindow, c.HistoryMaxAge)
	case c.Partitions < 1 || c.Partitions > natsbus.MaxPartitions:
		return fmt.Errorf("config: invalid --partitions %d: 1 to %d", c.Partitions, natsbus.MaxPartitions)
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
	case c.WriteStallMax != 0 && c.WriteStallMax < writeTimeout:
		return fmt.Errorf("config: invalid --write-stall-max %s: 0 (off) or at least %s, the write timeout", c.WriteStallMax, writeTimeout)
	case c.MaxFrameSize < 1024 || c.MaxFrameSize > 16<<20:
		return fmt.Errorf("config: invalid --max-frame-size %d: 1024 to %d bytes", c.MaxFrameSize, 16<<20)
	case c.MaxSubscriptions < 1:
		return fmt.Errorf("config: invalid --max-subscriptions %d: at least 1", c.MaxSubscriptions)
	case c.SendRate < 0:
		return fmt.Errorf("config: invalid --send-rate %g: must not be negative", c.SendRate)
	case c.SendRate > 0 && c.SendBurst < 1:
		return fmt.Errorf("config: invalid --send-burst %d: at least 1", c.SendBurst)
	case c.StoreReads < 1:
		return fmt.Errorf("config: invalid --store-reads %d: at least 1", c.StoreReads)
	case c.ReplayShareMiB < 0 || c.ReplayShareMiB > 1<<20:
		return fmt.Errorf("config: invalid --replay-share %d: 0 to %d MiB", c.ReplayShareMiB, 1<<20)
	case c.MaxConnectionsPerUser < 0:
		return fmt.Errorf("config: invalid --max-connections-per-user %d: must not be negative", c.MaxConnectionsPerUser)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("config: invalid --shutdown-timeout %s: must be positive", c.ShutdownTimeout)
	case c.JWTHeader == "" || strings.ContainsAny(c.JWTHeader, ": \t\r\n"):
		return fmt.Errorf("config: invalid --jwt-header %q: a STOMP header name, without : or spaces", c.JWTHeader)
	case c.WorkingSet < 1000:
		return fmt.Errorf("config: invalid --working-set %d: at least 1000", c.WorkingSet)
	case c.FlushWindow < 0 || c.FlushWindow > time.Second:
		return fmt.Errorf("config: invalid --flush-window %s: 0 to 1s", c.FlushWindow)
	case c.HeartBeatMin < 100*time.Millisecond:
		return fmt.Errorf("config: invalid --heartbeat-min %s: at least 100ms", c.HeartBeatMin)
	case c.HeartBeat != 0 && c.HeartBeat < c.HeartBeatMin:
		return fmt.Errorf("config: --heartbeat %s is below --heartbeat-min %s", c.HeartBeat, c.HeartBeatMin)
	}
	if err := checkWSPath(c.WSPath); err != nil {
		return err
	}
	if _, err := c.Destinations(); err != nil {
		return err
	}
	return nil
}

// reservedPaths are the node's own HTTP paths, which --ws-path must not take.
var reservedPaths = []string{"/api", "/metrics", "/healthz", "/readyz"}

func checkWSPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/") || p == "/" || strings.HasSuffix(p, "/"):
		return fmt.Errorf("config: invalid --ws-path %q: a path such as /ws or /ws/chat, no trailing /", p)
	case strings.ContainsAny(p, " \t\r\n{}?#%*"):
		return fmt.Errorf("config: invalid --ws-path %q: letters, digits and / . _ - only", p)
	}
	for _, r := range reservedPaths {
		if p == r || strings.HasPrefix(p, r+"/") {
			return fmt.Errorf("config: invalid --ws-path %q: %s is chatd's own", p, r)
		}
	}
	return nil
}

// Destinations reads the --dest-* and --user-prefix settings and checks
// them: each template holds {room} once, none can match what another
// does, and the history reply is a user queue.
func (c Config) Destinations() (dest.Set, error) {
	var d dest.Set
	named := []struct {
		flag  string
		value string
		to    *dest.Template
	}{
		{"--dest-send", c.DestSend, &d.Send}, {"--dest-room", c.DestRoom, &d.Room}, {"--dest-history", c.DestHistory, &d.History},
		{"--dest-read", c.DestRead, &d.Read}, {"--dest-read-events", c.DestReadEvents, &d.ReadEvents},
	}
	for _, n := range named {
		t, err := dest.Parse(n.value)
		if err != nil {
			return d, fmt.Errorf("config: invalid %s: %w", n.flag, err)
		}
		*n.to = t
	}
	q, err := dest.Queue(c.UserPrefix)
	if err != nil {
		return d, fmt.Errorf("config: invalid --user-prefix: %w", err)
	}
	d.Queue = q
	all := append(named, struct {
		flag  string
		value string
		to    *dest.Template
	}{"--user-prefix", q.String(), &d.Queue})
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if ex, ok := dest.Overlap(*all[i].to, *all[j].to); ok {
				return d, fmt.Errorf("config: %s (%s) and %s (%s) both match %q: a destination must name one thing",
					all[i].flag, all[i].to, all[j].flag, all[j].to, ex)
			}
		}
	}
	name, ok := q.Match(c.DestHistoryReply)
	if !ok || !validQueueName(name) {
		return d, fmt.Errorf("config: invalid --dest-history-reply %q: want a user queue, %s", c.DestHistoryReply, q)
	}
	d.HistoryReply = name
	return d, nil
}

// validQueueName is chat's rule for a user queue's name.
func validQueueName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, seg := range strings.Split(s, ".") {
		if seg == "" {
			return false
		}
	}
	return true
}

// validateLeaf checks --leaf-remote and what goes with it.
func (c Config) validateLeaf() error {
	if c.LeafRemotes == "" {
		for name, v := range map[string]string{"--leaf-creds": c.LeafCreds, "--leaf-ca": c.LeafCA} {
			if v != "" {
				return fmt.Errorf("config: %s applies to a leaf node and needs --leaf-remote", name)
			}
		}
		if c.NATSJSDomain != "" && c.NATSURL == "" {
			return errors.New("config: --nats-js-domain names another NATS's JetStream and needs --leaf-remote or --nats-url")
		}
		return nil
	}
	if c.NATSURL != "" {
		return errors.New("config: --leaf-remote applies to the embedded server and cannot be used with --nats-url")
	}
	if c.NATSJSDomain == "" {
		return errors.New("config: --leaf-remote needs --nats-js-domain: the JetStream domain of the NATS it joins, where chatd keeps its stream and buckets")
	}
	for _, u := range strings.Split(c.LeafRemotes, ",") {
		if err := checkLeafURL(strings.TrimSpace(u)); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, path string }{{"--leaf-creds", c.LeafCreds}, {"--leaf-ca", c.LeafCA}} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				return fmt.Errorf("config: invalid %s: %w", f.name, err)
			}
		}
	}
	return nil
}

func checkLeafURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("config: invalid --leaf-remote %q: %v", s, err)
	}
	switch u.Scheme {
	case "nats-leaf", "nats", "tls":
	default:
		return fmt.Errorf("config: invalid --leaf-remote %q: scheme must be nats-leaf, nats or tls", s)
	}
	if u.Host == "" {
		return fmt.Errorf("config: invalid --leaf-remote %q: no host", s)
	}
	return nil
}

// validateNATSAuth checks the credentials and TLS files for --nats-url.
func (c Config) validateNATSAuth() error {
	set := map[string]string{"--nats-creds": c.NATSCreds, "--nats-nkey": c.NATSNkey, "--nats-user": c.NATSUser,
		"--nats-password": c.NATSPassword, "--nats-ca": c.NATSCA, "--nats-tls-cert": c.NATSTLSCert, "--nats-tls-key": c.NATSTLSKey}
	for _, name := range slices.Sorted(maps.Keys(set)) {
		if set[name] != "" && c.NATSURL == "" {
			return fmt.Errorf("config: %s applies to an external NATS and needs --nats-url", name)
		}
	}
	switch {
	case c.NATSCreds != "" && c.NATSNkey != "":
		return errors.New("config: --nats-creds and --nats-nkey cannot be used together: a .creds file holds its own nkey seed")
	case (c.NATSCreds != "" || c.NATSNkey != "") && c.NATSUser != "":
		return errors.New("config: --nats-user cannot be used with --nats-creds or --nats-nkey: NATS takes one kind of credentials")
	case c.NATSUser == "" && c.NATSPassword != "":
		return errors.New("config: --nats-password needs --nats-user")
	}
	for _, f := range []struct{ name, path string }{{"--nats-creds", c.NATSCreds}, {"--nats-nkey", c.NATSNkey}, {"--nats-ca", c.NATSCA}} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				return fmt.Errorf("config: invalid %s: %w", f.name, err)
			}
		}
	}
	return checkKeyPair("--nats-tls-cert", "--nats-tls-key", c.NATSTLSCert, c.NATSTLSKey)
}

// validateClusterSecurity checks route security: a node that routes
// needs TLS or credentials unless told --insecure-cluster (or --dev).
func (c Config) validateClusterSecurity() error {
	tlsSet := c.ClusterTLSCert != "" || c.ClusterTLSKey != "" || c.ClusterTLSCA != ""
	userSet := c.ClusterUser != "" || c.ClusterPassword != ""
	if c.ClusterListen == "" {
		if tlsSet || userSet {
			return errors.New("config: --cluster-tls-* and --cluster-user/--cluster-password secure cluster routes and need --cluster")
		}
		return nil
	}
	if tlsSet {
		if c.ClusterTLSCA == "" {
			return errors.New("config: --cluster-tls-cert needs --cluster-tls-ca: peers verify each other's certificates against it")
		}
		if c.ClusterTLSCert == "" {
			return errors.New("config: --cluster-tls-ca needs --cluster-tls-cert and --cluster-tls-key: this node shows its peers a certificate too")
		}
		if err := checkKeyPair("--cluster-tls-cert", "--cluster-tls-key", c.ClusterTLSCert, c.ClusterTLSKey); err != nil {
			return err
		}
		if err := checkCAFile("--cluster-tls-ca", c.ClusterTLSCA); err != nil {
			return err
		}
	}
	if userSet {
		switch {
		case c.ClusterUser == "" || c.ClusterPassword == "":
			return errors.New("config: --cluster-user and --cluster-password go together")
		case strings.ContainsAny(c.ClusterUser, ":@/ \t"):
			return fmt.Errorf("config: invalid --cluster-user %q: no : @ / or spaces", c.ClusterUser)
		}
	}
	if !tlsSet && !userSet && !c.InsecureCluster && !c.Dev {
		return errors.New("config: --cluster without route security lets anyone who reaches the route port join the cluster and read every room: " +
			"set --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca, and/or --cluster-user and --cluster-password, " +
			"or --insecure-cluster to accept that")
	}
	return nil
}

// checkKeyPair checks a certificate and key given together, and that
// they load as a pair.
func checkKeyPair(certFlag, keyFlag, cert, key string) error {
	switch {
	case cert == "" && key == "":
		return nil
	case cert == "":
		return fmt.Errorf("config: %s needs %s", keyFlag, certFlag)
	case key == "":
		return fmt.Errorf("config: %s needs %s", certFlag, keyFlag)
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		return fmt.Errorf("config: invalid %s/%s: %w", certFlag, keyFlag, err)
	}
	return nil
}

// checkCAFile checks that a file holds at least one PEM certificate.
func checkCAFile(flagName, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: invalid %s: %w", flagName, err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return fmt.Errorf("config: invalid %s %s: no PEM certificate in it", flagName, path)
	}
	return nil
}

// parsePrefix reads a CIDR, or one address as a prefix of its own.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q: want a CIDR such as 10.0.0.0/8 or an address", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want a CIDR such as 10.0.0.0/8 or an address", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
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

func checkRouteURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "nats-route" && u.Scheme != "nats" || u.Host == "" {
		return fmt.Errorf("config: invalid --routes entry %q: want nats-route://host:port", s)
	}
	return checkHostPort("--routes", u.Host)
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
