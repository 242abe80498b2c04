package stompws_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/stompws"
	"github.com/coder/websocket"
)

// sessionGoroutines counts the server's session readers and writers, and
// whether its poller runs.
func sessionGoroutines() (readers, writers int, poller bool) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return bytes.Count(buf, []byte("stompws.(*Server).serve(")), bytes.Count(buf, []byte("stompws.(*Session).writeLoop(")),
		bytes.Contains(buf, []byte("stompws.(*poller).run("))
}

// closeCounter is an Observer that counts closed connections, and keeps
// why the server cut any.
type closeCounter struct {
	closed atomic.Int32
	mu     sync.Mutex
	cuts   []string
}

func (c *closeCounter) ConnectionClosed()     { c.closed.Add(1) }
func (c *closeCounter) ConnectionOpened()     {}
func (c *closeCounter) SessionConnected()     {}
func (c *closeCounter) SessionEnded()         {}
func (c *closeCounter) FrameIn(string)        {}
func (c *closeCounter) FramesOut(string, int) {}
func (c *closeCounter) Subscribed()           {}
func (c *closeCounter) Unsubscribed()         {}
func (c *closeCounter) ErrorSent(string)      {}
func (c *closeCounter) SlowConsumer()         {}

func (c *closeCounter) SessionCut(reason string) {
	c.mu.Lock()
	c.cuts = append(c.cuts, reason)
	c.mu.Unlock()
}

func (c *closeCounter) cutReasons() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.cuts...)
}

// TestIdleSessionsHoldNoGoroutine: a session whose client is silent holds
// no goroutine: its reader parks in the server's poller after a second,
// and heart-beats, which keep going out, are written by their timer
// without starting a writer goroutine. A parked session wakes for a frame
// from its client, for its client closing the connection, and for the
// server closing it; shutdown stops the poller.
func TestIdleSessionsHoldNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("idle sessions park in epoll, on Linux only")
	}
	const n = 50
	cfg := stompws.DefaultConfig()
	cfg.HeartBeatMin = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	obs := &closeCounter{}
	cfg.Observer = obs
	srv := stompws.NewServer(cfg, &roomHandler{subs: map[*stompws.Subscription]struct{}{}})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.CloseNow() }()
		connect := "CONNECT\naccept-version:1.2\nhost:t\nlogin:u" + strconv.Itoa(i) + "\nheart-beat:0,50\n\n\x00"
		if err := c.Write(ctx, websocket.MessageText, []byte(connect)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || !bytes.HasPrefix(b, []byte("CONNECTED\n")) {
			t.Fatalf("CONNECT: %q %v", b, err)
		}
		conns[i] = c
	}
	// Clients keep reading: heart-beats go on arriving at parked sessions.
	beats := make([]atomic.Int32, n)
	receipts := make([]chan string, n)
	for i, c := range conns {
		receipts[i] = make(chan string, 4)
		go func() {
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					return
				}
				if string(b) == "\n" {
					beats[i].Add(1)
				} else {
					receipts[i] <- string(b)
				}
			}
		}()
	}
	allParked := func(why string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			readers, writers, _ := sessionGoroutines()
			if readers == 0 && writers == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d readers and %d writers of %d idle sessions still hold goroutines", why, readers, writers, n)
			}
			time.Sleep(10 * time.Millisecond) // polling the condition itself
		}
	}
	allParked("after CONNECT")
	if _, _, poller := sessionGoroutines(); !poller {
		t.Fatal("sessions parked, but no poller runs")
	}
	before := beats[0].Load()
	deadline := time.Now().Add(5 * time.Second) // heart-beats every 50 ms
	for beats[0].Load() < before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("a parked session got %d heart-beats in 5 s", beats[0].Load()-before)
		}
		if _, writers, _ := sessionGoroutines(); writers != 0 {
			t.Fatalf("%d writer goroutines run for heart-beats alone", writers)
		}
		time.Sleep(10 * time.Millisecond) // polling the condition itself
	}

	// A frame wakes each parked session; it answers and parks again.
	for i, c := range conns {
		if err := c.Write(ctx, websocket.MessageText, []byte("SEND\ndestination:/app/x\nreceipt:r"+strconv.Itoa(i)+"\n\n\x00")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range conns {
		select {
		case b := <-receipts[i]:
			if !strings.HasPrefix(b, "RECEIPT\nreceipt-id:r"+strconv.Itoa(i)+"\n") {
				t.Fatalf("session %d: want its RECEIPT, got %q", i, b)
			}
		case <-ctx.Done():
			t.Fatalf("session %d: no RECEIPT from a parked session", i)
		}
	}
	allParked("after a SEND each")

	// Clients that go away end their parked sessions.
	for _, c := range conns[:n/2] {
		_ = c.CloseNow()
	}
	deadline = time.Now().Add(10 * time.Second)
	for obs.closed.Load() < n/2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sessions whose clients left have ended", obs.closed.Load(), n/2)
		}
		time.Sleep(10 * time.Millisecond) // polling the condition itself
	}

	// Shutdown closes the rest from the server's side, and stops the poller.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx, "bye"); err != nil {
		t.Fatalf("shutdown with parked sessions: %v", err)
	}
	if got := obs.closed.Load(); got != n {
		t.Fatalf("%d of %d sessions ended after shutdown", got, n)
	}
	// A writer that closed its connection may still be returning.
	deadline = time.Now().Add(5 * time.Second)
	for {
		readers, writers, poller := sessionGoroutines()
		if readers+writers == 0 && !poller {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after shutdown: %d readers, %d writers, poller running %v", readers, writers, poller)
		}
		time.Sleep(10 * time.Millisecond) // polling the condition itself
	}
}
