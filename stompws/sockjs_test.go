package stompws_test

// STOMP over SockJS: a SockJS session is a STOMP session like a
// WebSocket's, over sockjs-go's transports; and what SockJS lets a client
// try (unknown sessions, huge bodies, idle sessions, other origins) gets
// a clear refusal and harms nobody else.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
)

// sockjsServer serves the raw WebSocket at /ws and SockJS under it, as
// chatd's node does.
type sockjsServer struct {
	*testServer
	base string // http://host:port/ws
}

func startSockJS(t testing.TB, o stompws.SockJSOptions, mutate ...func(*stompws.Config)) *sockjsServer {
	t.Helper()
	h := newFakeHandler()
	cfg := stompws.DefaultConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	obs := &recorder{}
	cfg.Observer = obs
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := stompws.NewServer(cfg, h)
	mux := http.NewServeMux()
	mux.Handle("GET /ws", srv)
	mux.Handle("GET /ws/websocket", srv)
	sj := srv.SockJS("/ws", o)
	for _, m := range []string{"GET", "POST", "OPTIONS"} {
		mux.Handle(m+" /ws/", sj)
	}
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx, "test over"); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	addr := hs.Listener.Addr().String()
	return &sockjsServer{testServer: &testServer{srv: srv, url: "ws://" + addr + "/ws", h: h, obs: obs}, base: "http://" + addr + "/ws"}
}

var sessionSeq atomic.Int64

// xhrSession is a SockJS client over the xhr-polling transport.
type xhrSession struct {
	t    testing.TB
	url  string // .../ws/000/<session>
	rest []byte // STOMP bytes received and not yet read as frames
}

func (s *sockjsServer) xhr(t testing.TB) *xhrSession {
	x := &xhrSession{t: t, url: fmt.Sprintf("%s/000/s%d/", s.base, sessionSeq.Add(1))}
	if f := x.poll(); f != "o" {
		t.Fatalf("first poll %q, want the open frame o", f)
	}
	return x
}

