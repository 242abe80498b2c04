// STOMP over SockJS: the clients of Spring's .withSockJS() endpoints
// (sockjs-client with stomp.js). The SockJS protocol is
// github.com/igm/sockjs-go's; each SockJS session is a STOMP session like
// a WebSocket's, with the same limits, heart-beats, back-pressure,
// authentication, metrics and shutdown. The websocket transport is a
// WebSocket session of chatd's own (sockjsws.go); over the HTTP
// transports a session's reads hold a goroutine (it never parks), and its
// writes go through sockjs-go's buffer to the client's next request.

package stompws

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/igm/sockjs-go/v3/sockjs"
)

// SockJSOptions shape the SockJS endpoint.
type SockJSOptions struct {
	// DisconnectDelay is how long a session whose client has no request
	// open (a polling client that went quiet) is kept before it ends.
	DisconnectDelay time.Duration
	// HeartbeatDelay is how often SockJS's own heart-beat ("h") goes to a
	// streaming client, keeping proxies from timing the response out.
	HeartbeatDelay time.Duration
}

// SockJS returns the SockJS endpoint at prefix (the path the client's
// SockJS URL names, as "/ws"): /info, and the websocket, xhr-streaming,
// xhr-polling, eventsource, htmlfile and jsonp transports under it. The
// raw WebSocket at prefix itself, and at prefix+"/websocket" as Spring
// serves it, are ServeHTTP's: mount both.
//
// Browser origins are checked as for the WebSocket (Config.OriginPatterns);
// a request body is held to what one message can carry (Limits).
func (srv *Server) SockJS(prefix string, o SockJSOptions) http.Handler {
	opts := sockjs.DefaultOptions
	// The websocket transport is served by chatd itself (sockjsws.go):
	// sockjs-go only announces it in /info.
	opts.Websocket = true
	opts.RawWebsocket = false // prefix+"/websocket" goes to ServeHTTP
	opts.JSessionID = nil
	if o.DisconnectDelay > 0 {
		opts.DisconnectDelay = o.DisconnectDelay
	}
	if o.HeartbeatDelay > 0 {
		opts.HeartbeatDelay = o.HeartbeatDelay
	}
	// The origin was checked before the request got here (ServeHTTP).
	opts.CheckOrigin = func(*http.Request) bool { return true }
	e := &sockjsEndpoint{srv: srv, prefix: prefix, maxMessage: int64(srv.cfg.Limits.MaxFrameSize) * 2, heartbeat: opts.HeartbeatDelay,
		keepEnded: 2 * opts.DisconnectDelay, ended: map[string]time.Time{}, polling: map[string]int{}, polled: map[string]chan struct{}{}}
	e.closeWait = opts.DisconnectDelay
	e.h = sockjs.NewHandler(prefix, opts, func(sj sockjs.Session) {
		srv.serveSockJSSession(sj, e)
		e.end(sj.ID())
	})
	return e
}

// sockjsEndpoint checks a request before sockjs-go sees it.
type sockjsEndpoint struct {
	srv    *Server
	h      http.Handler
	prefix string
	// maxMessage bounds a request body (xhr_send): a frame's limit,
	// JSON-escaped and with room.
	maxMessage int64
	// heartbeat is how often SockJS's heart-beat goes out.
	heartbeat time.Duration

	// ended holds the sessions that ended within keepEnded: sockjs-go
	// keeps a closing session for its disconnect delay and answers a
	// message sent to it with a 500; the client is told 404 instead, as
	// for a session that is gone.
	mu        sync.Mutex
	ended     map[string]time.Time
	keepEnded time.Duration
	polling   map[string]int // session -> polls under way
	// polled is closed, and replaced, whenever a poll of the session
	// returns: a session ending waits for its client to take what it was
	// sent last (sockjsLink.close).
	polled    map[string]chan struct{}
	closeWait time.Duration
}

// polledSignal returns the channel closed at the session's next poll's
// return.
func (e *sockjsEndpoint) polledSignal(id string) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	ch := e.polled[id]
	if ch == nil {
		ch = make(chan struct{})
		e.polled[id] = ch
	}
	return ch
}

// pollReturned tells whoever waits that a poll of the session returned.
func (e *sockjsEndpoint) pollReturned(id string) {
	e.mu.Lock()
	if ch := e.polled[id]; ch != nil {
		close(ch)
		delete(e.polled, id)
	}
	e.mu.Unlock()
}

// end records that a session ended, and forgets those ended long enough
// ago that sockjs-go no longer knows them either.
func (e *sockjsEndpoint) end(id string) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ended[id] = now
	if ch := e.polled[id]; ch != nil {
		close(ch)
		delete(e.polled, id)
	}
	for k, t := range e.ended {
		if now.Sub(t) > e.keepEnded {
			delete(e.ended, k)
		}
	}
}

func (e *sockjsEndpoint) hasEnded(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.ended[id]
	return ok
}

// sessionOf is the SockJS session a request's path names
// (prefix/{server}/{session}/{transport}), or "".
func (e *sockjsEndpoint) sessionOf(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.Path, e.prefix+"/")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return ""
	}
	return parts[1]
}

