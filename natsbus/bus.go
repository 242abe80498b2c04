// Package natsbus is chatd's only door to NATS: it runs the embedded server
// (with JetStream) or connects to an external NATS, and offers what the rest
// of chatd needs of it in NATS-free terms:
//
//   - the message log (messagelog.go): the JetStream stream of room
//     messages, its reads, and group commit on its writes (commit.go);
//   - live delivery (live.go): a room's messages as they are stored, user
//     queues and read events, one NATS subscription per watch;
//   - KV buckets (kv.go) for the storage backends;
//   - a durable consumer of the stream (consumer.go) for the archiver;
//   - the subjects and names of all of these (subjects.go), which are part
//     of chatd's contract with backend services.
//
// No other package imports nats.go or nats-server.
package natsbus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options selects an embedded NATS server or an external one.
type Options struct {
	// URL, when set, connects to an existing NATS deployment (comma-separated
	// URLs for a cluster) instead of embedding a server.
	URL string
	// DataDir holds the embedded server's JetStream store.
	DataDir string
	// ServerName names the embedded server; it must be unique in a cluster.
	ServerName string
	// ClientListen is "host:port" for the embedded server's client port. Empty
	// means no client port at all: chatd talks to it in-process, and the
	// machine's port 4222 (often an existing NATS) is left alone.
	ClientListen string
	// ClusterName, ClusterListen and Routes make the embedded server one
	// node of a NATS cluster with clustered JetStream: ClusterListen is this
	// node's route address, Routes the peers' (nats-route://host:port; this
	// node's own address may be among them).
	ClusterName   string
	ClusterListen string
	Routes        []string
	// ClusterTLSCert, ClusterTLSKey and ClusterTLSCA make every route TLS,
	// each side verifying the other's certificate against the CA.
	ClusterTLSCert string
	ClusterTLSKey  string
	ClusterTLSCA   string
	// ClusterUser and ClusterPassword are given on the routes this node
	// makes and required on those it accepts.
	ClusterUser     string
	ClusterPassword string
	// Auth authenticates to an external NATS (URL).
	Auth ExternalAuth
	// LeafRemotes, when set, make the embedded server a leaf node of an
	// existing NATS (URLs of its leaf node port) that keeps no JetStream
	// of its own: chatd's stream and buckets live in the hub's, in domain
	// JSDomain. LeafCreds and LeafCA secure the leaf connection.
	LeafRemotes []string
	LeafCreds   string
	LeafCA      string
	// JSDomain is the JetStream domain of chatd's stream and buckets
	// (empty: the connection's own JetStream).
	JSDomain string
	// Durability fsync makes an embedded cluster node sync every JetStream
	// write before acknowledging it (nats-server's sync_interval: always).
	// One embedded server that is not clustered does not sync: chatd syncs
	// the stream's files itself once per group commit (Bus.Sync). An
	// external NATS syncs as it is configured.
	Durability Durability
	// ClientName is sent to NATS to identify this connection.
	ClientName string
	Logger     *slog.Logger
	// Prefix names this deployment's subjects, stream and buckets (Names;
	// default DefaultPrefix), so that deployments with different
	// prefixes can share one NATS.
	Prefix string
	// Partitions is how many streams the room messages are spread over
	// (Names.Partition; 0 stands for 1).
	Partitions int

	// jsCheckEvery and jsMinFree override the JetStream guard's defaults
	// (jsGuardEvery, jsGuardMinFree), and leafWait leafWait, in tests.
	jsCheckEvery time.Duration
	jsMinFree    uint64
	leafWait     time.Duration
}

// ExternalAuth is how chatd proves itself to an external NATS, and how it
// checks the server: files are paths, read by nats.go as it connects.
type ExternalAuth struct {
	CredsFile string // a user JWT and its nkey seed
	NkeyFile  string // an nkey seed
	User      string
	Password  string
	CAFile    string // the CA of the servers' certificates
	CertFile  string // a client certificate, with KeyFile
	KeyFile   string
}

func (a ExternalAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	if a.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.NkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(a.NkeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", a.NkeyFile, err)
		}
		opts = append(opts, o)
	}
	if a.User != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}

