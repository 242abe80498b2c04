// Package app assembles a chatd node: NATS and JetStream, storage, the chat
// service, the STOMP-over-WebSocket server and the HTTP endpoints.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/postgres"
	"github.com/chatd/chatd/web"
)

// App is a running chatd node.
type App struct {
	cfg   config.Config
	log   *slog.Logger
	bus   *natsbus.Bus
	store storage.Store
	// commit is group commit on the publish path, closed after chat.
	commit *natsbus.Committer
	chat   *chat.Service
	// verify checks the HTTP API's bearer tokens.
	verify tokenVerifier
	stomp  *stompws.Server
	http   *http.Server
	ln     net.Listener
	serve  chan error
	// metrics is this node's own Prometheus registry, served at /metrics.
	metrics *metrics
	// draining is set when shutdown begins: /readyz turns 503 at once.
	draining atomic.Bool
	// pprof serves net/http/pprof on --pprof; nil when off.
	pprof   *http.Server
	pprofLn net.Listener
	// pg and stopArchiver are set with --postgres-url (storage.go).
	pg           *postgres.DB
	stopArchiver func()
}

// Start brings a node up: it returns once the node is ready to serve.
func Start(ctx context.Context, cfg config.Config, version string, log *slog.Logger) (*App, error) {
	name := cfg.ServerName
	if name == "" {
		name, _ = os.Hostname()
	}
	a := &App{cfg: cfg, log: log, serve: make(chan error, 1), metrics: newMetrics(name, version)}
	if cfg.Dev {
		log.Warn("DEV MODE: the CONNECT login header is trusted as the user id and rooms are joined on first use; " +
			"never expose this server to untrusted users")
		if cfg.JWTSecret != "" || cfg.JWTPublicKey != "" || cfg.JWTJWKS != "" {
			log.Warn("DEV MODE: --jwt-secret, --jwt-public-key and --jwt-jwks are ignored")
		}
	}
	durability := natsbus.Durability(cfg.Durability)
	bus, err := natsbus.Start(ctx, natsbus.Options{
		URL:           cfg.NATSURL,
		Durability:    durability,
		DataDir:       cfg.DataDir,
		ServerName:    name,
		ClientListen:  cfg.NATSListen,
		ClusterName:   cfg.ClusterName,
		ClusterListen: cfg.ClusterListen,
		Routes:        cfg.Routes,
		ClientName:    "chatd " + name,
		Logger:        log,
	})
	if err != nil {
		return nil, err
	}
	a.bus = bus
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = 1
		if bus.ClusterSize(cfg.ClusterListen, cfg.Routes) >= 3 {
			replicas = 3
		}
	}
	log.Info("JetStream replicas", "replicas", replicas)
	fail := func(err error) (*App, error) {
		a.closeBackends(context.Background())
		return nil, err
	}
	msgs, err := bus.OpenMessageLog(ctx, natsbus.LogConfig{
		Replicas:        replicas,
		MaxAge:          cfg.HistoryMaxAge,
		MaxPerRoom:      cfg.HistoryMaxPerRoom,
		DuplicateWindow: cfg.DedupeWindow,
		MaxMsgSize:      int32(cfg.MaxFrameSize + 4096),
		Durability:      durability,
	})
	if err != nil {
		return fail(err)
	}
	logDurability(log, durability, replicas, bus.Embedded())
	a.commit = msgs.NewCommitter(a.metrics)
	store, archive, err := a.openStore(ctx, replicas)
	if err != nil {
		return fail(err)
	}
	a.store = store
	authn, err := authenticator(cfg, log)
	if err != nil {
		return fail(err)
	}
	a.verify = authn
	a.chat = chat.NewService(bus, msgs, a.commit, store, authn, chat.Config{AutoJoin: cfg.Dev, Logger: log, Metrics: a.metrics, Archive: archive})

	sc := stompws.DefaultConfig()
	sc.Limits.MaxFrameSize = cfg.MaxFrameSize
	sc.MaxSubscriptions = cfg.MaxSubscriptions
	sc.HeartBeatSend, sc.HeartBeatRecv = cfg.HeartBeat, cfg.HeartBeat
	if cfg.HeartBeat == 0 {
		sc.HeartBeatSend, sc.HeartBeatRecv = -1, -1 // --heartbeat 0: off
	}
	sc.HeartBeatGrace = cfg.HeartBeatGrace
	sc.ConnectTimeout = cfg.ConnectTimeout
	sc.OriginPatterns = cfg.AllowedOrigins
	if !cfg.Dev {
		// Dev mode's users are whoever they say they are, and benchmarks
		// drive it flat out: per-user and per-session limits mean nothing there.
		sc.SendRate, sc.SendBurst = cfg.SendRate, cfg.SendBurst
		sc.MaxSessionsPerUser = cfg.MaxConnectionsPerUser
	}
	sc.ServerName = "chatd/" + version
	sc.Logger = log
	sc.Observer = a.metrics
	a.stomp = stompws.NewServer(sc, a.chat)

	mux := http.NewServeMux()
	mux.Handle("GET /ws", a.stomp)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", a.ready)
	a.apiRoutes(mux)
	mux.Handle("GET /metrics", a.metrics.handler())
	mux.Handle("GET /", web.Handler())
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fail(fmt.Errorf("listen on --http %s: %w", cfg.HTTPAddr, err))
	}
	a.ln = ln
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { a.serve <- a.http.Serve(ln) }()
	if cfg.PprofAddr != "" {
		if a.pprof, a.pprofLn, err = startPprof(cfg.PprofAddr, log); err != nil {
			_ = a.http.Close()
			return fail(err)
		}
	}
	log.Info("chatd ready", "http", ln.Addr().String(), "websocket", "ws://"+ln.Addr().String()+"/ws",
		"page", "http://"+ln.Addr().String()+"/",
		"node", name, "nats", natsMode(cfg), "version", version)
	return a, nil
}

