// Package node is chatd's composition root: it builds one node from a
// configuration (NATS and JetStream, storage, the chat domain, the STOMP
// and HTTP adapters, metrics) and serves it: the WebSocket endpoint, the
// HTTP API, the chat page, health, metrics and pprof. It holds no logic of
// its own beyond wiring, start-up order and shutdown order.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/archiver"
	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/httpapi"
	"github.com/chatd/chatd/internal/certreload"
	"github.com/chatd/chatd/metrics"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompapi"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/chatd/chatd/storage/postgres"
	"github.com/chatd/chatd/storage/workingset"
	"github.com/chatd/chatd/web"
)

// Node is a running chatd node.
type Node struct {
	cfg   config.Config
	log   *slog.Logger
	bus   *natsbus.Bus
	store interface {
		Close() error
		WorkingSet() workingset.Stats
	}
	// commit is group commit on the publish path, closed after chat.
	commit *natsbus.Committer
	chat   *chat.Service
	stomp  *stompapi.Handler
	server *stompws.Server
	http   *http.Server
	ln     net.Listener
	serve  chan error
	// metrics is this node's own Prometheus registry, served at /metrics.
	metrics *metrics.Metrics
	// draining is set when shutdown begins: /readyz turns 503 at once.
	draining atomic.Bool
	// pprof serves net/http/pprof on --pprof; nil when off.
	pprof *http.Server
	// pg and stopArchiver are set with --postgres-url (openStore).
	pg           *postgres.DB
	stopArchiver func()
	// jwt is set outside dev mode; closing it stops the JWKS refreshes.
	jwt *auth.JWT
	// certs serves --tls-cert; nil without TLS. stopCerts ends its watch.
	certs     *certreload.Reloader
	stopCerts context.CancelFunc
}

// certCheckEvery is how often --tls-cert and --tls-key are checked for a
// new pair: a renewal is taken within seconds, without a SIGHUP.
const certCheckEvery = 2 * time.Second

// authenticator authenticates both STOMP sessions and HTTP API requests.
type authenticator interface {
	stompapi.Authenticator
	httpapi.Verifier
}

