package stompws_test

// The harness of the protocol tests: a real stompws.Server behind
// httptest with a small fake Handler and an Observer that records what it
// hears, and real clients: go-stomp over coder/websocket's NetConn, and
// raw frames over coder/websocket where malformed input is needed.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3"
)

// fakeHandler gives destinations the simplest meaning: a SEND to D goes,
// with its body and its headers whose names start with "x", as a MESSAGE
// to every subscription to D, with a "sender" header naming the session's
// user. It refuses at once what chatd would refuse before storing:
//   - a SEND or SUBSCRIBE to /refuse/... (KindDestination);
//   - a SEND whose body is "nope" (KindRequest, "invalid message body");
//   - a SEND whose body is "internal" (a plain error: "internal error");
//   - a SEND whose body is "kindless" (an Error without a kind);
//   - a SEND to /close-me, by closing its session (KindForbidden).
//
// CONNECT takes the login header as the user: missing or empty, or with a
// space, it is refused (KindConnect); "internal" fails with a plain error,
// "nobody" authenticates no user, and a login starting "expiring" expires
// after expiry.
type fakeHandler struct {
	expiry time.Duration
	// jobs, when set (holdSends), takes every SEND to be stored but those
	// to barrierDest, to a store that holds them, as a slow one would,
	// and completes them in order.
	jobs chan func()

	mu      sync.Mutex
	subs    map[string][]*stompws.Subscription // by destination
	stored  []string                           // bodies, in the order stored
	dropped int                                // deliveries a subscription refused
}

func newFakeHandler() *fakeHandler {
	return &fakeHandler{subs: map[string][]*stompws.Subscription{}, expiry: 200 * time.Millisecond}
}

// holdSends makes SENDs wait for release before they are stored. Call it
// before the server starts, so that its clean-up runs after the server's.
func (h *fakeHandler) holdSends(t testing.TB) (release func()) {
	gate := make(chan struct{})
	h.jobs = make(chan func(), 1<<16)
	go func() {
		<-gate
		for job := range h.jobs {
			job()
		}
	}()
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); close(h.jobs) })
	return release
}

func (h *fakeHandler) Authenticate(_ context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	login := req.Frame.Value("login")
	switch {
	case login == "":
		return stompws.Principal{}, stompws.Errorf(stompws.KindConnect, "login header required")
	case strings.Contains(login, " "):
		return stompws.Principal{}, stompws.Errorf(stompws.KindConnect, "invalid login: no spaces")
	case login == "internal":
		return stompws.Principal{}, errors.New("the user store is down")
	case login == "nobody":
		return stompws.Principal{}, nil
	case strings.HasPrefix(login, "expiring"):
		return stompws.Principal{User: login, Expires: time.Now().Add(h.expiry)}, nil
	}
	return stompws.Principal{User: login}, nil
}

func (h *fakeHandler) Send(_ context.Context, s *stompws.Session, f *frame.Frame, done func(error)) {
	dest, body := f.Value("destination"), string(f.Body)
	switch {
	case strings.HasPrefix(dest, "/refuse/"):
		done(stompws.Errorf(stompws.KindDestination, "cannot SEND to %s", dest))
		return
	case dest == "/close-me":
		s.Close(stompws.Errorf(stompws.KindForbidden, "forbidden: closed by the handler"))
		done(nil)
		return
	case body == "nope":
		done(stompws.Errorf(stompws.KindRequest, "invalid message body"))
		return
	case body == "internal":
		done(errors.New("the store failed"))
		return
	case body == "kindless":
		done(&stompws.Error{Message: "an error of no kind"})
		return
	}
	hdr := []frame.Header{{Name: "sender", Value: s.User()}}
	for _, kv := range f.Headers {
		if strings.HasPrefix(kv.Name, "x") {
			hdr = append(hdr, kv)
		}
	}
	m := stompws.NewMessage(dest, hdr, f.Body)
	store := func() {
		h.mu.Lock()
		h.stored = append(h.stored, body)
		subs := append([]*stompws.Subscription(nil), h.subs[dest]...)
		h.mu.Unlock()
		// As chatd's room feed: queued to every subscription, then each
		// session flushed once.
		for _, sub := range subs {
			if !sub.Queue(m) {
				h.mu.Lock()
				h.dropped++
				h.mu.Unlock()
			}
		}
		for _, sub := range subs {
			sub.Session().Flush()
		}
		done(nil)
	}
	if h.jobs != nil && dest != barrierDest {
		h.jobs <- store
		return
	}
	store()
}

func (h *fakeHandler) Subscribe(_ context.Context, sub *stompws.Subscription) error {
	if strings.HasPrefix(sub.Destination, "/refuse/") {
		return stompws.Errorf(stompws.KindDestination, "cannot SUBSCRIBE to %s", sub.Destination)
	}
	h.mu.Lock()
	h.subs[sub.Destination] = append(h.subs[sub.Destination], sub)
	h.mu.Unlock()
	return nil
}

func (h *fakeHandler) Unsubscribe(sub *stompws.Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	subs := h.subs[sub.Destination]
	for i, s := range subs {
		if s == sub {
			h.subs[sub.Destination] = append(subs[:i:i], subs[i+1:]...)
			return
		}
	}
}