// post POSTs body to the session's path and returns the status and body.
func (x *xhrSession) post(path string, body []byte) (int, string) {
	x.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, x.url+path, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		x.t.Fatalf("POST %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// poll takes one SockJS frame ("o", "h", "a[...]" or "c[...]").
func (x *xhrSession) poll() string {
	x.t.Helper()
	code, body := x.post("xhr", nil)
	if code != http.StatusOK {
		x.t.Fatalf("poll: %d %s", code, body)
	}
	return strings.TrimSuffix(body, "\n")
}

// send sends STOMP text as one SockJS message.
func (x *xhrSession) send(stomp string) {
	x.t.Helper()
	b, _ := json.Marshal([]string{stomp})
	if code, body := x.post("xhr_send", b); code != http.StatusNoContent {
		x.t.Fatalf("xhr_send: %d %s", code, body)
	}
}

// frame polls until a whole STOMP frame has come, skipping heart-beats.
func (x *xhrSession) frame() string {
	x.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for {
			v, n, err := frame.Scan(x.rest)
			if err != nil {
				x.t.Fatalf("malformed frame %q: %v", x.rest, err)
			}
			if n == 0 {
				break
			}
			x.rest = x.rest[n:]
			if len(v.Command()) > 0 {
				return string(v.Command()) + " " + string(v.Body())
			}
		}
		if time.Now().After(deadline) {
			x.t.Fatal("no STOMP frame within 10 s")
		}
		f := x.poll()
		switch {
		case strings.HasPrefix(f, "a"):
			var msgs []string
			if err := json.Unmarshal([]byte(f[1:]), &msgs); err != nil {
				x.t.Fatalf("bad array frame %q: %v", f, err)
			}
			for _, m := range msgs {
				x.rest = append(x.rest, m...)
			}
		case strings.HasPrefix(f, "c"):
			x.t.Fatalf("session closed: %s", f)
		}
	}
}

// TestSockJSSessions: CONNECT, SUBSCRIBE, SEND, MESSAGE and DISCONNECT
// over SockJS's xhr-polling and websocket transports, with a raw
// WebSocket client in the same room.
func TestSockJSSessions(t *testing.T) {
	t.Parallel()
	s := startSockJS(t, stompws.SockJSOptions{})
	raw := dialStomp(t, s.testServer, "raw")
	rawSub := raw.subscribe("/queue/room")

	x := s.xhr(t)
	x.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:polly", "heart-beat:0,0"))
	if f := x.frame(); !strings.HasPrefix(f, "CONNECTED") {
		t.Fatalf("want CONNECTED, got %q", f)
	}
	x.send(stomptest.Render("SUBSCRIBE", "", "id:1", "destination:/queue/room", "receipt:sub"))
	if f := x.frame(); !strings.HasPrefix(f, "RECEIPT") {
		t.Fatalf("want RECEIPT, got %q", f)
	}
	raw.post("/queue/room", "from raw")
	if f := x.frame(); f != "MESSAGE from raw" {
		t.Fatalf("xhr client got %q", f)
	}
	x.send(stomptest.Render("SEND", "from polly ✓", "destination:/queue/room", "receipt:s"))
	for _, want := range []string{"MESSAGE from polly ✓", "RECEIPT "} {
		if f := x.frame(); f != want {
			t.Fatalf("xhr client got %q, want %q", f, want)
		}
	}
	if m := nextMessage(t, rawSub); string(m.Body) != "from raw" {
		t.Fatalf("raw client got %q", m.Body)
	}
	if m := nextMessage(t, rawSub); string(m.Body) != "from polly ✓" || m.Header.Get("sender") != "polly" {
		t.Fatalf("raw client got %q from %q", m.Body, m.Header.Get("sender"))
	}
	x.send(stomptest.Render("DISCONNECT", "", "receipt:bye"))
	if f := x.frame(); f != "RECEIPT " {
		t.Fatalf("want the DISCONNECT's RECEIPT, got %q", f)
	}
	if f := x.poll(); !strings.HasPrefix(f, "c[1000") {
		t.Fatalf("want a normal close, got %q", f)
	}

	// An ERROR reaches a polling client before the close it announces:
	// sockjs-go drops what a closing session still holds.
	bad := s.xhr(t)
	bad.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:bad"))
	bad.frame()
	bad.send("BOGUS\n\n\x00")
	if f := bad.frame(); !strings.HasPrefix(f, "ERROR") {
		t.Fatalf("want ERROR, got %q", f)
	}
	if f := bad.poll(); !strings.HasPrefix(f, "c[1008") {
		t.Fatalf("want a policy close after the ERROR, got %q", f)
	}

	// The websocket transport.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, s.url+"/000/w1/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ws.CloseNow() }()
	read := func() string {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if f := read(); f != "o" {
		t.Fatalf("want o, got %q", f)
	}
	b, _ := json.Marshal([]string{stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:wes")})
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	if f := read(); !strings.HasPrefix(f, `a["CONNECTED\n`) || !strings.Contains(f, `user-name:wes`) {
		t.Fatalf("want CONNECTED over the websocket transport, got %q", f)
	}
	if n := s.obs.connected.Load(); n < 3 {
		t.Fatalf("%d sessions connected, want the raw, xhr and websocket ones counted", n)
	}
}

// TestSockJSAbuse: what SockJS lets a client try gets a clear refusal, and
// a bystander on the raw WebSocket loses nothing.
func TestSockJSAbuse(t *testing.T) {
	t.Parallel()
	s := startSockJS(t, stompws.SockJSOptions{}, func(c *stompws.Config) { c.Limits.MaxFrameSize = 4 << 10 })
	by := dialStomp(t, s.testServer, "bystander")
	bySub := by.subscribe("/queue/by")
	stillFine := func(what string) {
		t.Helper()
		by.post("/queue/by", what)
		if m := nextMessage(t, bySub); string(m.Body) != what {
			t.Fatalf("bystander got %q after %s", m.Body, what)
		}
	}

	unknown := &xhrSession{t: t, url: s.base + "/000/never-opened/"}
	if code, _ := unknown.post("xhr_send", []byte(`["SEND\n\n\u0000"]`)); code != http.StatusNotFound {
		t.Fatalf("xhr_send to an unknown session: %d, want 404", code)
	}
	stillFine("after an unknown session")

	x := s.xhr(t)
	x.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:big"))
	x.frame()
	huge, _ := json.Marshal([]string{strings.Repeat("x", 20<<10)})
	if code, body := x.post("xhr_send", huge); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "too large") {
		t.Fatalf("oversized xhr_send: %d %q, want 413 saying too large", code, body)
	}
	// The session lives on: the refused body never reached it.
	x.send(stomptest.Render("SUBSCRIBE", "", "id:1", "destination:/queue/by", "receipt:r"))
	if f := x.frame(); f != "RECEIPT " {
		t.Fatalf("after an oversized body: %q", f)
	}
	stillFine("after an oversized body")

	x.send(stomptest.Render("DISCONNECT", "", "receipt:bye"))
	x.frame()
	waitFor(t, "the SockJS session to end", func() bool { return s.obs.closed.Load() >= 1 })
	if code, _ := x.post("xhr_send", []byte(`["SEND\n\n\u0000"]`)); code != http.StatusNotFound {
		t.Fatalf("xhr_send to a closed session: %d, want 404", code)
	}

	// An oversized message on the websocket transport cuts that
	// connection alone.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, s.url+"/000/w2/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ws.CloseNow() }()
	ws.SetReadLimit(-1)
	if _, b, err := ws.Read(ctx); err != nil || string(b) != "o" {
		t.Fatalf("open: %q %v", b, err)
	}
	_ = ws.Write(ctx, websocket.MessageText, huge)
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("an oversized SockJS WebSocket message did not end the connection")
			}
			break
		}
	}
	stillFine("after an oversized WebSocket message")
}