// Start brings a node up: it returns once the node is ready to serve.
func Start(ctx context.Context, cfg config.Config, version string, log *slog.Logger) (*Node, error) {
	name := cfg.ServerName
	if name == "" {
		name, _ = os.Hostname()
	}
	n := &Node{cfg: cfg, log: log, serve: make(chan error, 1), metrics: metrics.New(name, version)}
	if cfg.Dev {
		log.Warn("DEV MODE: the CONNECT login header is trusted as the user id and rooms are joined on first use; " +
			"never expose this server to untrusted users")
		if cfg.JWTSecret != "" || cfg.JWTPublicKey != "" || cfg.JWTJWKS != "" || cfg.JWTJWKSURL != "" {
			log.Warn("DEV MODE: --jwt-secret, --jwt-public-key, --jwt-jwks and --jwt-jwks-url are ignored")
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
		Prefix:        cfg.NATSPrefix,
		Partitions:    cfg.Partitions,

		ClusterTLSCert: cfg.ClusterTLSCert, ClusterTLSKey: cfg.ClusterTLSKey, ClusterTLSCA: cfg.ClusterTLSCA,
		ClusterUser: cfg.ClusterUser, ClusterPassword: cfg.ClusterPassword,
		Auth: natsbus.ExternalAuth{
			CredsFile: cfg.NATSCreds, NkeyFile: cfg.NATSNkey, User: cfg.NATSUser, Password: cfg.NATSPassword,
			CAFile: cfg.NATSCA, CertFile: cfg.NATSTLSCert, KeyFile: cfg.NATSTLSKey,
		},
		LeafRemotes: leafRemotes(cfg.LeafRemotes), LeafCreds: cfg.LeafCreds, LeafCA: cfg.LeafCA,
		JSDomain: cfg.NATSJSDomain,
	})
	if natsbus.IsAuthError(err) {
		return nil, fmt.Errorf("%w: check --nats-creds, --nats-nkey, or --nats-user and --nats-password (or the user and password in --nats-url)", err)
	}
	if err != nil {
		return nil, err
	}
	if cfg.ClusterListen != "" && cfg.ClusterTLSCert == "" && cfg.ClusterUser == "" {
		log.Warn("INSECURE CLUSTER: routes have neither TLS nor credentials; anyone who reaches --cluster " + cfg.ClusterListen +
			" joins the cluster and reads every room (docs/operations.md, Securing chatd)")
	}
	n.bus = bus
	n.metrics.WatchReplica(bus.MessagesReplica)
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = 1
		if bus.ClusterSize(cfg.ClusterListen, cfg.Routes) >= 3 {
			replicas = 3
		}
	}
	log.Info("JetStream replicas", "replicas", replicas)
	fail := func(err error) (*Node, error) {
		_ = n.closeBackends(context.Background()) // the start error says what went wrong
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
	n.commit = msgs.NewCommitter(n.metrics)
	store, archive, err := n.openStore(ctx, msgs, replicas)
	if err != nil {
		return fail(err)
	}
	authn, err := n.newAuthenticator(ctx)
	if err != nil {
		return fail(err)
	}
	n.chat = chat.NewService(msgs, n.commit, bus, store, chat.Config{
		AutoJoin: cfg.Dev, Logger: log, Metrics: n.metrics, Archive: archive,
		Fields: chat.Fields{
			Text: cfg.MessageFields["text"], ID: cfg.MessageFields["id"], Room: cfg.MessageFields["room"],
			User: cfg.MessageFields["user"], Unread: cfg.MessageFields["unread"], Created: cfg.MessageFields["created"],
		},
		KeepClientFields: cfg.KeepClientFields,
		StoreReads:       cfg.StoreReads,
		ReplayShare:      replayShare(cfg.ReplayShareMiB),
		FlushWindow:      cfg.FlushWindow,
	})
	dests, err := cfg.Destinations()
	if err != nil {
		return fail(err)
	}
	n.stomp = stompapi.New(n.chat, authn, dests, log)
	n.server = stompws.NewServer(stompConfig(cfg, version, log, n.metrics), n.stomp)

	mux := http.NewServeMux()
	// The raw WebSocket at --ws-path, and at --ws-path/websocket as
	// Spring's SockJS endpoints serve it; SockJS's transports under it.
	mux.Handle("GET "+cfg.WSPath, n.server)
	if cfg.SockJS {
		mux.Handle("GET "+cfg.WSPath+"/websocket", n.server)
		sj := n.server.SockJS(cfg.WSPath, stompws.SockJSOptions{})
		for _, m := range []string{"GET", "POST", "OPTIONS"} {
			mux.Handle(m+" "+cfg.WSPath+"/", sj)
		}
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", n.ready)
	httpapi.New(n.chat, authn, log).Routes(mux)
	mux.Handle("GET /metrics", n.metrics.Handler())
	mux.Handle("GET /", web.Handler())
	var handler http.Handler = mux
	if len(cfg.TrustedProxies) > 0 {
		handler = forwardedFor(cfg.TrustedProxies, mux)
	}
	n.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if cfg.TLSCert != "" {
		if n.certs, err = certreload.New(cfg.TLSCert, cfg.TLSKey, log); err != nil {
			return fail(fmt.Errorf("--tls-cert, --tls-key: %w", err))
		}
		n.http.TLSConfig = &tls.Config{GetCertificate: n.certs.GetCertificate, MinVersion: tls.VersionTLS12}
		var wctx context.Context
		wctx, n.stopCerts = context.WithCancel(context.Background())
		go n.certs.Watch(wctx, certCheckEvery)
		scheme = "https"
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fail(fmt.Errorf("listen on --http %s: %w", cfg.HTTPAddr, err))
	}
	n.ln = ln
	if n.certs != nil {
		go func() { n.serve <- n.http.ServeTLS(ln, "", "") }()
	} else {
		go func() { n.serve <- n.http.Serve(ln) }()
	}
	if cfg.PprofAddr != "" {
		if n.pprof, err = startPprof(cfg.PprofAddr, log); err != nil {
			_ = n.http.Close()
			return fail(err)
		}
	}
	ws := map[string]string{"http": "ws", "https": "wss"}[scheme]
	log.Info("chatd ready", "http", ln.Addr().String(), "websocket", ws+"://"+ln.Addr().String()+cfg.WSPath, "sockjs", cfg.SockJS,
		"page", scheme+"://"+ln.Addr().String()+"/", "tls", n.certs != nil,
		"node", name, "nats", natsMode(cfg), "nats_prefix", cfg.NATSPrefix, "version", version)
	return n, nil
}

// stompConfig is the STOMP server's configuration from chatd's.
func stompConfig(cfg config.Config, version string, log *slog.Logger, obs stompws.Observer) stompws.Config {
	sc := stompws.DefaultConfig()
	sc.Limits.MaxFrameSize = cfg.MaxFrameSize
	sc.MaxSubscriptions = cfg.MaxSubscriptions
	sc.HeartBeat, sc.HeartBeatMin = cfg.HeartBeat, cfg.HeartBeatMin
	if cfg.HeartBeat == 0 {
		sc.HeartBeat = -1 // --heartbeat 0: off
	}
	sc.HeartBeatGrace = cfg.HeartBeatGrace
	sc.ConnectTimeout = cfg.ConnectTimeout
	sc.WriteStallMax = cfg.WriteStallMax
	if cfg.WriteStallMax == 0 {
		sc.WriteStallMax = -1 // --write-stall-max 0: no write waits past WriteTimeout
	}
	sc.OriginPatterns = cfg.AllowedOrigins
	if !cfg.Dev {
		// Dev mode's users are whoever they say they are, and benchmarks
		// drive it flat out: per-user and per-session limits mean nothing there.
		sc.SendRate, sc.SendBurst = cfg.SendRate, cfg.SendBurst
		sc.MaxSessionsPerUser = cfg.MaxConnectionsPerUser
	}
	sc.ServerName = "chatd/" + version
	sc.Logger = log
	sc.Observer = obs
	return sc
}

// openStore opens where rooms, memberships and read positions live: with
// --postgres-url, PostgreSQL, with the message archive and its archiver;
// else JetStream KV alone, and no archive.
func (n *Node) openStore(ctx context.Context, msgs *natsbus.MessageLog, replicas int) (chat.Store, chat.Archive, error) {
	store, archive, err := n.openBackend(ctx, msgs, replicas)
	if err != nil {
		return nil, nil, err
	}
	n.metrics.WatchWorkingSet(func() (int, int, uint64, uint64) {
		st := n.store.WorkingSet()
		return st.Rooms, st.Entries, st.Loads, st.Evictions
	})
	return store, archive, nil
}

// openBackend is openStore's choice of backend.
func (n *Node) openBackend(ctx context.Context, msgs *natsbus.MessageLog, replicas int) (chat.Store, chat.Archive, error) {
	kv := kvstore.Config{Replicas: replicas, WorkingSet: n.cfg.WorkingSet, Logger: n.log}
	if n.cfg.PostgresURL == "" {
		s, err := kvstore.Open(ctx, n.bus, kv)
		if err != nil {
			return nil, nil, err
		}
		n.store = s
		return s, nil, nil
	}
	db, err := postgres.Open(ctx, postgres.Options{URL: n.cfg.PostgresURL, Logger: n.log})
	if err != nil {
		return nil, nil, fmt.Errorf("--postgres-url: %w", err)
	}
	n.pg = db
	if err := n.importReadMarks(ctx, db, kv); err != nil {
		return nil, nil, fmt.Errorf("--postgres-url: %w", err)
	}
	store, err := postgres.NewStore(ctx, db, n.cfg.WorkingSet)
	if err != nil {
		return nil, nil, fmt.Errorf("--postgres-url: %w", err)
	}
	n.store = store
	ar, err := archiver.New(ctx, db.Archive(), msgs, archiver.Config{Logger: n.log})
	if err != nil {
		return nil, nil, err
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ar.Run(actx)
	}()
	n.stopArchiver = func() {
		cancel()
		<-done
	}
	n.metrics.WatchArchive(ar)
	n.metrics.WatchPostgres(store)
	n.log.Info("rooms, memberships and read positions in PostgreSQL; every message archived there")
	return store, ar, nil
}

// readsImport names the import of read positions from JetStream KV, where
// chatd kept them with --postgres-url before it kept them in PostgreSQL.
const readsImport = "read positions from JetStream KV"

// importReadMarks moves the read positions of a deployment that kept them
// in JetStream KV into PostgreSQL, once; the buckets stay as they were.
func (n *Node) importReadMarks(ctx context.Context, db *postgres.DB, kv kvstore.Config) error {
	var buckets, read int
	var said time.Time
	rows, skipped, done, err := db.ImportReadPositions(ctx, readsImport, func(fn func(room, user string, pos uint64) error) error {
		var err error
		buckets, err = kvstore.EachReadMark(ctx, n.bus, kv, func(room, user string, pos uint64) error {
			// A large deployment's copy takes a while, before the node is ready.
			if read++; read == 1 || time.Since(said) >= 10*time.Second {
				n.log.Info("copying read positions from JetStream KV to PostgreSQL, once; the node is ready when done", "read", read)
				said = time.Now()
			}
			return fn(room, user, pos)
		})
		return err
	})
	if err != nil {
		return err
	}
	if done && buckets > 0 {
		n.log.Info("read positions moved from JetStream KV to PostgreSQL; the KV buckets are no longer used",
			"positions", rows, "skipped", skipped, "buckets", buckets)
	}
	return nil
}

// newAuthenticator is dev mode's trusted login header, or JWT verification
// (which fetches --jwt-jwks-url, within ctx).
func (n *Node) newAuthenticator(ctx context.Context) (authenticator, error) {
	cfg := n.cfg
	if cfg.Dev {
		return auth.Dev{ValidUser: chat.ValidUserID, Rule: chat.UserIDRule}, nil
	}
	ac := auth.Config{
		Secret:        []byte(cfg.JWTSecret),
		Issuer:        cfg.JWTIssuer,
		Audience:      cfg.JWTAudience,
		UserClaim:     cfg.JWTUserClaim,
		Cookie:        cfg.JWTCookie,
		ConnectHeader: cfg.JWTHeader,
		ValidUser:     chat.ValidUserID,
		Logger:        n.log,
		JWKSURL:       cfg.JWTJWKSURL,
		JWKSRefresh:   cfg.JWTJWKSRefresh,
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
	j, err := auth.New(ctx, ac)
	if err != nil {
		return nil, fmt.Errorf("JWT authentication (--jwt-secret, --jwt-public-key, --jwt-jwks, --jwt-jwks-url): %w", err)
	}
	n.jwt = j
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
		urls := strings.Split(cfg.NATSURL, ",")
		for i, u := range urls {
			if pu, err := url.Parse(strings.TrimSpace(u)); err == nil {
				urls[i] = pu.Redacted() // a password in the URL stays out of the logs
			}
		}
		return "external " + strings.Join(urls, ",")
	}
	return "embedded, data in " + cfg.DataDir
}

func (n *Node) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if n.draining.Load() {
		// Load balancers stop sending new clients here while sessions go.
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
		return
	}
	if err := n.bus.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// Addr is the HTTP listen address (useful with port 0).
func (n *Node) Addr() string { return n.ln.Addr().String() }

// Done reports the HTTP server stopping on its own.
func (n *Node) Done() <-chan error { return n.serve }

// Shutdown stops accepting connections, tells every session to go (ERROR,
// then WebSocket close 1012, which STOMP clients treat as "reconnect"),
// waits for stored work, and stops NATS, which flushes JetStream.
func (n *Node) Shutdown(ctx context.Context) error {
	n.draining.Store(true)
	n.log.Info("shutting down", "sessions", n.server.Sessions())
	var errs []error
	if n.pprof != nil {
		_ = n.pprof.Close() // a profile in progress is cut short
	}
	if err := n.http.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := n.server.Shutdown(ctx, "server shutting down, reconnect"); err != nil {
		errs = append(errs, err)
	}
	n.stomp.Close()
	n.chat.Close()
	errs = append(errs, n.closeBackends(ctx))
	n.log.Info("shutdown complete")
	return errors.Join(errs...)
}

// ReloadTLS loads --tls-cert and --tls-key again (chatd's SIGHUP); a pair
// that does not load is logged and the one in use stays. Without TLS it
// does nothing.
func (n *Node) ReloadTLS() error {
	if n.certs == nil {
		return nil
	}
	return n.certs.Reload()
}

func (n *Node) closeBackends(ctx context.Context) error {
	var errs []error
	if n.stopCerts != nil {
		n.stopCerts()
	}
	if n.commit != nil {
		// Sessions are gone: what they sent is stored before NATS stops.
		errs = append(errs, n.commit.Close(ctx))
	}
	if n.jwt != nil {
		n.jwt.Close()
	}
	if n.stopArchiver != nil {
		n.stopArchiver() // it uses the store's pool and the bus
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	if n.pg != nil {
		n.pg.Close()
	}
	if n.bus != nil {
		errs = append(errs, n.bus.Close(ctx))
	}
	return errors.Join(errs...)
}

// leafRemotes splits --leaf-remote's comma-separated URLs.
func leafRemotes(s string) []string {
	var out []string
	for u := range strings.SplitSeq(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// replayShare is chat.Config.ReplayShare for --replay-share MiB: 0 turns
// the sharing off, which chat spells negative.
func replayShare(mib int) int64 {
	if mib == 0 {
		return -1
	}
	return int64(mib) << 20
}