// IsAuthError reports a NATS server refusing chatd's credentials.
func IsAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// Bus is chatd's connection to NATS and JetStream.
type Bus struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	srv       *server.Server // nil when connected to an external NATS
	clustered bool
	// storeSync syncs the embedded server's writes, where chatd rather
	// than the server does (Options.Durability); nil elsewhere.
	storeSync *storeSync
	// resend tells publishers when an acknowledgement may never come.
	resend *resendSignal
	// jsGuard turns the embedded server's JetStream on again after a full
	// disk turned it off; nil for an external NATS.
	jsGuard *jsGuard
	names   Names
	log     *slog.Logger
	// lanes delivers the watches' messages (live.go, lanes.go).
	lanes *lanes
	// leaf is the embedded server when it is a leaf node (Options.LeafRemotes):
	// it keeps no store, so srv is nil and the store is remote.
	leaf *server.Server
	// apiPrefix begins JetStream API subjects, in the bus's domain.
	apiPrefix string
}

// publishTimeout bounds the wait for one publish's acknowledgement.
const publishTimeout = 10 * time.Second

// Start embeds a NATS server with JetStream, or connects to opts.URL, and
// returns once the connection and JetStream answer.
func Start(ctx context.Context, opts Options) (*Bus, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	names, err := NewNames(prefix)
	if err == nil {
		names, err = names.WithPartitions(max(opts.Partitions, 1))
	}
	if err != nil {
		return nil, fmt.Errorf("NATS names: %w", err)
	}
	b := &Bus{log: log, resend: newResendSignal(), names: names}
	name := opts.ClientName
	if name == "" {
		name = "chatd"
	}
	common := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
			b.resend.fire()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	if opts.URL != "" {
		auth, err := opts.Auth.options()
		if err != nil {
			return nil, err
		}
		nc, err := nats.Connect(opts.URL, append(append(common, auth...), nats.RetryOnFailedConnect(false))...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(opts.URL), err)
		}
		b.nc = nc
	} else if len(opts.LeafRemotes) > 0 {
		srv, err := startLeaf(ctx, opts, log)
		if err != nil {
			return nil, err
		}
		b.leaf = srv
		nc, err := nats.Connect("", append(common, nats.InProcessServer(srv))...)
		if err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("connect in-process to the embedded leaf node: %w", err)
		}
		b.nc = nc
	} else {
		srv, jsCfg, err := startEmbedded(ctx, opts, log)
		if err != nil {
			return nil, err
		}
		b.srv, b.clustered = srv, opts.ClusterListen != ""
		every, minFree := opts.jsCheckEvery, opts.jsMinFree
		if every <= 0 {
			every = jsGuardEvery
		}
		if minFree == 0 {
			minFree = jsGuardMinFree
		}
		b.jsGuard = startJSGuard(srv, jsCfg, jsCfg.StoreDir, !b.clustered, every, minFree, log)
		if opts.Durability == DurabilityFsync && !b.clustered {
			b.storeSync = newStoreSync(srv.JetStreamConfig().StoreDir)
		}
		nc, err := nats.Connect("", append(common, nats.InProcessServer(srv))...)
		if err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("connect in-process to embedded NATS: %w", err)
		}
		b.nc = nc
	}
	if srv := cmp.Or(b.srv, b.leaf); srv != nil && names.Partitions() > 1 {
		// Backends that publish to chat.msg.<room>, as with one partition,
		// reach the room's partition through this node's server.
		src, dst := names.partitionMapping()
		if err := srv.GlobalAccount().AddMapping(src, dst); err != nil {
			b.shutdown()
			return nil, fmt.Errorf("map %s to the partitions: %w", src, err)
		}
	}
	// A publish whose acknowledgement never comes fails after the timeout
	// instead of holding its sender's RECEIPT (and a graceful shutdown)
	// forever; the pending bound is well above what sessions keep in flight.
	jsOpts := []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncTimeout(publishTimeout),
		jetstream.WithPublishAsyncMaxPending(1 << 15),
	}
	var js jetstream.JetStream
	b.apiPrefix = "$JS.API."
	if opts.JSDomain != "" {
		b.apiPrefix = "$JS." + opts.JSDomain + ".API."
		js, err = jetstream.NewWithDomain(b.nc, opts.JSDomain, jsOpts...)
	} else {
		js, err = jetstream.New(b.nc, jsOpts...)
	}
	if err != nil {
		b.shutdown()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.js = js
	if err := b.resend.watchLeaders(b.nc, names.MessagesStreams()); err != nil {
		b.shutdown()
		return nil, fmt.Errorf("watch stream leader elections: %w", err)
	}
	if err := b.waitJetStream(ctx); err != nil {
		b.shutdown()
		return nil, err
	}
	b.lanes = newLanes(log)
	return b, nil
}

