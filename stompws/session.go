package stompws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
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
	srv    *Server
	cfg    *Config
	conn   *websocket.Conn
	out    *connWriter // what conn writes to: batches go out in one write
	req    *http.Request
	id     string
	ctx    context.Context
	cancel context.CancelFunc

	// Set at CONNECT by the read loop, before any other goroutine reads them.
	principal Principal
	version   Version
	log       *slog.Logger

	// Owned by the read loop.
	dec       Decoder
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
	park      atomic.Int32
	lastRead  atomic.Int64 // unix nanos of the last WebSocket message from the client
	recvLimit atomic.Int64 // silence allowed before the session is closed (ns)
	sendEvery atomic.Int64 // heart-beat interval towards the client (ns); 0: none
	heartBeat atomic.Pointer[time.Timer]
	beatDue   atomic.Bool // the heart-beat timer fired: write one unless other frames go
	// writing is set while a writer goroutine runs (see signal), and for
	// good once one has closed the connection.
	writing atomic.Bool
	// wake tells a lingering writer there is more to write.
	wake chan struct{}
	// rmu orders the read loop's own reads of the client's input (the
	// buffered check, answerPing) with coder/websocket's close handshake,
	// which the writer starts and which then reads that input itself:
	// handedOver is set, under rmu, before the handshake starts.
	rmu        sync.Mutex
	handedOver bool
	// lastWrite is when the last write to the client ended (unix nanos):
	// frames within WriteCoalesce of it go to the writer, to be batched.
	lastWrite atomic.Int64
	watchdog  *time.Timer
	expiry    *time.Timer
	// writeDeadline bounds each write; owned by the writer goroutine.
	writeDeadline *time.Timer

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
	extra []Header
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

type transaction struct{ frames []*Frame }

func newSession(srv *Server, conn *websocket.Conn, r *http.Request) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		srv:        srv,
		cfg:        &srv.cfg,
		conn:       conn,
		req:        r,
		id:         newID(),
		ctx:        ctx,
		cancel:     cancel,
		dec:        Decoder{Limits: srv.cfg.PreConnectLimits},
		inflight:   make(chan struct{}, srv.cfg.MaxInflight),
		subs:       map[string]*Subscription{},
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
		wake:       make(chan struct{}, 1),
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
func (s *Session) Version() Version { return s.version }

// Logger carries the session id and user.
func (s *Session) Logger() *slog.Logger { return s.log }

// Context ends when the session ends.
func (s *Session) Context() context.Context { return s.ctx }

// Close ends the session with an ERROR carrying err's message.
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

// parkAfter is how long a session's read loop waits for its client on a
// goroutine before it parks the session in the server's poller. Sessions
// in a conversation keep their goroutine (a park and wake-up cost two
// syscalls and a new goroutine); those only heart-beating (every 10 s or
// so) hold none most of the time.
const parkAfter = time.Second

// readLoop reads the session's frames until it ends, or until it parks:
// then parked is true, and the poller (or unpark) starts it again.
// Its frames are kept small (the work is in readNext and finish): they
// are what a session holds while it waits for parkAfter.
func (s *Session) readLoop() (parked bool, err error) {
	for {
		select {
		case <-s.stop:
			// Closing: the writer owns the connection now, and its close
			// handshake reads the client's last frames itself.
			return false, errStop
		default:
		}
		if s.idle != nil {
			buffered, handedOver := s.inputBuffered()
			if handedOver {
				return false, errStop
			}
			if !buffered {
				ready, err := s.idle.waitFor(parkAfter)
				if err != nil {
					return false, err
				}
				if !ready {
					if s.parkIn() {
						return true, nil
					}
					if err := s.idle.wait(); err != nil {
						return false, err
					}
				}
				other, err := s.answerPing()
				if err != nil {
					return false, err
				}
				if !other {
					continue
				}
			}
		}
		if err := s.readNext(); err != nil {
			return false, err
		}
	}
}

// inputBuffered reports whether the client's input waits in the
// session's readers, unless the close handshake reads it now (handedOver).
func (s *Session) inputBuffered() (buffered, handedOver bool) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.handedOver {
		return false, true
	}
	return s.idle.buffered(), false
}

