package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	chatdnode "github.com/chatd/chatd/node"
	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// node is one real chatd (embedded NATS and JetStream, real HTTP listener)
// started in-process on a free port. Its embedded NATS has a client port,
// so that a test can act as a backend service would (backend_test.go).
type node struct {
	t    testing.TB
	cfg  config.Config
	app  *chatdnode.Node
	logs failLog // the node's warnings and errors, printed if the test fails
}

// failLog keeps the first lines a node logs at WARN and above, so that a
// failing test shows what the server saw (a client's "internal error"
// is logged there with its cause) without the noise of passing runs.
type failLog struct {
	mu    sync.Mutex
	lines []string
}

const failLogLines = 200

func (l *failLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	if len(l.lines) < failLogLines {
		l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	}
	l.mu.Unlock()
	return len(p), nil
}

func (l *failLog) dump(t testing.TB, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) > 0 {
		t.Logf("node %s logged (WARN and above, first %d lines):\n%s", name, failLogLines, strings.Join(l.lines, "\n"))
	}
}

// testConfig is a dev-mode node on its own port and data dir. The port is
// chosen below the ephemeral range because a restarted node binds it again.
func testConfig(t testing.TB) config.Config {
	cfg, err := config.Parse([]string{"--dev", "--http", "127.0.0.1:" + strconv.Itoa(port.Free(t)), "--data-dir", t.TempDir(),
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(port.Free(t))})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func startNode(t testing.TB, mutate ...func(*config.Config)) *node {
	t.Helper()
	cfg := testConfig(t)
	for _, m := range mutate {
		m(&cfg)
	}
	n := &node{t: t, cfg: cfg}
	n.start()
	t.Cleanup(n.stop)
	t.Cleanup(func() {
		if t.Failed() {
			n.logs.dump(t, "at "+n.cfg.HTTPAddr)
		}
	})
	return n
}

func (n *node) start() {
	n.t.Helper()
	if err := n.tryStart(); err != nil {
		n.t.Fatal(err)
	}
}

// tryStart is start for goroutines other than the test's own.
func (n *node) tryStart() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := testlog.New()
	if os.Getenv("CHATD_TEST_LOG") == "" {
		log = slog.New(slog.NewTextHandler(&n.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	a, err := chatdnode.Start(ctx, n.cfg, "test", log)
	if err != nil {
		return fmt.Errorf("start chatd %s: %w", n.cfg.ServerName, err)
	}
	n.app = a
	// A restart keeps the data dir and the port, as an operator's would.
	n.cfg.HTTPAddr = a.Addr()
	return nil
}

func (n *node) stop() {
	if n.app == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.app.Shutdown(ctx); err != nil {
		n.t.Errorf("shutdown: %v", err)
	}
	n.app = nil
}

func (n *node) restart() {
	n.t.Helper()
	n.stop()
	n.start()
}

func (n *node) wsURL() string { return "ws://" + n.app.Addr() + n.cfg.WSPath }

// client is go-stomp's client over a real WebSocket.
type client struct {
	*stomptest.Client
	t    testing.TB
	user string
	// barrierDest is the node's read-receipt destination for a room of
	// the barrier's own.
	barrierDest string
}

func dial(t testing.TB, n *node, user string, opts ...func(*stomp.Conn) error) *client {
	t.Helper()
	c := stomptest.Dial(t, n.wsURL(), user, opts...)
	d, err := n.cfg.Destinations()
	if err != nil {
		t.Fatal(err)
	}
	return &client{Client: c, t: t, user: user, barrierDest: d.Read.Expand("barrier")}
}

// subscribe subscribes and waits for the server's RECEIPT, so the
// subscription is live when it returns.
func (c *client) subscribe(dest string, opts ...func(*frame.Frame) error) *stomp.Subscription {
	c.t.Helper()
	// go-stomp has no receipt option on SUBSCRIBE; a receipted SEND to our own
	// log queue works as a barrier because the server answers frames in order.
	sub, err := c.Subscribe(dest, stomp.AckAuto, opts...)
	if err != nil {
		c.t.Fatalf("%s subscribe %s: %v", c.user, dest, err)
	}
	c.barrier()
	return sub
}

// subscribeSince subscribes with since-id. It needs no barrier: the replay
// covers everything after the id whenever the subscription starts; and a
// barrier could block behind replayed MESSAGEs that go-stomp's small
// channels hold until the test reads them.
func (c *client) subscribeSince(dest string, since uint64) *stomp.Subscription {
	c.t.Helper()
	sub, err := c.Subscribe(dest, stomp.AckAuto, stomp.SubscribeOpt.Header("since-id", strconv.FormatUint(since, 10)))
	if err != nil {
		c.t.Fatalf("%s subscribe %s since %d: %v", c.user, dest, since, err)
	}
	return sub
}

// unsubscribe ends sub and waits for the server's RECEIPT, on which
// go-stomp closes sub.C. That channel is what is awaited, not Unsubscribe:
// go-stomp v3.1.5 wakes Unsubscribe's wait without its lock, so the wait
// can miss the RECEIPT and run out its timeout though the RECEIPT came
// (fixed upstream in go-stomp/stomp#151, in no release yet).
func (c *client) unsubscribe(sub *stomp.Subscription) {
	c.t.Helper()
	go func() { _ = sub.Unsubscribe() }()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-sub.C:
			if !ok {
				return
			}
			if m.Err != nil {
				c.t.Fatalf("%s unsubscribe %s: %v", c.user, sub.Destination(), m.Err)
			}
		case <-timeout:
			c.t.Fatalf("%s unsubscribe %s: no RECEIPT within 30s", c.user, sub.Destination())
		}
	}
}

// barrier returns once the server has handled every frame sent before it.
func (c *client) barrier() {
	c.t.Helper()
	if err := c.Send(c.barrierDest, "application/json", []byte(`{"lastReadId":1}`), stomp.SendOpt.Receipt); err != nil {
		c.t.Fatalf("%s barrier: %v", c.user, err)
	}
}

func (c *client) post(room, text string, opts ...func(*frame.Frame) error) {
	c.t.Helper()
	if err := c.tryPost(room, text, opts...); err != nil {
		c.t.Fatal(err)
	}
}

// tryPost is post for goroutines other than the test's: it returns the
// error rather than failing the test.
func (c *client) tryPost(room, text string, opts ...func(*frame.Frame) error) error {
	body, _ := json.Marshal(map[string]string{"message": text})
	opts = append(opts, stomp.SendOpt.Receipt)
	if err := c.Send("/app/chat."+room, "application/json", body, opts...); err != nil {
		return fmt.Errorf("%s post to %s: %w", c.user, room, err)
	}
	return nil
}

// next waits for the subscription's next MESSAGE.
func next(t testing.TB, sub *stomp.Subscription) *stomp.Message { return stomptest.Next(t, sub) }

// nextChat decodes the next room message.
func nextChat(t testing.TB, sub *stomp.Subscription) chat.Message {
	t.Helper()
	m := next(t, sub)
	var cm chat.Message
	if err := json.Unmarshal(m.Body, &cm); err != nil {
		t.Fatalf("decode %q: %v", m.Body, err)
	}
	return cm
}

// quiet asserts that nothing arrives on sub for a while. Used only to show
// that something did NOT happen; every positive check waits for an event.
func quiet(t testing.TB, sub *stomp.Subscription, d time.Duration) { stomptest.Quiet(t, sub, d) }

// dialRaw opens a raw STOMP connection to the node, for malformed and
// edge-case frames.
func dialRaw(t testing.TB, n *node) *stomptest.Raw {
	return stomptest.DialRaw(t, n.wsURL(), stomptest.DialOptions{})
}

func msgBody(text string) string { return fmt.Sprintf(`{"message":%q}`, text) }

// resendable renders message i to room as a raw SEND frame that can be
// sent again as documented: text "m<i>", client-msg-id "m<i>", receipt
// "r<i>".
func resendable(room string, i int) string {
	s := strconv.Itoa(i)
	return stomptest.Render("SEND", msgBody("m"+s), "destination:/app/chat."+room, "content-type:application/json",
		"client-msg-id:m"+s, "receipt:r"+s)
}
