// Package stompws serves STOMP 1.0, 1.1 and 1.2 over WebSocket: sessions,
// heart-beats, receipts, subscriptions, acknowledgements, transactions,
// limits and per-session back-pressure. It knows nothing of what
// destinations mean; a Handler decides.
//
// It comes in three layers:
//
//   - frame (package frame): the STOMP codec, frames to and from bytes,
//     with no notion of a connection. Clients use it too (chatbench).
//   - transport (transport*.go, poller*.go): the WebSocket upgrade over
//     coder/websocket with buffers of chatd's own, the framing and
//     writing of chatd's data messages, pings answered outside the
//     WebSocket reader, and idle sessions parked without a goroutine.
//   - session (the other files): one STOMP connection and its commands,
//     its outbound queue and its writer, on top of the transport.
//
// Where things are:
//
//   - server.go: Config, Handler, Server (accepting sessions, shutdown).
//   - session.go: Session, its construction, accessors and end.
//   - errors.go: Error and its kinds; failing a session with an ERROR.
//   - read.go: the read loop, reading messages and decoding frames.
//   - park.go: the idle wait, answering pings, parking in the poller.
//   - commands.go: CONNECT and the STOMP commands, receipts in order.
//   - heartbeat.go: heart-beat negotiation, the watchdog, the server's beats.
//   - outbound.go: Message, Subscription, delivery, acknowledgements.
//   - write.go: the outbound queue's writer, batched or inline; the watch
//     on writes a client does not take, and the cut.
//   - observer.go: the Observer, for metrics.
//   - transport.go: the hijacked connection's reader and writer, the
//     WebSocket framing of data messages, the idle wait and ping reads;
//     transport_linux.go, the system calls they use.
//   - poller_linux.go: the epoll poller that holds parked sessions.
package stompws

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/chatd/chatd/stompws/frame"

	"github.com/coder/websocket"
)

// Config holds the limits and timings of the STOMP server. Zero fields take
// the values of DefaultConfig.
type Config struct {
	// Limits apply to frames after CONNECT.
	Limits frame.Limits
	// PreConnectLimits apply until the session is connected, so that an
	// unauthenticated peer cannot make the server buffer much.
	PreConnectLimits frame.Limits
	// MaxSubscriptions per session.
	MaxSubscriptions int
	// SendRate bounds a session's SEND frames per second, with bursts of
	// SendBurst; past it the session gets an ERROR. Zero: no limit.
	SendRate  float64
	SendBurst int
	// MaxSessionsPerUser bounds one user's open sessions on this server;
	// a CONNECT past it gets an ERROR. Zero: no limit.
	MaxSessionsPerUser int
	// MaxInflight bounds a session's SENDs awaiting their result; past it
	// the server stops reading from that client (TCP back-pressure).
	MaxInflight int
	// OutboundFrames and OutboundBytes bound a session's outbound queue. A
	// client that lets it fill is cut off as a slow consumer.
	OutboundFrames int
	OutboundBytes  int
	// MaxUnacked bounds unacknowledged messages per client-ack subscription.
	MaxUnacked int
	// MaxTransactions per session, and MaxTxFrames per transaction.
	MaxTransactions int
	MaxTxFrames     int
	// Heart-beats follow the client's CONNECT (STOMP 1.1, Heart-beating):
	// the server sends as often as the client asks and expects beats as
	// often as the client offers, but never more often than HeartBeatMin
	// either way; a client that asks for 0 gets none. To a STOMP 1.1+
	// client whose CONNECT has no heart-beat header the server sends every
	// HeartBeat, and expects nothing. A negative HeartBeat switches
	// heart-beats off altogether (zero takes the defaults).
	HeartBeat    time.Duration
	HeartBeatMin time.Duration
	// HeartBeatGrace is added to the agreed client interval before a silent
	// connection is closed.
	HeartBeatGrace time.Duration
	// ConnectTimeout bounds the wait for CONNECT after the WebSocket opens.
	ConnectTimeout time.Duration
	// WriteTimeout bounds a write to a client that has stopped reading and
	// sends nothing either: its connection is cut. A client that sends
	// (frames, heart-beats) while it does not read is pacing what it is
	// sent, a replay say: its write waits on, up to WriteStallMax in all,
	// while the client has sent something within WriteTimeout or within
	// its agreed heart-beat interval plus HeartBeatGrace. A WriteStallMax
	// no longer than WriteTimeout (negative, say) extends no write.
	WriteTimeout  time.Duration
	WriteStallMax time.Duration
	// WriteCoalesce is how long a session's writer waits after a write
	// before it writes again, so that frames arriving meanwhile share one
	// WebSocket message and syscall. A frame for a session that has
	// written nothing for this long, and has no writer running, is written
	// at once by whoever queued it (one non-blocking write). Negative: no
	// wait.
	WriteCoalesce time.Duration
	// OriginPatterns lists the allowed browser origins (host patterns, as in
	// github.com/coder/websocket); empty means same origin only.
	OriginPatterns []string
	// ServerName goes in CONNECTED's server header.
	ServerName string
	Logger     *slog.Logger
	// Observer is told of connections, frames, subscriptions and errors
	// (for metrics); nil: nothing is.
	Observer Observer
}