// subscriptions returns the subscriptions to dest.
func (h *fakeHandler) subscriptions(dest string) []*stompws.Subscription {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*stompws.Subscription(nil), h.subs[dest]...)
}

func (h *fakeHandler) storedBodies() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.stored...)
}

func (h *fakeHandler) droppedDeliveries() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dropped
}

// recorder is an Observer that records what it hears.
type recorder struct {
	closed, slow, connected atomic.Int64 // connections closed, slow consumers cut off, sessions connected

	mu     sync.Mutex
	kinds  []string       // ErrorSent, in order
	frames map[string]int // FrameIn by command
}

func (r *recorder) ConnectionOpened()     {}
func (r *recorder) ConnectionClosed()     { r.closed.Add(1) }
func (r *recorder) SessionConnected()     { r.connected.Add(1) }
func (r *recorder) SessionEnded()         {}
func (r *recorder) FramesOut(string, int) {}
func (r *recorder) Subscribed()           {}
func (r *recorder) Unsubscribed()         {}
func (r *recorder) SlowConsumer()         { r.slow.Add(1) }
func (r *recorder) SessionCut(string)     {}

func (r *recorder) FrameIn(command string) {
	r.mu.Lock()
	if r.frames == nil {
		r.frames = map[string]int{}
	}
	r.frames[command]++
	r.mu.Unlock()
}

func (r *recorder) ErrorSent(kind string) {
	r.mu.Lock()
	r.kinds = append(r.kinds, kind)
	r.mu.Unlock()
}

func (r *recorder) errorKinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.kinds...)
}

func (r *recorder) framesIn(command string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames[command]
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling the condition itself
	}
}

// testServer is a stompws.Server with a fakeHandler behind httptest.
type testServer struct {
	srv *stompws.Server
	url string
	h   *fakeHandler
	obs *recorder
}

// startServer starts a server with the default configuration as changed
// by mutate; it shuts down when the test ends.
func startServer(t testing.TB, mutate ...func(*stompws.Config)) *testServer {
	t.Helper()
	return startServerWith(t, newFakeHandler(), mutate...)
}

func startServerWith(t testing.TB, h *fakeHandler, mutate ...func(*stompws.Config)) *testServer {
	t.Helper()
	cfg := stompws.DefaultConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	obs := &recorder{}
	cfg.Observer = obs
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := stompws.NewServer(cfg, h)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx, "test over"); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return &testServer{srv: srv, url: "ws://" + hs.Listener.Addr().String(), h: h, obs: obs}
}

// client is go-stomp's client over a real WebSocket.
type client struct {
	*stomptest.Client
	t    testing.TB
	user string
}

func dialStomp(t testing.TB, ts *testServer, user string) *client {
	t.Helper()
	return &client{Client: stomptest.Dial(t, ts.url, user), t: t, user: user}
}

// subscribe subscribes and returns once the server has handled it.
func (c *client) subscribe(dest string) *stomp.Subscription {
	c.t.Helper()
	sub, err := c.Subscribe(dest, stomp.AckAuto)
	if err != nil {
		c.t.Fatalf("%s subscribe %s: %v", c.user, dest, err)
	}
	c.barrier()
	return sub
}

// barrierDest is where client.barrier sends.
const barrierDest = "/barrier"

// barrier returns once the server has handled every frame sent before it:
// go-stomp has no receipt option on SUBSCRIBE, and the server answers
// frames in order.
func (c *client) barrier() {
	c.t.Helper()
	if err := c.Send(barrierDest, "text/plain", nil, stomp.SendOpt.Receipt); err != nil {
		c.t.Fatalf("%s barrier: %v", c.user, err)
	}
}

// post sends body to dest and waits for its receipt.
func (c *client) post(dest, body string) {
	c.t.Helper()
	if err := c.Send(dest, "text/plain", []byte(body), stomp.SendOpt.Receipt); err != nil {
		c.t.Fatalf("%s post to %s: %v", c.user, dest, err)
	}
}

// nextMessage waits for the subscription's next MESSAGE.
func nextMessage(t testing.TB, sub *stomp.Subscription) *stomp.Message { return stomptest.Next(t, sub) }

// dialRaw opens a raw STOMP connection, offering the subprotocols given
// (none given: the default three).
func dialRaw(t testing.TB, ts *testServer, subprotocols ...string) *stomptest.Raw {
	return stomptest.DialRaw(t, ts.url, stomptest.DialOptions{Subprotocols: subprotocols})
}

// dialWS opens a real WebSocket, closed when the test ends.
func dialWS(t testing.TB, url string, subprotocols ...string) *websocket.Conn {
	return stomptest.DialWS(t, url, stomptest.DialOptions{Subprotocols: subprotocols})
}

// deliver queues m for sub and flushes its session, as a room feed does
// with a burst of one.
func deliver(sub *stompws.Subscription, m *stompws.Message) bool {
	ok := sub.Queue(m)
	sub.Session().Flush()
	return ok
}