func (e *sockjsEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := checkOrigin(r, e.srv.cfg.OriginPatterns); err != nil {
		e.srv.log.Debug("SockJS request refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if e.srv.isClosing() {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	if id := e.sessionOf(r); id != "" && strings.HasSuffix(r.URL.Path, "_send") && e.hasEnded(id) {
		http.Error(w, "SockJS session "+id+" has ended", http.StatusNotFound)
		return
	}
	if r.Method == http.MethodPost && r.Body != nil {
		// sockjs-go decodes a body whole and, if it is cut short, takes
		// what it got: a body over the limit is refused here instead.
		body, err := io.ReadAll(io.LimitReader(r.Body, e.maxMessage+1))
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if int64(len(body)) > e.maxMessage {
			http.Error(w, fmt.Sprintf("message too large: more than %d bytes", e.maxMessage), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/websocket"):
		if id := e.sessionOf(r); id == "" || strings.Contains(r.URL.Path[len(e.prefix):], ".") {
			http.Error(w, errSockJSPath.Error(), http.StatusNotFound)
			return
		}
		e.srv.accept(w, r, e.heartbeat)
	case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/xhr"):
		e.poll(w, r)
	case strings.Contains(r.URL.Path, "/jsonp"):
		// JSONP polling, for browsers without XHR, is not served: its
		// messages would wait in sockjs-go for the next poll with none of
		// the care xhr-polling gets here (poll, sockjsLink.close).
		http.NotFound(w, r)
	default:
		e.h.ServeHTTP(w, r)
	}
}

// anotherConnection is SockJS's close frame for a second request polling
// a session at once.
const anotherConnection = `c[2010,"Another connection still open"]` + "\n"

// poll serves an xhr-polling request. sockjs-go lets a poll's receiver go
// on a goroutine of its own after the response is written, so a client
// that polls again at once can find it still attached and be told
// "Another connection still open", which ends its SockJS connection.
// Where this endpoint has no other poll of the session under way, that
// answer can only be the race: the poll is served again a moment later.
// (TestSockJSPollsBackToBack fails without this.)
func (e *sockjsEndpoint) poll(w http.ResponseWriter, r *http.Request) {
	id := e.sessionOf(r)
	e.mu.Lock()
	e.polling[id]++
	alone := e.polling[id] == 1
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		if e.polling[id]--; e.polling[id] == 0 {
			delete(e.polling, id)
		}
		e.mu.Unlock()
	}()
	for attempt := 1; ; attempt++ {
		b := &bufferedResponse{header: http.Header{}, code: http.StatusOK}
		e.h.ServeHTTP(b, r)
		if alone && attempt < 20 && b.code == http.StatusOK && b.body.String() == anotherConnection && r.Context().Err() == nil {
			time.Sleep(time.Duration(attempt) * time.Millisecond)
			continue
		}
		for k, v := range b.header {
			w.Header()[k] = v
		}
		w.WriteHeader(b.code)
		_, _ = w.Write(b.body.Bytes())
		e.pollReturned(id)
		return
	}
}

// bufferedResponse holds an xhr-polling response (one SockJS frame).
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.code = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
func (b *bufferedResponse) Flush()                      {}

// serveSockJSSession runs one SockJS session as a STOMP session, on the
// goroutine sockjs-go starts for it.
func (srv *Server) serveSockJSSession(sj sockjs.Session, e *sockjsEndpoint) {
	if !srv.acquire() {
		_ = sj.Close(uint32(CloseGoingAway), "server is shutting down")
		return
	}
	r := sj.Request()
	s := newSession(srv, &sockjsLink{sess: sj, ep: e, cut: make(chan struct{})}, r)
	s.sj = &sj
	if !srv.add(s) {
		_ = sj.Close(uint32(CloseGoingAway), "server is shutting down")
		srv.wg.Done()
		return
	}
	srv.cfg.Observer.ConnectionOpened()
	s.lastRead.Store(time.Now().UnixNano())
	s.watchdog = time.AfterFunc(s.cfg.ConnectTimeout, s.checkSilence)
	srv.serve(s)
}

// readSockJS reads the session's frames from its SockJS messages until
// the session or the SockJS session ends.
func (s *Session) readSockJS() error {
	for {
		msg, err := s.sj.RecvCtx(s.ctx)
		if err != nil {
			if s.isClosing() {
				return errStop
			}
			return err
		}
		if err := s.readFrom(strings.NewReader(msg)); err != nil {
			return err
		}
	}
}

// checkOrigin lets a browser request in as coder/websocket's Accept does
// for the WebSocket endpoint (sockjs_test.go holds the two to the same
// verdicts): no Origin, the request's own host, or a host matching one
// of the patterns (path.Match, case aside; with "://", scheme and host).
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil {
		return fmt.Errorf("failed to parse Origin header %q: %w", origin, err)
	}
	if strings.EqualFold(r.Host, u.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		ok, err := path.Match(strings.ToLower(p), strings.ToLower(target))
		if err != nil {
			return fmt.Errorf("failed to parse path pattern %q: %w", p, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("request Origin %q is not authorized for Host %q", u.Host, r.Host)
}