// DefaultConfig returns the documented defaults (docs/protocol.md).
func DefaultConfig() Config {
	return Config{
		Limits:           frame.Limits{MaxFrameSize: 64 << 10, MaxHeaders: 32, MaxHeaderLen: 8 << 10},
		PreConnectLimits: frame.Limits{MaxFrameSize: 16 << 10, MaxHeaders: 16, MaxHeaderLen: 8 << 10},
		MaxSubscriptions: 64,
		MaxInflight:      256,
		OutboundFrames:   4096,
		OutboundBytes:    4 << 20,
		MaxUnacked:       1024,
		MaxTransactions:  8,
		MaxTxFrames:      128,
		HeartBeat:        10 * time.Second,
		HeartBeatMin:     time.Second,
		HeartBeatGrace:   5 * time.Second,
		ConnectTimeout:   10 * time.Second,
		WriteTimeout:     10 * time.Second,
		WriteStallMax:    2 * time.Minute,
		WriteCoalesce:    time.Millisecond,
		ServerName:       "chatd",
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Limits == (frame.Limits{}) {
		c.Limits = d.Limits
	}
	if c.PreConnectLimits == (frame.Limits{}) {
		c.PreConnectLimits = d.PreConnectLimits
	}
	setInt := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setInt(&c.MaxSubscriptions, d.MaxSubscriptions)
	setInt(&c.MaxInflight, d.MaxInflight)
	setInt(&c.OutboundFrames, d.OutboundFrames)
	setInt(&c.OutboundBytes, d.OutboundBytes)
	setInt(&c.MaxUnacked, d.MaxUnacked)
	setInt(&c.MaxTransactions, d.MaxTransactions)
	setInt(&c.MaxTxFrames, d.MaxTxFrames)
	setDur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.HeartBeat == 0 {
		c.HeartBeat = d.HeartBeat
	}
	setDur(&c.HeartBeatMin, d.HeartBeatMin)
	setDur(&c.HeartBeatGrace, d.HeartBeatGrace)
	setDur(&c.ConnectTimeout, d.ConnectTimeout)
	setDur(&c.WriteTimeout, d.WriteTimeout)
	if c.WriteStallMax == 0 {
		c.WriteStallMax = d.WriteStallMax
	}
	if c.WriteCoalesce == 0 {
		c.WriteCoalesce = d.WriteCoalesce
	}
	if c.ServerName == "" {
		c.ServerName = d.ServerName
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// ConnectRequest is what a Handler sees of a CONNECT.
type ConnectRequest struct {
	Frame   *frame.Frame  // the CONNECT or STOMP frame
	Request *http.Request // the WebSocket handshake
	Version frame.Version // the negotiated version
}

// Principal is the authenticated user of a session.
type Principal struct {
	User string
	// Expires, when set, ends the session with an ERROR at that time.
	Expires time.Time
}

// Handler gives destinations their meaning.
type Handler interface {
	// Authenticate checks a CONNECT. An error refuses the session.
	Authenticate(ctx context.Context, req *ConnectRequest) (Principal, error)
	// Send handles a SEND. It must call done exactly once, from any
	// goroutine, when the message is dealt with (for chatd: stored); a
	// RECEIPT, or an ERROR for a non-nil error, follows in frame order.
	Send(ctx context.Context, s *Session, f *frame.Frame, done func(error))
	// Subscribe starts a subscription; an error refuses it. Messages go to
	// the client through sub.Queue and a flush (Session.Flush), or
	// sub.DeliverWait, until Unsubscribe is called.
	Subscribe(ctx context.Context, sub *Subscription) error
	// Unsubscribe ends a subscription; it is called once for every
	// subscription Subscribe accepted, also when the session ends.
	Unsubscribe(sub *Subscription)
}

// WebSocket close codes chatd uses.
const (
	// CloseGoingAway tells a client the server is shutting down or
	// draining; clients reconnect, to another node if there is one.
	CloseGoingAway = websocket.StatusServiceRestart // 1012
)

// Server accepts STOMP-over-WebSocket sessions.
type Server struct {
	cfg Config
	h   Handler
	log *slog.Logger

	mu       sync.Mutex
	sessions map[*Session]struct{}
	perUser  map[string]int // connected sessions per user, with MaxSessionsPerUser
	closing  bool
	wg       sync.WaitGroup

	// bufs holds write buffers between bursts, and rbufs read buffers
	// between messages, so an idle session keeps neither.
	bufs  sync.Pool
	rbufs sync.Pool
	// chunks are the connections' read buffers (connReader), held only
	// while bytes wait in them; bufs hold the frames being written.
	chunks sync.Pool

	// parking holds idle sessions without a goroutine (poller), started
	// with the first session that parks; nil where there is none.
	pollOnce sync.Once
	parking  *poller
}

// poller returns the server's poller, starting it on first use; nil if
// this system has none.
func (srv *Server) poller() *poller {
	srv.pollOnce.Do(func() {
		p, err := newPoller()
		if err != nil {
			srv.log.Debug("idle sessions keep their goroutines", "err", err)
			return
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if srv.closing {
			p.stop()
			return
		}
		srv.parking = p
	})
	return srv.parking
}

// NewServer returns a server that hands destinations to h.
func NewServer(cfg Config, h Handler) *Server {
	cfg = cfg.withDefaults()
	srv := &Server{cfg: cfg, h: h, log: cfg.Logger, sessions: map[*Session]struct{}{}, perUser: map[string]int{}}
	srv.bufs.New = func() any { b := make([]byte, 0, 16<<10); return &b }
	srv.rbufs.New = func() any { b := make([]byte, 0, readBufSize); return &b }
	srv.chunks.New = func() any { b := make([]byte, connReadChunk); return &b }
	return srv
}

// Config returns the effective configuration.
func (srv *Server) Config() Config { return srv.cfg }

var subprotocols = []string{"v12.stomp", "v11.stomp", "v10.stomp"}

// ServeHTTP upgrades to WebSocket and starts a STOMP session on a goroutine
// of its own: the handler returns, so net/http's per-request state and its
// goroutine's stack are not kept for the life of the connection.
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { srv.accept(w, r, 0) }

// accept upgrades a WebSocket and runs its session. sockjsBeat > 0: the
// WebSocket is SockJS's websocket transport (sockjsws.go), with SockJS's
// heart-beat that often.
func (srv *Server) accept(w http.ResponseWriter, r *http.Request, sockjsBeat time.Duration) {
	if !srv.acquire() {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	hj := &hijacker{ResponseWriter: w, chunks: &srv.chunks}
	conn, err := websocket.Accept(hj, r, &websocket.AcceptOptions{
		Subprotocols:    subprotocols,
		OriginPatterns:  srv.cfg.OriginPatterns,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		// Accept has already written an HTTP error (bad handshake, origin refused).
		srv.log.Debug("websocket handshake refused", "remote", r.RemoteAddr, "err", err)
		srv.wg.Done()
		return
	}
	// Frames are bounded by Limits; the reader enforces them itself so that
	// an oversized frame gets a STOMP ERROR rather than a bare close.
	conn.SetReadLimit(-1)
	if sockjsBeat > 0 {
		if err := hj.out.writeFrame([]byte(sockjsOpen)); err != nil {
			_ = conn.CloseNow()
			srv.wg.Done()
			return
		}
	}
	s := newSession(srv, &wsLink{conn: conn, out: hj.out, sockjs: sockjsBeat > 0}, r)
	s.conn, s.out, s.sockjsBeat = conn, hj.out, sockjsBeat
	s.idle = newIdleWaiter(hj)
	if !srv.add(s) {
		_ = s.link.close(CloseGoingAway)
		srv.wg.Done()
		return
	}
	srv.cfg.Observer.ConnectionOpened()
	s.lastRead.Store(time.Now().UnixNano())
	s.watchdog = time.AfterFunc(s.cfg.ConnectTimeout, s.checkSilence)
	go srv.serve(s)
}

// acquire counts a connection in, unless the server is shutting down;
// the session's end counts it out (serve).
func (srv *Server) acquire() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return false
	}
	srv.wg.Add(1)
	return true
}

func (srv *Server) isClosing() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closing
}

// serve runs the session's read loop on a goroutine of its own, and ends
// the session when the loop does. A WebSocket loop that parks returns
// early; the poller calls serve again when the session has input.
func (srv *Server) serve(s *Session) {
	var parked bool
	var err error
	if s.sj != nil {
		err = s.readSockJS()
	} else {
		parked, err = s.readLoop()
	}
	if parked {
		return
	}
	s.end(err)
	if s.pollKey != 0 {
		srv.parking.forget(s)
	}
	srv.remove(s)
	srv.cfg.Observer.ConnectionClosed()
	srv.wg.Done()
}

func (srv *Server) add(s *Session) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closing {
		return false
	}
	srv.sessions[s] = struct{}{}
	return true
}

func (srv *Server) remove(s *Session) {
	srv.mu.Lock()
	delete(srv.sessions, s)
	if s.counted {
		if srv.perUser[s.principal.User]--; srv.perUser[s.principal.User] <= 0 {
			delete(srv.perUser, s.principal.User)
		}
	}
	srv.mu.Unlock()
}

// admitUser counts a new session of user, unless the user already has
// MaxSessionsPerUser open.
func (srv *Server) admitUser(user string) bool {
	if srv.cfg.MaxSessionsPerUser <= 0 {
		return true
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.perUser[user] >= srv.cfg.MaxSessionsPerUser {
		return false
	}
	srv.perUser[user]++
	return true
}

// Sessions returns the number of open sessions.
func (srv *Server) Sessions() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.sessions)
}

// Shutdown refuses new sessions, tells every open session to go (an ERROR
// with the given message, then WebSocket close 1012) after what was already
// queued for it, and waits until they have ended or ctx is done, when the
// rest are cut.
func (srv *Server) Shutdown(ctx context.Context, message string) error {
	srv.mu.Lock()
	srv.closing = true
	open := make([]*Session, 0, len(srv.sessions))
	for s := range srv.sessions {
		open = append(open, s)
	}
	srv.mu.Unlock()
	for _, s := range open {
		s.fail(&Error{Kind: KindShutdown, Message: message}, "", CloseGoingAway, false)
	}
	done := make(chan struct{})
	go func() { srv.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		srv.mu.Lock()
		left := make([]*Session, 0, len(srv.sessions))
		for s := range srv.sessions {
			left = append(left, s)
		}
		srv.mu.Unlock()
		for _, s := range left {
			s.cut(CutShutdown, "shutdown: the connection had not closed when the shutdown timed out")
		}
		<-done
		err = fmt.Errorf("stomp shutdown: %w", ctx.Err())
	}
	srv.pollOnce.Do(func() {}) // none starts after this
	srv.mu.Lock()
	p := srv.parking
	srv.mu.Unlock()
	if p != nil {
		p.stop()
	}
	return err
}

// newID returns a random session id (crypto/rand.Text: 26 base32 characters).
func newID() string { return rand.Text() }