// TestSockJSOriginsAsWebSocket: SockJS requests from a browser origin are
// let in exactly when the WebSocket endpoint's handshake (coder/websocket's
// Accept) lets them in.
func TestSockJSOriginsAsWebSocket(t *testing.T) {
	t.Parallel()
	s := startSockJS(t, stompws.SockJSOptions{}, func(c *stompws.Config) {
		c.OriginPatterns = []string{"chat.example.com", "*.example.org", "https://app.example.net"}
	})
	host := strings.TrimPrefix(s.base, "http://")
	host = strings.TrimSuffix(host, "/ws")
	for _, origin := range []string{
		"", "http://" + host, "https://chat.example.com", "https://CHAT.example.com", "https://x.example.org",
		"https://example.org", "https://app.example.net", "http://app.example.net", "https://evil.example",
		"https://chat.example.com.evil.example", "null", "::bad",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		ws, _, wsErr := websocket.Dial(ctx, s.url, &websocket.DialOptions{HTTPHeader: hdr, Subprotocols: []string{"v12.stomp"}})
		if wsErr == nil {
			_ = ws.CloseNow()
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/info", nil)
		req.Header = hdr
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if sockjsOK := resp.StatusCode == http.StatusOK; sockjsOK != (wsErr == nil) {
			t.Errorf("origin %q: WebSocket let in %v, SockJS /info answered %d", origin, wsErr == nil, resp.StatusCode)
		}
	}
}

// TestSockJSIdleSessionsEnd: polling clients that go quiet are let go
// after the disconnect delay, and the server is back to the goroutines it
// had: thousands of abandoned sessions hold nothing for long.
func TestSockJSIdleSessionsEnd(t *testing.T) {
	// Not parallel: it counts the process's goroutines, which other tests'
	// sessions would move.
	s := startSockJS(t, stompws.SockJSOptions{DisconnectDelay: 300 * time.Millisecond})
	settle := func() int {
		var g int
		for range 50 {
			// The HTTP client's idle connections hold two goroutines each.
			http.DefaultClient.CloseIdleConnections()
			runtime.GC()
			g = runtime.NumGoroutine()
			time.Sleep(20 * time.Millisecond)
			if runtime.NumGoroutine() == g {
				break
			}
		}
		return g
	}
	base := settle()
	const n = 200
	for range n {
		x := s.xhr(t)
		x.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:idle"))
		x.frame()
	}
	waitFor(t, "every abandoned session to end", func() bool { return s.obs.closed.Load() == n && s.srv.Sessions() == 0 })
	deadline := time.Now().Add(10 * time.Second)
	for settle() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the sessions:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSockJSPollOnAnotherNode: behind a load balancer without session
// affinity, a polling client's next request may reach a node that does not
// hold its session. A send there gets 404; a poll there opens a new
// session ("o"), which sockjs-client takes as a lost session and closes
// (1006, "Server lost session"), so the app reconnects and resumes with
// since-id. Each node's session ends after its disconnect delay.
func TestSockJSPollOnAnotherNode(t *testing.T) {
	t.Parallel()
	a := startSockJS(t, stompws.SockJSOptions{DisconnectDelay: 300 * time.Millisecond})
	b := startSockJS(t, stompws.SockJSOptions{DisconnectDelay: 300 * time.Millisecond})
	x := a.xhr(t)
	x.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:wanderer"))
	if f := x.frame(); !strings.HasPrefix(f, "CONNECTED") {
		t.Fatalf("got %q, want CONNECTED", f)
	}
	onB := &xhrSession{t: t, url: strings.Replace(x.url, a.base, b.base, 1)}
	msg, _ := json.Marshal([]string{stomptest.Render("SEND", "", "destination:/queue/x")})
	if code, body := onB.post("xhr_send", msg); code != http.StatusNotFound {
		t.Fatalf("xhr_send on the other node: %d %q, want 404", code, body)
	}
	if f := onB.poll(); f != "o" {
		t.Fatalf("poll on the other node: %q, want o (a new session there)", f)
	}
	waitFor(t, "the first node's session to end", func() bool { return a.obs.closed.Load() == 1 && a.srv.Sessions() == 0 })
	waitFor(t, "the second node's unused session to end", func() bool { return b.srv.Sessions() == 0 })
}

// offTest is a test's TB for a goroutine of its own: a fatal failure is
// reported and ends that goroutine, not the test's (testing.T.FailNow is
// for the test's goroutine only).
type offTest struct{ testing.TB }

func (o offTest) Fatal(args ...any) {
	o.Helper()
	o.Error(args...)
	runtime.Goexit()
}

func (o offTest) Fatalf(format string, args ...any) {
	o.Helper()
	o.Errorf(format, args...)
	runtime.Goexit()
}

// TestSockJSPollsBackToBack: a client that polls again the moment a poll
// returns (as sockjs-client does) is never told "Another connection still
// open", however fast it is.
func TestSockJSPollsBackToBack(t *testing.T) {
	t.Parallel()
	s := startSockJS(t, stompws.SockJSOptions{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			x := s.xhr(offTest{t})
			x.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:quick", "heart-beat:0,0"))
			x.frame()
			dest := fmt.Sprintf("/queue/q%d", w)
			x.send(stomptest.Render("SUBSCRIBE", "", "id:1", "destination:"+dest))
			for i := range 150 {
				// Each message is one poll's answer, each poll begun the
				// moment the one before returned.
				x.send(stomptest.Render("SEND", fmt.Sprint(i), "destination:"+dest))
				if f := x.frame(); f != fmt.Sprintf("MESSAGE %d", i) {
					t.Errorf("poller %d got %q, want message %d", w, f, i)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkSockJSIdleSessions measures what an idle SockJS session costs
// the server: b.N polling sessions connected, then left without a poll
// open, as many browsers between polls.
//
//	go test -run '^$' -bench SockJSIdleSessions -benchtime 2000x ./stompws
func BenchmarkSockJSIdleSessions(b *testing.B) {
	s := startSockJS(b, stompws.SockJSOptions{DisconnectDelay: time.Minute})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		x := s.xhr(b)
		x.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:idle", "heart-beat:0,0"))
		x.frame()
	}
	b.StopTimer()
	http.DefaultClient.CloseIdleConnections()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(b.N), "heap-B/session")
	b.ReportMetric(float64(runtime.NumGoroutine())/float64(b.N), "goroutines/session")
}

// sockjsWS is a client of SockJS's websocket transport.
type sockjsWS struct {
	t    testing.TB
	ctx  context.Context
	ws   *websocket.Conn
	rest string // STOMP input not yet read as frames
}

func dialSockJSWS(t testing.TB, s *sockjsServer, session string) *sockjsWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	ws, _, err := websocket.Dial(ctx, s.url+"/000/"+session+"/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	c := &sockjsWS{t: t, ctx: ctx, ws: ws}
	if f := c.sockjsFrame(); f != "o" {
		t.Fatalf("want the open frame o, got %q", f)
	}
	return c
}

// sockjsFrame reads the next SockJS frame, whole.
func (c *sockjsWS) sockjsFrame() string {
	c.t.Helper()
	typ, b, err := c.ws.Read(c.ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		c.t.Fatalf("SockJS frame sent as %v, want text", typ)
	}
	return string(b)
}

// send sends pieces of STOMP input as one SockJS message.
func (c *sockjsWS) send(pieces ...string) {
	c.t.Helper()
	b, _ := json.Marshal(pieces)
	if err := c.ws.Write(c.ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// frame returns the next STOMP frame (command and body, NUL dropped),
// skipping heart-beats; beats counts the SockJS "h" frames and STOMP EOLs
// it passed.
func (c *sockjsWS) frame() (f string, hs, eols int) {
	c.t.Helper()
	for {
		for strings.HasPrefix(c.rest, "\n") {
			c.rest = c.rest[1:]
			eols++
		}
		if i := strings.IndexByte(c.rest, 0); i >= 0 {
			f, c.rest = c.rest[:i], c.rest[i+1:]
			return f, hs, eols
		}
		sf := c.sockjsFrame()
		switch {
		case sf == "h":
			hs++
		case strings.HasPrefix(sf, "a"):
			var msgs []string
			if err := json.Unmarshal([]byte(sf[1:]), &msgs); err != nil {
				c.t.Fatalf("array frame %q: %v", sf, err)
			}
			c.rest += strings.Join(msgs, "")
		default:
			c.t.Fatalf("want an array or heart-beat frame, got %q", sf)
		}
	}
}

// TestSockJSWebSocketTransport: SockJS's websocket transport frames
// STOMP as SockJS clients read it (text that survives JSON whatever the
// body holds), takes a frame split across a message's strings, gives
// SockJS's heart-beat to a client that wants no STOMP ones and STOMP's to
// one that does, and says why it closes in a SockJS close frame.
func TestSockJSWebSocketTransport(t *testing.T) {
	t.Parallel()
	s := startSockJS(t, stompws.SockJSOptions{HeartbeatDelay: 100 * time.Millisecond},
		func(c *stompws.Config) { c.HeartBeatMin = 50 * time.Millisecond })

	quiet := dialSockJSWS(t, s, "quiet")
	quiet.send("CONNECT\naccept-version:1.2\nhost:/\nlog", "in:quiet\nheart-beat:0,0\n\n\x00")
	if f, _, _ := quiet.frame(); !strings.HasPrefix(f, "CONNECTED\n") || !strings.Contains(f, "heart-beat:0,0") {
		t.Fatalf("want CONNECTED promising no STOMP heart-beats, got %q", f)
	}
	quiet.send(stomptest.Render("SUBSCRIBE", "", "id:1", "destination:/queue/q", "receipt:r1"))
	if f, _, _ := quiet.frame(); !strings.HasPrefix(f, "RECEIPT\n") {
		t.Fatalf("want the RECEIPT, got %q", f)
	}
	// Bodies with what JSON escapes, and bytes that are not UTF-8 (SockJS
	// is text: they arrive as U+FFFD).
	body := "{\"message\":\"say \\\"hi\\\"\\n\"}\t\r\u2028 안녕 😀"
	by := dialStomp(t, s.testServer, "bystander")
	by.post("/queue/q", body)
	by.post("/queue/q", "a\xffb")
	f, _, _ := quiet.frame()
	if _, got, _ := strings.Cut(f, "\n\n"); !strings.HasPrefix(f, "MESSAGE\n") || got != body {
		t.Fatalf("want the MESSAGE with body %q, got %q", body, f)
	}
	f, _, _ = quiet.frame()
	if _, got, _ := strings.Cut(f, "\n\n"); got != "a\uFFFDb" {
		t.Fatalf("want the invalid byte as U+FFFD, got %q", f)
	}
	// Quiet: SockJS heart-beats ("h"), no STOMP EOLs.
	by.post("/queue/q", "later")
	time.Sleep(350 * time.Millisecond)
	by.post("/queue/q", "after the beats")
	for {
		f, hs, eols := quiet.frame()
		if eols > 0 {
			t.Fatalf("%d STOMP heart-beats to a client that asked for none", eols)
		}
		if strings.HasSuffix(f, "after the beats") {
			if hs == 0 {
				t.Fatal("no SockJS heart-beat in 350ms, with one due every 100ms")
			}
			break
		}
	}

	// A client asking for STOMP heart-beats gets them as messages (a["\n"]),
	// which stomp.js counts as the server's activity.
	beating := dialSockJSWS(t, s, "beating")
	beating.send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:beating", "heart-beat:0,100"))
	if f, _, _ := beating.frame(); !strings.HasPrefix(f, "CONNECTED\n") {
		t.Fatalf("want CONNECTED, got %q", f)
	}
	time.Sleep(350 * time.Millisecond)
	beating.send(stomptest.Render("SUBSCRIBE", "", "id:1", "destination:/queue/b", "receipt:r2"))
	if f, hs, eols := beating.frame(); !strings.HasPrefix(f, "RECEIPT\n") || eols == 0 || hs > 0 {
		t.Fatalf("got %q after %d STOMP and %d SockJS heart-beats; want the RECEIPT after STOMP ones only", f, eols, hs)
	}

	// A message that is not SockJS's: an ERROR, then the SockJS close
	// frame and the WebSocket's close, both with code and reason.
	bad := dialSockJSWS(t, s, "bad")
	if err := bad.ws.Write(bad.ctx, websocket.MessageText, []byte(`{"not":"an array"}`)); err != nil {
		t.Fatal(err)
	}
	if f, _, _ := bad.frame(); !strings.HasPrefix(f, "ERROR\n") || !strings.Contains(f, "malformed SockJS message") {
		t.Fatalf("want an ERROR naming the malformed SockJS message, got %q", f)
	}
	if f := bad.sockjsFrame(); f != `c[1008,"STOMP ERROR sent"]` {
		t.Fatalf("want the SockJS close frame, got %q", f)
	}
	if _, _, err := bad.ws.Read(bad.ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("want the WebSocket closed with 1008, got %v", err)
	}

	// A URL SockJS does not form is refused.
	if _, resp, err := websocket.Dial(quiet.ctx, s.url+"/000/a.b/websocket", nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("websocket transport at a session id with a dot: %v, want 404", err)
	}

	// Shutdown: its reason reaches the SockJS client.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx, "going down"); err != nil {
		t.Fatal(err)
	}
	if f, _, _ := quiet.frame(); !strings.HasPrefix(f, "ERROR\n") || !strings.Contains(f, "going down") {
		t.Fatalf("want the shutdown ERROR, got %q", f)
	}
	if f := quiet.sockjsFrame(); f != `c[1012,"server is shutting down"]` {
		t.Fatalf("want the SockJS close frame of a shutdown, got %q", f)
	}
}
