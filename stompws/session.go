// The session: the Session type, its construction and accessors, and the
// end of its life. Its read loop is in read.go and park.go, its STOMP
// commands in commands.go, its heart-beats in heartbeat.go, its ERRORs in
// errors.go, and its outbound queue and writer in outbound.go and write.go.

package stompws

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
	"github.com/igm/sockjs-go/v3/sockjs"
	"golang.org/x/time/rate"
)

// WebSocket close codes after an ERROR.
const (
	closeNormal = websocket.StatusNormalClosure // after DISCONNECT
	closePolicy = websocket.StatusPolicyViolation
)

// errStop ends the read loop once the session is closing.
var errStop = errors.New("session closing")

// Session is one STOMP connection.
type Session struct {
	srv  *Server
	cfg  *Config
	link link            // how frames reach the client (link.go)
	conn *websocket.Conn // a WebSocket session's connection, read by readLoop; nil over SockJS
	out  *connWriter     // what conn writes to: batches go out in one write; nil over SockJS
	sj   *sockjs.Session // a SockJS session's, read by readSockJS; nil over a WebSocket
	// sockjsBeat > 0: the WebSocket is SockJS's websocket transport
	// (sockjsws.go), whose own heart-beat goes this often to a client that
	// asked for no STOMP heart-beats (then sockjsH is set).
	sockjsBeat time.Duration
	sockjsH    atomic.Bool
	req        *http.Request
	id         string
	ctx        context.Context
	cancel     context.CancelFunc

	// Set at CONNECT by the read loop, before any other goroutine reads them.
	principal Principal
	version   frame.Version
	log       *slog.Logger

	// Owned by the read loop.
	dec       frame.Decoder
	rbuf      []byte
	rbufp     *[]byte // rbuf's pool entry, while it holds the pooled buffer
	idle      *idleWaiter
	pollKey   uint64 // the session's key in the server's poller; 0: none yet
	pollAdded bool   // its socket is in the poller's epoll set
	txs       map[string]*transaction
	inflight  chan struct{} // semaphore: SENDs awaiting their result
	connected atomic.Bool
	counted   bool          // the session counts toward its user's MaxSessionsPerUser
	sendLimit *rate.Limiter // nil: SENDs are not rate-limited

	// halted is set by DISCONNECT or a failed frame: later frames are
	// ignored while earlier ones finish and the session closes.
	halted atomic.Bool
	// park is the read loop's parking state (parkRunning...): while
	// parked its goroutine is gone, and whoever unparks starts it again.
	park     atomic.Int32
	lastRead atomic.Int64 // unix nanos of the last WebSocket message from the client
	// heldBack is set while the read loop waits for a SEND slot (inflight):
	// the server is not reading, so the client's silence proves nothing.
	heldBack  atomic.Bool
	recvLimit atomic.Int64 // silence allowed before the session is closed (ns)
	sendEvery atomic.Int64 // heart-beat interval towards the client (ns); 0: none
	heartBeat atomic.Pointer[time.Timer]
	beatDue   atomic.Bool // the heart-beat timer fired: write one unless other frames go
	// writing is set while a writer goroutine runs (see signal), and for
	// good once one has closed the connection.
	writing atomic.Bool
	// rmu orders the read loop's own reads of the client's input (the
	// buffered check, answerPing) with coder/websocket's close handshake,
	// which the writer starts and which then reads that input itself
	// (transport.go, assumption (d)): handedOver is set, under rmu, before
	// the handshake starts.
	rmu        sync.Mutex
	handedOver bool
	// lastWrite is when the last write to the client ended (unix nanos):
	// frames within WriteCoalesce of it go to the writer, to be batched.
	lastWrite atomic.Int64
	watchdog  *time.Timer
	expiry    *time.Timer
	// writeWatch bounds the writer goroutine's writes (checkStall).
	writeWatch stallWatch
	// cutDone is set by the first cut, which alone logs and counts it.
	cutDone atomic.Bool

	mu         sync.Mutex
	subs       map[string]*Subscription
	queue      []outItem
	queueBytes int
	spare      []outItem
	ops        []*op
	nextMsgID  uint64
	closing    bool
	closeCode  websocket.StatusCode
	stop       chan struct{} // closed when closing starts
	waiting    bool          // a DeliverWait waits for the writer to take the queue
	drained    chan struct{}
	writerDone chan struct{} // closed by the writer that closes the connection
}

// outItem is one frame waiting to be written: either a complete control
// frame, or a delivery of a shared Message to one subscription.
type outItem struct {
	raw   []byte
	sub   *Subscription
	msg   *Message
	id    uint64
	extra []frame.Header
}

// op keeps receipts and errors in frame order while SENDs complete
// asynchronously.
type op struct {
	receipt string
	async   bool
	done    bool
	err     error
	after   func()
}

type transaction struct{ frames []*frame.Frame }

func newSession(srv *Server, l link, r *http.Request) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		srv:        srv,
		cfg:        &srv.cfg,
		link:       l,
		req:        r,
		id:         newID(),
		ctx:        ctx,
		cancel:     cancel,
		dec:        frame.Decoder{Limits: srv.cfg.PreConnectLimits},
		inflight:   make(chan struct{}, srv.cfg.MaxInflight),
		subs:       map[string]*Subscription{},
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if srv.cfg.SendRate > 0 {
		s.sendLimit = rate.NewLimiter(rate.Limit(srv.cfg.SendRate), max(srv.cfg.SendBurst, 1))
	}
	s.log = srv.log.With("session", s.id, "remote", r.RemoteAddr)
	return s
}

// ID is the session id, also sent in CONNECTED.
func (s *Session) ID() string { return s.id }

// User is the authenticated user id.
func (s *Session) User() string { return s.principal.User }

// Version is the negotiated STOMP version.
func (s *Session) Version() frame.Version { return s.version }

// Logger carries the session id and user.
func (s *Session) Logger() *slog.Logger { return s.log }

// Context ends when the session ends.
func (s *Session) Context() context.Context { return s.ctx }

// Close ends the session with an ERROR carrying err's message (and, for
// the Observer, its kind).
func (s *Session) Close(err *Error) { s.fail(err, "", closePolicy, false) }

// end ends the session once its read loop has.
func (s *Session) end(err error) {
	if err != nil && !errors.Is(err, errStop) && s.log.Enabled(s.ctx, slog.LevelDebug) {
		s.log.Debug("session read ended", "err", err)
	}
	s.mu.Lock()
	if !s.closing {
		s.closing = true // the client went away: nothing more to say to it
		close(s.stop)
	}
	s.mu.Unlock()
	s.signal()
	<-s.writerDone
	s.watchdog.Stop()
	if t := s.heartBeat.Load(); t != nil {
		t.Stop()
	}
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.cancel()
	s.mu.Lock()
	subs := make([]*Subscription, 0, len(s.subs))
	for id, sub := range s.subs {
		sub.closed = true
		subs = append(subs, sub)
		delete(s.subs, id)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		s.srv.h.Unsubscribe(sub)
		s.cfg.Observer.Unsubscribed()
	}
	if s.connected.Load() {
		s.cfg.Observer.SessionEnded()
	}
	s.log.Debug("session closed")
}

func (s *Session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// closeGracefully ends the session after what is queued (DISCONNECT).
func (s *Session) closeGracefully() {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.stop)
		s.closeCode = closeNormal
	}
	s.mu.Unlock()
	s.signal()
}