// authenticator is dev mode's trusted login header, or JWT verification.
func authenticator(cfg config.Config, log *slog.Logger) (sessionAuth, error) {
	if cfg.Dev {
		return chat.DevAuthenticator{}, nil
	}
	ac := auth.Config{
		Secret:    []byte(cfg.JWTSecret),
		Issuer:    cfg.JWTIssuer,
		Audience:  cfg.JWTAudience,
		UserClaim: cfg.JWTUserClaim,
		Cookie:    cfg.JWTCookie,
		ValidUser: chat.ValidUserID,
		Logger:    log,
	}
	if cfg.JWTPublicKey != "" {
		key, err := auth.LoadPublicKey(cfg.JWTPublicKey)
		if err != nil {
			return nil, fmt.Errorf("--jwt-public-key: %w", err)
		}
		ac.PublicKeyPEM = key
	}
	if cfg.JWTJWKS != "" {
		set, err := auth.LoadJWKS(cfg.JWTJWKS)
		if err != nil {
			return nil, fmt.Errorf("--jwt-jwks: %w", err)
		}
		ac.JWKS = set
	}
	j, err := auth.New(ac)
	if err != nil {
		return nil, fmt.Errorf("JWT authentication (--jwt-secret, --jwt-public-key, --jwt-jwks): %w", err)
	}
	return j, nil
}

// logDurability says at start what a RECEIPT means on this node. An
// external NATS decides for itself when it syncs, and no client can see
// that setting: chatd says what the operator must configure rather than
// claim fsync.
func logDurability(log *slog.Logger, d natsbus.Durability, replicas int, embedded bool) {
	var means string
	switch d {
	case natsbus.DurabilityFsync:
		means = "a RECEIPT waits until the message is on disk on every replica that acknowledged it"
	case natsbus.DurabilityReplicated:
		means = "a RECEIPT waits until a quorum of replicas holds the message in memory; disks sync on NATS's sync_interval (2 minutes by default)"
	case natsbus.DurabilityFast:
		means = "a RECEIPT waits until the one replica holds the message in memory; it is written out within milliseconds"
	}
	if embedded || d != natsbus.DurabilityFsync {
		log.Info("durability", "durability", string(d), "replicas", replicas, "means", means)
		return
	}
	log.Warn("durability fsync is not verified: chatd cannot see when an external NATS server syncs. "+
		"A RECEIPT means on disk only if every JetStream server runs with `jetstream { sync_interval: always }`; "+
		"otherwise it means what --durability replicated means (docs/operations.md, Durability)",
		"durability", string(d), "replicas", replicas)
}