// runServer starts a server and returns once it takes connections.
func runServer(ctx context.Context, so *server.Options, sl *serverLog) (*server.Server, error) {
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS: %w", err)
	}
	srv.SetLoggerV2(sl, false, false, false)
	go srv.Start()
	deadline := time.Now().Add(30 * time.Second)
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("embedded NATS start: %w", err)
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			return nil, errors.New("embedded NATS did not become ready within 30s")
		}
	}
	return srv, nil
}

// leafWait bounds how long a leaf node waits for its first connection
// to the hub at start: without it, chatd cannot open its stream.
const leafWait = 30 * time.Second

// startLeaf starts the embedded server as a leaf node of the NATS at
// opts.LeafRemotes, without JetStream: chatd's store is the hub's. It
// returns once the leaf connection is up.
func startLeaf(ctx context.Context, opts Options, log *slog.Logger) (*server.Server, error) {
	remote := &server.RemoteLeafOpts{Credentials: opts.LeafCreds}
	for _, s := range opts.LeafRemotes {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("leaf remote %q: %w", s, err)
		}
		if u.Scheme == "tls" {
			remote.TLS = true
		}
		remote.URLs = append(remote.URLs, u)
	}
	if remote.TLS || opts.LeafCA != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CaFile: opts.LeafCA})
		if err != nil {
			return nil, fmt.Errorf("leaf remote TLS: %w", err)
		}
		// GenTLSConfig puts the CA where a server checks its clients; the
		// leaf connection is a client and checks the hub with it.
		tc.RootCAs = tc.ClientCAs
		remote.TLS, remote.TLSConfig, remote.TLSTimeout = true, tc, 2
	}
	so := &server.Options{
		ServerName: opts.ServerName,
		NoSigs:     true,
		DontListen: opts.ClientListen == "",
		LeafNode:   server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{remote}},
	}
	if opts.ClientListen != "" {
		host, port, err := splitHostPort(opts.ClientListen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS client listen address: %w", err)
		}
		so.Host, so.Port = host, port
	}
	sl := &serverLog{log: log.With("component", "nats-server")}
	srv, err := runServer(ctx, so, sl)
	if err != nil {
		return nil, err
	}
	wait := opts.leafWait
	if wait <= 0 {
		wait = leafWait
	}
	deadline := time.Now().Add(wait)
	for srv.NumLeafNodes() == 0 {
		if err := ctx.Err(); err != nil {
			srv.Shutdown()
			return nil, fmt.Errorf("leaf node start: %w", err)
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			why := "nothing answered"
			if last := sl.lastErr.Load(); last != nil {
				why = "last error: " + *last
			}
			return nil, fmt.Errorf("leaf node: no connection to %s within %s (%s)", redactURLs(strings.Join(opts.LeafRemotes, ",")), wait, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return srv, nil
}

// startEmbedded starts the embedded server; it also returns its
// JetStream configuration as nats-server builds it from the options at
// start, to turn JetStream on again with (jsGuard).
func startEmbedded(ctx context.Context, opts Options, log *slog.Logger) (*server.Server, server.JetStreamConfig, error) {
	var none server.JetStreamConfig
	if opts.DataDir == "" {
		return nil, none, errors.New("embedded NATS needs a data dir")
	}
	storeDir := filepath.Join(opts.DataDir, "jetstream")
	if err := os.MkdirAll(storeDir, 0o750); err != nil {
		return nil, none, fmt.Errorf("create JetStream store dir: %w", err)
	}
	so := &server.Options{
		ServerName: opts.ServerName,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		DontListen: opts.ClientListen == "",
		// Unclustered, chatd syncs itself (storeSync): a one-replica store
		// synced by the server costs a sync per message or 3.5 ms per
		// atomic batch. A clustered node's streams are replicated: the
		// server syncs their Raft log once per proposal.
		SyncAlways: opts.Durability == DurabilityFsync && opts.ClusterListen != "",
	}
	if opts.ClientListen != "" {
		host, port, err := splitHostPort(opts.ClientListen)
		if err != nil {
			return nil, none, fmt.Errorf("embedded NATS client listen address: %w", err)
		}
		so.Host, so.Port = host, port
	}
	if opts.ClusterListen != "" {
		host, port, err := splitHostPort(opts.ClusterListen)
		if err != nil {
			return nil, none, fmt.Errorf("embedded NATS cluster listen address: %w", err)
		}
		if opts.ServerName == "" {
			return nil, none, errors.New("a clustered node needs a unique server name")
		}
		// nats-server starts routing only once its client accept loop runs,
		// so a clustered node needs a client port: loopback and random
		// unless one was asked for, and never advertised to clients.
		so.Cluster = server.ClusterOpts{Name: opts.ClusterName, Host: host, Port: port, NoAdvertise: true,
			Username: opts.ClusterUser, Password: opts.ClusterPassword}
		if opts.ClusterTLSCert != "" {
			// Verify: a peer must show a certificate the CA signed, on the
			// routes it makes to this node as on those this node makes.
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: opts.ClusterTLSCert, KeyFile: opts.ClusterTLSKey,
				CaFile: opts.ClusterTLSCA, Verify: true})
			if err != nil {
				return nil, none, fmt.Errorf("cluster route TLS: %w", err)
			}
			tc.RootCAs = tc.ClientCAs // as nats-server's config file does: routes it makes check the peer too
			so.Cluster.TLSConfig, so.Cluster.TLSTimeout = tc, 2
		}
		// chatd's own connection is drained before lame duck mode starts,
		// so there are no clients to spread out over a long duration.
		so.LameDuckDuration, so.LameDuckGracePeriod = 2*time.Second, time.Second
		so.Routes = server.RoutesFromStr(strings.Join(opts.Routes, ","))
		if opts.ClusterUser != "" {
			// A solicited route gives the credentials in its URL.
			for _, r := range so.Routes {
				if r.User == nil {
					r.User = url.UserPassword(opts.ClusterUser, opts.ClusterPassword)
				}
			}
		}
		if so.DontListen {
			so.DontListen = false
			so.Host, so.Port = "127.0.0.1", server.RANDOM_PORT
		}
	}
	srv, err := runServer(ctx, so, &serverLog{log: log.With("component", "nats-server")})
	if err != nil {
		return nil, none, err
	}
	// As nats-server's own restart of JetStream on a configuration reload.
	jsCfg := server.JetStreamConfig{StoreDir: storeDir, SyncAlways: so.SyncAlways, Strict: true, CompressOK: true}
	return srv, jsCfg, nil
}