// answerPing answers a ping at the front of the client's input itself,
// and reports whether the input holds anything else: false sends the read
// loop back to waiting (for the next frame), and so to parking. Left to
// coder/websocket, a ping is answered inside its reader, whose goroutine
// then stays blocked there until a data frame comes: a client that pings
// every few seconds (OkHttp's pingInterval, say) would keep its session
// from ever parking.
// It runs between messages, with nothing buffered above the socket, where
// coder/websocket holds no partial frame.
func (s *Session) answerPing() (other bool, err error) {
	var buf [maxPing]byte
	s.rmu.Lock()
	if s.handedOver {
		s.rmu.Unlock()
		return true, nil // the reader finds the connection closing
	}
	p, ok, err := s.idle.takePing(&buf)
	s.rmu.Unlock()
	if err != nil || !ok {
		return true, err
	}
	// The pong is the payload where it lies, behind a header of its own.
	buf[4], buf[5] = 0x8A, byte(len(p))
	_, err = s.out.Write(buf[4 : 6+len(p)])
	return false, err
}

// Parking states of a session's read loop.
const (
	parkRunning = iota // the loop runs on its goroutine
	parkArming         // it is registering with the poller
	parkWoken          // an unpark came while it registered: it goes on
	parkParked         // it has no goroutine; unpark starts one
)

// parkIn hands the session's socket to the server's poller. False: it did
// not park (no poller, the socket is closing, or input came meanwhile),
// and the read loop goes on itself.
func (s *Session) parkIn() bool {
	p := s.srv.poller()
	if p == nil {
		return false
	}
	// The event may come before arm returns: it then finds parkArming and
	// leaves parkWoken, so that this loop goes on rather than a second.
	s.park.Store(parkArming)
	err := p.arm(s)
	if err == nil && s.park.CompareAndSwap(parkArming, parkParked) {
		return true
	}
	if err != nil {
		s.log.Debug("session not parked", "err", err)
	}
	s.park.Store(parkRunning)
	return false
}

// unpark restarts a parked session's read loop: its client has sent
// something, or its connection is closing. Called any number of times,
// from the poller or when the connection closes, it starts at most one
// loop per park.
func (s *Session) unpark() {
	for {
		switch st := s.park.Load(); st {
		case parkParked:
			if s.park.CompareAndSwap(st, parkRunning) {
				go s.srv.serve(s)
				return
			}
		case parkArming:
			if s.park.CompareAndSwap(st, parkWoken) {
				return
			}
		default:
			return
		}
	}
}

// readNext reads and handles one WebSocket message.
func (s *Session) readNext() error {
	typ, r, err := s.conn.Reader(s.ctx)
	if err != nil {
		return err
	}
	_ = typ // STOMP frames arrive as text or binary alike
	s.lastRead.Store(time.Now().UnixNano())
	if s.rbuf == nil {
		s.rbufp = s.srv.rbufs.Get().(*[]byte)
		s.rbuf = (*s.rbufp)[:0]
	}
	if err := s.readMessage(r); err != nil {
		return err
	}
	if len(s.rbuf) == 0 {
		// An idle connection keeps no read buffer: the pooled one goes
		// back, a grown one to the collector.
		if cap(s.rbuf) == readBufSize {
			*s.rbufp = s.rbuf
			s.srv.rbufs.Put(s.rbufp)
		}
		s.rbuf, s.rbufp = nil, nil
	}
	return nil
}

// readBufSize is a session's read buffer while it reads a message; it
// grows, up to the frame limit, only for a frame that needs it.
const readBufSize = 4096