func natsMode(cfg config.Config) string {
	if cfg.NATSURL != "" {
		return "external " + cfg.NATSURL
	}
	return "embedded, data in " + cfg.DataDir
}

func (a *App) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.draining.Load() {
		// Load balancers stop sending new clients here while sessions go.
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
		return
	}
	if err := a.bus.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Addr is the HTTP listen address (useful with port 0).
func (a *App) Addr() string { return a.ln.Addr().String() }

// RoomMessagesReceived is how many room messages this node took from NATS
// for its own subscribers (interest-based fan-out keeps it at zero for
// rooms nobody on this node watches).
func (a *App) RoomMessagesReceived() uint64 { return a.chat.LiveReceived() }

// Members lists the users in a room as this node knows them.
func (a *App) Members(ctx context.Context, room string) ([]string, error) {
	ms, err := a.store.Members(ctx, room)
	if err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	users := make([]string, len(ms))
	for i, m := range ms {
		users[i] = m.User
	}
	return users, nil
}

// AddMember makes user a plain member of room straight in storage, as a
// backend writing to the CHAT_MEMBERS bucket would, bypassing the rooms
// API's checks (outside dev mode rooms are not joined on use).
func (a *App) AddMember(ctx context.Context, room, user string) error {
	if _, err := a.store.Join(ctx, room, user, storage.RoleMember); err != nil {
		return fmt.Errorf("add member: %w", err)
	}
	return nil
}

// RemoveMember ends user's membership of room; the user's live
// subscriptions to the room end at once, on every node.
func (a *App) RemoveMember(ctx context.Context, room, user string) error {
	if err := a.store.Leave(ctx, room, user); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	return nil
}

// Sessions is the number of open STOMP sessions.
func (a *App) Sessions() int { return a.stomp.Sessions() }

// PprofAddr is the --pprof listen address, or "" when profiling is off.
func (a *App) PprofAddr() string {
	if a.pprofLn == nil {
		return ""
	}
	return a.pprofLn.Addr().String()
}

// Done reports the HTTP server stopping on its own.
func (a *App) Done() <-chan error { return a.serve }

// Shutdown stops accepting connections, tells every session to go (ERROR,
// then WebSocket close 1012, which STOMP clients treat as "reconnect"),
// waits for stored work, and stops NATS, which flushes JetStream.
func (a *App) Shutdown(ctx context.Context) error {
	a.draining.Store(true)
	a.log.Info("shutting down", "sessions", a.stomp.Sessions())
	var errs []error
	if a.pprof != nil {
		_ = a.pprof.Close() // a profile in progress is cut short
	}
	if err := a.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := a.stomp.Shutdown(ctx, "server shutting down, reconnect"); err != nil {
		errs = append(errs, err)
	}
	a.chat.Close()
	errs = append(errs, a.closeBackends(ctx))
	a.log.Info("shutdown complete")
	return errors.Join(errs...)
}

func (a *App) closeBackends(ctx context.Context) error {
	var errs []error
	if a.commit != nil {
		// Sessions are gone: what they sent is stored before NATS stops.
		errs = append(errs, a.commit.Close(ctx))
	}
	if a.stopArchiver != nil {
		a.stopArchiver() // it uses the store's pool and the bus
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	if a.pg != nil {
		a.pg.Close()
	}
	if a.bus != nil {
		errs = append(errs, a.bus.Close(ctx))
	}
	return errors.Join(errs...)
}