// redactURLs hides the passwords of comma-separated URLs, for errors.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// waitJetStream waits until JetStream answers: an embedded server needs a
// moment after it accepts connections, a cluster needs a meta leader.
func (b *Bus) waitJetStream(ctx context.Context) error {
	var last error
	for i := 0; ; i++ {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil || i >= 60 {
			return fmt.Errorf("JetStream not available: %w", last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream not available: %w", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Ready reports whether this node can store and serve messages: NATS is
// connected, JetStream answers (and, embedded, is on with room on its
// disk), and every messages stream, once it exists, has a leader, which it
// lacks while the cluster has lost its majority.
func (b *Bus) Ready(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("nats: %s", b.nc.Status())
	}
	if b.jsGuard != nil {
		if err := b.jsGuard.err(); err != nil {
			return err
		}
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	for _, name := range b.names.MessagesStreams() {
		st, err := b.js.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			continue // not made yet: nothing to store to
		case err != nil:
			return fmt.Errorf("message stream %s: %w", name, err)
		}
		if c := st.CachedInfo().Cluster; c != nil && c.Leader == "" {
			return fmt.Errorf("message stream %s has no leader: its replicas lack a majority", name)
		}
	}
	return nil
}

// Names are this bus's subjects, stream and buckets.
func (b *Bus) Names() Names { return b.names }

// Embedded reports whether this bus runs its own NATS server.
func (b *Bus) Embedded() bool { return b.srv != nil }

// MessagesReplica reports this node's replicas of the messages streams:
// of the partitions, how many it leads (every write goes through a
// stream's leader) and how many of its replicas have caught up with their
// leader and apply its writes. known is false where this node cannot tell
// (an external NATS). A node alone leads every partition and is current
// whenever its JetStream is on.
func (b *Bus) MessagesReplica() (leading, current, partitions int, known bool) {
	partitions = b.names.Partitions()
	if b.srv == nil {
		return 0, 0, partitions, false
	}
	if !b.clustered {
		if b.srv.JetStreamEnabled() {
			return partitions, partitions, partitions, true
		}
		return 0, 0, partitions, true
	}
	acc := b.srv.GlobalAccount().Name
	for _, stream := range b.names.MessagesStreams() {
		if b.srv.JetStreamIsStreamLeader(acc, stream) {
			leading++
		}
		if b.srv.JetStreamIsStreamCurrent(acc, stream) {
			current++
		}
	}
	return leading, current, partitions, true
}

// sync returns once every write to the stream that JetStream acknowledged
// before the call is on disk. Where the acknowledgement already means that
// (a syncing server), or where the durability mode does not ask for it, it
// returns at once. Concurrent calls share syncs.
func (b *Bus) sync(ctx context.Context, stream string) error {
	if b.storeSync == nil {
		return nil
	}
	return b.storeSync.sync(ctx, stream)
}

// flushWait bounds Close's flush: the server is in process, or a round
// trip away.
const flushWait = 5 * time.Second

// Close flushes the connection, so that what was published has reached
// the server, closes it, and stops the embedded server, which flushes the
// JetStream store. It does not drain subscriptions: by the time it is
// called no session is left to deliver to. (nats.go's Drain also waits for
// every subscription to be unsubscribed server-side; on a cluster node
// whose peers had gone it could wait out its timeout.)
func (b *Bus) Close(ctx context.Context) error {
	var err error
	if b.nc != nil && !b.nc.IsClosed() {
		fctx, cancel := context.WithTimeout(ctx, flushWait)
		ferr := b.nc.FlushWithContext(fctx)
		cancel()
		if ferr != nil && !errors.Is(ferr, nats.ErrConnectionClosed) && !errors.Is(ferr, nats.ErrConnectionReconnecting) {
			err = fmt.Errorf("flush NATS connection: %w", ferr)
		}
		b.nc.Close()
	}
	b.lanes.close()
	if b.jsGuard != nil {
		b.jsGuard.close()
	}
	if b.srv != nil {
		if b.clustered {
			// Lame duck mode first hands this node's stream and bucket
			// leaderships to its peers, so they keep accepting writes
			// without waiting out an election timeout.
			b.srv.LameDuckShutdown()
		}
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	if b.leaf != nil {
		b.leaf.Shutdown()
		b.leaf.WaitForShutdown()
	}
	if b.storeSync != nil {
		b.storeSync.close()
	}
	return err
}

func (b *Bus) shutdown() {
	if b.jsGuard != nil {
		b.jsGuard.close()
	}
	if b.nc != nil {
		b.nc.Close()
	}
	for _, srv := range []*server.Server{b.srv, b.leaf} {
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	}
}

// serverLog routes nats-server's log lines to slog.
type serverLog struct {
	log *slog.Logger
	// lastErr is the server's latest error line, for a start that fails.
	lastErr atomic.Pointer[string]
}

func (l *serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.lastErr.Store(&msg)
	l.log.Error(msg)
}
func (l *serverLog) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

// ClusterSize estimates how many NATS servers the cluster has, to choose a
// default replica count: for an embedded node, itself plus the routes that
// are not its own address; for an external NATS, the servers it knows of.
func (b *Bus) ClusterSize(ownRoute string, routes []string) int {
	if b.srv == nil {
		if b.nc.ConnectedClusterName() == "" {
			return 1
		}
		return max(1, len(b.nc.Servers()))
	}
	peers := map[string]bool{}
	for _, r := range routes {
		host := r
		if u, err := url.Parse(r); err == nil && u.Host != "" {
			host = u.Host
		}
		if !sameHostPort(host, ownRoute) {
			peers[host] = true
		}
	}
	return 1 + len(peers)
}

func sameHostPort(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	norm := func(h string) string {
		if h == "localhost" || h == "" || h == "0.0.0.0" || h == "::" {
			return "127.0.0.1"
		}
		return h
	}
	return ap == bp && norm(ah) == norm(bh)
}