// readMessage reads one WebSocket message in chunks, decoding frames as
// they complete, so that no more than one frame's limit is ever buffered.
func (s *Session) readMessage(r io.Reader) error {
	for {
		if cap(s.rbuf)-len(s.rbuf) < 2048 {
			want := max(2*cap(s.rbuf), readBufSize)
			want = min(want, s.dec.Limits.MaxFrameSize+4096)
			if want-len(s.rbuf) < 512 {
				// A partial frame has filled the buffer: the decoder
				// reports a too-large frame before this; belt and braces.
				s.fail(&Error{Message: "frame too large"}, "", websocket.StatusMessageTooBig, false)
				return errStop
			}
			nb := make([]byte, len(s.rbuf), want)
			copy(nb, s.rbuf)
			s.rbuf = nb
		}
		n, rerr := r.Read(s.rbuf[len(s.rbuf):cap(s.rbuf)])
		s.rbuf = s.rbuf[:len(s.rbuf)+n]
		if n > 0 {
			if err := s.decodeFrames(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (s *Session) decodeFrames() error {
	off := 0
	defer func() {
		n := copy(s.rbuf, s.rbuf[off:])
		s.rbuf = s.rbuf[:n]
	}()
	for off < len(s.rbuf) {
		f, n, err := s.dec.Decode(s.rbuf[off:])
		if err != nil {
			var fe *FrameError
			msg := "malformed frame"
			if errors.As(err, &fe) {
				msg = fe.Msg
			}
			s.fail(&Error{Message: msg}, "", closePolicy, false)
			return errStop
		}
		if n == 0 {
			return nil
		}
		off += n
		if f == nil {
			continue // heart-beat
		}
		if err := s.handle(f); err != nil {
			return err
		}
	}
	return nil
}

func (s *Session) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// handle dispatches one client frame.
func (s *Session) handle(f *Frame) error {
	s.cfg.Observer.FrameIn(f.Command)
	if !s.connected.Load() {
		if f.Command == "CONNECT" || f.Command == "STOMP" {
			return s.onConnect(f)
		}
		s.fail(&Error{Message: "expected CONNECT frame, got " + f.Command}, "", closePolicy, false)
		return errStop
	}
	if s.halted.Load() {
		return nil
	}
	switch f.Command {
	case "SEND":
		s.onSend(f, false)
	case "SUBSCRIBE":
		s.onSubscribe(f)
	case "UNSUBSCRIBE":
		s.onUnsubscribe(f)
	case "ACK":
		s.onAck(f, false)
	case "NACK":
		s.onAck(f, true)
	case "BEGIN":
		s.onBegin(f)
	case "COMMIT":
		s.onCommit(f)
	case "ABORT":
		s.onAbort(f)
	case "DISCONNECT":
		// The close (1000) follows the receipts of earlier frames, SENDs
		// still being stored included; until then the read loop goes on, so
		// that ending it does not cut the session short.
		s.halted.Store(true)
		s.finish(f.Value("receipt"), nil, s.closeGracefully)
	case "CONNECT", "STOMP":
		s.reject(f, "already connected")
	default:
		s.reject(f, "unknown command "+f.Command)
	}
	if s.isClosing() {
		return errStop
	}
	return nil
}

// reject answers a bad frame with an ERROR (after earlier receipts) and
// ends the session.
func (s *Session) reject(f *Frame, msg string) {
	s.finish(f.Value("receipt"), &Error{Message: msg}, nil)
}

func (s *Session) onConnect(f *Frame) error {
	v, ok := negotiate(f.Value("accept-version"))
	if !ok {
		s.failWith(&Error{Message: "unsupported STOMP version", Detail: "supported versions are 1.0, 1.1 and 1.2"},
			[]Header{{"version", "1.2,1.1,1.0"}}, closePolicy)
		return errStop
	}
	cx, cy, ok := parseHeartBeat(f.Value("heart-beat"))
	if !ok {
		s.fail(&Error{Message: "invalid heart-beat header"}, "", closePolicy, false)
		return errStop
	}
	actx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	p, err := s.srv.h.Authenticate(actx, &ConnectRequest{Frame: f, Request: s.req, Version: v})
	cancel()
	s.req = nil // only CONNECT needs the handshake; an idle session should not keep it
	if err != nil {
		s.fail(s.clientError(err), "", closePolicy, false)
		return errStop
	}
	if p.User == "" {
		s.fail(s.clientError(errors.New("authenticator returned no user")), "", closePolicy, false)
		return errStop
	}
	if !s.srv.admitUser(p.User) {
		s.fail(Errorf("too many connections for this user (limit %d)", s.cfg.MaxSessionsPerUser), "", closePolicy, false)
		return errStop
	}
	s.principal, s.counted = p, s.cfg.MaxSessionsPerUser > 0
	// Heart-beats (STOMP 1.1 §Heart-beating): each side sends no more often
	// than the other asked for; 0 on either side switches a direction off.
	var out, in time.Duration
	sx, sy := s.cfg.HeartBeatSend, s.cfg.HeartBeatRecv
	if cy > 0 && sx > 0 {
		out = max(sx, cy)
	}
	if cx > 0 && sy > 0 {
		in = max(cx, sy)
	}
	s.version = v
	s.log = s.log.With("user", p.User)
	s.dec = Decoder{Limits: s.cfg.Limits, Version: v}
	s.sendEvery.Store(int64(out))
	if out > 0 {
		s.heartBeat.Store(time.AfterFunc(out, s.beat))
	}
	if in > 0 {
		s.recvLimit.Store(int64(in + s.cfg.HeartBeatGrace))
	}
	s.connected.Store(true)
	s.cfg.Observer.SessionConnected()
	if in > 0 {
		// Watch the agreed interval from now on: the watchdog was set for
		// the CONNECT timeout, which may be longer.
		s.watchdog.Reset(in + s.cfg.HeartBeatGrace)
	}
	hb := strconv.FormatInt(out.Milliseconds(), 10) + "," + strconv.FormatInt(in.Milliseconds(), 10)
	connected := AppendFrame(nil, v, "CONNECTED", []Header{
		{"version", v.String()},
		{"heart-beat", hb},
		{"server", s.cfg.ServerName},
		{"session", s.id},
		{"user-name", p.User},
	}, nil)
	s.enqueueRaw(connected)
	if !p.Expires.IsZero() {
		s.expiry = time.AfterFunc(time.Until(p.Expires), func() {
			s.fail(&Error{Message: "credentials expired"}, "", closePolicy, false)
		})
	}
	s.log.Debug("session connected", "version", v.String(), "heartbeat_out", out, "heartbeat_in", in)
	return nil
}

func negotiate(accept string) (Version, bool) {
	if accept == "" {
		return V10, true
	}
	best := Version(0)
	for _, a := range strings.Split(accept, ",") {
		var v Version
		switch strings.TrimSpace(a) {
		case "1.0":
			v = V10
		case "1.1":
			v = V11
		case "1.2":
			v = V12
		}
		best = max(best, v)
	}
	return best, best != 0
}

func parseHeartBeat(h string) (cx, cy time.Duration, ok bool) {
	if h == "" {
		return 0, 0, true
	}
	a, b, found := strings.Cut(h, ",")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 31)
	y, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 31)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return time.Duration(x) * time.Millisecond, time.Duration(y) * time.Millisecond, true
}

// checkSilence closes a session whose client said nothing in time: no
// CONNECT within ConnectTimeout, or no frame or heart-beat within the agreed
// interval plus the grace.
func (s *Session) checkSilence() {
	if !s.connected.Load() {
		s.fail(&Error{Message: "no CONNECT frame within " + s.cfg.ConnectTimeout.String()}, "", closePolicy, false)
		return
	}
	limit := time.Duration(s.recvLimit.Load())
	if limit <= 0 {
		return // the client sends no heart-beats; TCP tells us when it goes
	}
	idle := time.Since(time.Unix(0, s.lastRead.Load()))
	if idle >= limit {
		s.fail(&Error{Message: "heart-beat timeout: nothing received for " + idle.Round(time.Millisecond).String()},
			"", closePolicy, false)
		return
	}
	s.watchdog.Reset(limit - idle)
}

func (s *Session) onSend(f *Frame, committing bool) {
	if f.Value("destination") == "" {
		s.reject(f, "SEND without destination")
		return
	}
	// Counted as they arrive; a committed transaction's SENDs were already.
	if !committing && s.sendLimit != nil && !s.sendLimit.Allow() {
		s.reject(f, fmt.Sprintf("SEND rate limit exceeded (limit %g per second, burst %d)", s.cfg.SendRate, s.sendLimit.Burst()))
		return
	}
	if tx := f.Value("transaction"); tx != "" && !committing {
		s.addToTx(tx, f)
		return
	}
	receipt := f.Value("receipt")
	if committing {
		receipt = "" // acknowledged when the transaction took it
	}
	select {
	case s.inflight <- struct{}{}:
	case <-s.stop:
		return
	}
	o := &op{receipt: receipt, async: true}
	s.mu.Lock()
	s.ops = append(s.ops, o)
	s.mu.Unlock()
	var once atomic.Bool
	s.srv.h.Send(s.ctx, s, f, func(err error) {
		if once.CompareAndSwap(false, true) {
			s.complete(o, err)
		}
	})
}

// finish records a frame handled synchronously: its receipt (or error)
// goes out after those of earlier frames.
func (s *Session) finish(receipt string, err error, after func()) {
	o := &op{receipt: receipt, after: after}
	s.mu.Lock()
	s.ops = append(s.ops, o)
	s.mu.Unlock()
	s.complete(o, err)
}

func (s *Session) complete(o *op, err error) {
	if o.async {
		<-s.inflight
	}
	if err != nil {
		// The ERROR waits for earlier SENDs' receipts; nothing the client
		// sent after the failed frame may take effect meanwhile.
		s.halted.Store(true)
	}
	var after []func()
	s.mu.Lock()
	o.done, o.err = true, err
	for len(s.ops) > 0 && s.ops[0].done {
		h := s.ops[0]
		s.ops[0] = nil
		s.ops = s.ops[1:]
		if h.err != nil {
			s.failLocked(s.clientError(h.err), nil, h.receipt, closePolicy, false)
			s.ops = nil
			break
		}
		if h.receipt != "" && !s.closing {
			s.pushLocked(outItem{raw: AppendFrame(nil, s.version, "RECEIPT", []Header{{"receipt-id", h.receipt}}, nil)})
		}
		if h.after != nil {
			after = append(after, h.after)
		}
	}
	if len(s.ops) == 0 {
		s.ops = nil
	}
	s.mu.Unlock()
	s.flush()
	for _, f := range after {
		f()
	}
}

// clientError turns a handler error into what the client may see.
func (s *Session) clientError(err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	s.log.Error("request failed", "err", err)
	return &Error{Message: "internal error"}
}

func (s *Session) onSubscribe(f *Frame) {
	dest := f.Value("destination")
	if dest == "" {
		s.reject(f, "SUBSCRIBE without destination")
		return
	}
	id, ok := f.Get("id")
	if !ok {
		if s.version != V10 {
			s.reject(f, "SUBSCRIBE without id")
			return
		}
		id = dest // STOMP 1.0: the destination names the subscription
	}
	mode, ok := parseAck(f.Value("ack"), s.version)
	if !ok {
		s.reject(f, "invalid ack mode "+strconv.Quote(f.Value("ack")))
		return
	}
	s.mu.Lock()
	_, dup := s.subs[id]
	n := len(s.subs)
	s.mu.Unlock()
	switch {
	case dup:
		s.reject(f, "subscription id "+strconv.Quote(id)+" already in use")
		return
	case n >= s.cfg.MaxSubscriptions:
		s.reject(f, "too many subscriptions (limit "+strconv.Itoa(s.cfg.MaxSubscriptions)+")")
		return
	}
	sub := newSubscription(s, id, dest, mode, f)
	if err := s.srv.h.Subscribe(s.ctx, sub); err != nil {
		s.finish(f.Value("receipt"), err, nil)
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.srv.h.Unsubscribe(sub)
		return
	}
	s.subs[id] = sub
	s.mu.Unlock()
	s.cfg.Observer.Subscribed()
	s.finish(f.Value("receipt"), nil, nil)
}

func parseAck(a string, v Version) (AckMode, bool) {
	switch a {
	case "", "auto":
		return AckAuto, true
	case "client":
		return AckClient, true
	case "client-individual":
		return AckClientIndividual, v >= V11
	}
	return 0, false
}

func (s *Session) onUnsubscribe(f *Frame) {
	id, ok := f.Get("id")
	if !ok && s.version == V10 {
		id, ok = f.Get("destination")
	}
	if !ok {
		s.reject(f, "UNSUBSCRIBE without id")
		return
	}
	s.mu.Lock()
	sub := s.subs[id]
	if sub != nil {
		delete(s.subs, id)
		sub.closed = true
		sub.unacked = nil
	}
	s.mu.Unlock()
	if sub == nil {
		s.reject(f, "no subscription "+strconv.Quote(id))
		return
	}
	s.srv.h.Unsubscribe(sub)
	s.cfg.Observer.Unsubscribed()
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) onAck(f *Frame, nack bool) {
	if tx := f.Value("transaction"); tx != "" {
		s.addToTx(tx, f)
		return
	}
	if !s.applyAck(f) {
		name := "ACK"
		if nack {
			name = "NACK"
		}
		s.reject(f, name+" for an unknown message")
		return
	}
	s.finish(f.Value("receipt"), nil, nil)
}

// applyAck settles one ACK or NACK. Topics do not redeliver, so NACK and ACK
// both release the message; what they bound is how many messages a
// client-ack subscriber may leave unsettled.
func (s *Session) applyAck(f *Frame) bool {
	key := "message-id"
	if s.version == V12 {
		key = "id"
	}
	n, err := strconv.ParseUint(f.Value(key), 10, 64)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if subID, ok := f.Get("subscription"); ok && s.version == V11 {
		sub := s.subs[subID]
		return sub != nil && sub.settle(n)
	}
	for _, sub := range s.subs {
		if sub.settle(n) {
			return true
		}
	}
	return false
}

func (s *Session) onBegin(f *Frame) {
	name := f.Value("transaction")
	switch {
	case name == "":
		s.reject(f, "BEGIN without transaction")
		return
	case s.txs[name] != nil:
		s.reject(f, "transaction "+strconv.Quote(name)+" already begun")
		return
	case len(s.txs) >= s.cfg.MaxTransactions:
		s.reject(f, "too many open transactions (limit "+strconv.Itoa(s.cfg.MaxTransactions)+")")
		return
	}
	if s.txs == nil {
		s.txs = map[string]*transaction{}
	}
	s.txs[name] = &transaction{}
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) addToTx(name string, f *Frame) {
	t := s.txs[name]
	switch {
	case t == nil:
		s.reject(f, "unknown transaction "+strconv.Quote(name))
		return
	case len(t.frames) >= s.cfg.MaxTxFrames:
		s.reject(f, "transaction too large (limit "+strconv.Itoa(s.cfg.MaxTxFrames)+" frames)")
		return
	}
	t.frames = append(t.frames, f)
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) onCommit(f *Frame) {
	name := f.Value("transaction")
	t := s.txs[name]
	if t == nil {
		s.reject(f, "unknown transaction "+strconv.Quote(name))
		return
	}
	delete(s.txs, name)
	for _, tf := range t.frames {
		switch tf.Command {
		case "SEND":
			s.onSend(tf, true)
		default:
			if !s.applyAck(tf) {
				s.reject(tf, tf.Command+" for an unknown message")
				return
			}
		}
		if s.isClosing() {
			return
		}
	}
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) onAbort(f *Frame) {
	name := f.Value("transaction")
	if s.txs[name] == nil {
		s.reject(f, "unknown transaction "+strconv.Quote(name))
		return
	}
	delete(s.txs, name)
	s.finish(f.Value("receipt"), nil, nil)
}

// fail sends an ERROR (after what is queued, unless dropQueue) and closes.
func (s *Session) fail(e *Error, receipt string, code websocket.StatusCode, dropQueue bool) {
	s.mu.Lock()
	s.failLocked(e, nil, receipt, code, dropQueue)
	s.mu.Unlock()
	s.signal()
}

func (s *Session) failWith(e *Error, extra []Header, code websocket.StatusCode) {
	s.mu.Lock()
	s.failLocked(e, extra, "", code, false)
	s.mu.Unlock()
	s.signal()
}

func (s *Session) failLocked(e *Error, extra []Header, receipt string, code websocket.StatusCode, dropQueue bool) {
	if s.closing {
		return
	}
	s.closing = true
	close(s.stop)
	s.closeCode = code
	if dropQueue {
		clear(s.queue)
		s.queue, s.queueBytes = s.queue[:0], 0
	}
	h := append([]Header{{"message", e.Message}}, extra...)
	if receipt != "" {
		h = append(h, Header{"receipt-id", receipt})
	}
	var body []byte
	if e.Detail != "" {
		body = []byte(e.Detail)
		h = append(h, Header{"content-type", "text/plain"}, Header{"content-length", strconv.Itoa(len(body))})
	}
	v := s.version
	if v == 0 {
		v = V10 // before CONNECT: no escaping; our messages are one line
	}
	s.pushLocked(outItem{raw: AppendFrame(nil, v, "ERROR", h, body)})
	s.cfg.Observer.ErrorSent(e.Message)
	if code != CloseGoingAway {
		s.log.Info("session error", "message", e.Message)
	}
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

func (s *Session) enqueueRaw(b []byte) {
	s.mu.Lock()
	s.pushLocked(outItem{raw: b})
	s.mu.Unlock()
	s.flush()
}

func (s *Session) pushLocked(it outItem) {
	s.queue = append(s.queue, it)
	s.queueBytes += len(it.raw)
}

// signal makes sure a writer will look at the queue, starting one unless
// one runs. The writer exits when it finds nothing to do, so an idle
// session holds no writer goroutine.
func (s *Session) signal() {
	if s.writing.CompareAndSwap(false, true) {
		go s.writeLoop()
		return
	}
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// beat is the heart-beat timer's: a heart-beat goes out unless other
// frames do, written on the timer's goroutine when it can be
// (writeInline), else by the writer.
func (s *Session) beat() {
	s.beatDue.Store(true)
	s.flush()
}
