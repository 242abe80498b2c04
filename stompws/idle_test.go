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
	"testing"
	"time"

	"github.com/chatd/chatd/stompws"
	"github.com/coder/websocket"
)

// sessionGoroutines counts the server's session readers and writers.
func sessionGoroutines() (readers, writers int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return bytes.Count(buf, []byte("stompws.(*Session).run(")), bytes.Count(buf, []byte("stompws.(*Session).writeLoop("))
}

// TestIdleSessionsHoldNoWriter: an idle session keeps one goroutine, its
// reader; the writer starts for each burst (here: heart-beats) and exits.
// Sessions that are told things still get them.
func TestIdleSessionsHoldNoWriter(t *testing.T) {
	const n = 50
	cfg := stompws.DefaultConfig()
	cfg.HeartBeatSend = 50 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := stompws.NewServer(cfg, &roomHandler{subs: map[*stompws.Subscription]struct{}{}})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		connect := "CONNECT\naccept-version:1.2\nhost:t\nlogin:u" + strconv.Itoa(i) + "\nheart-beat:0,50\n\n\x00"
		if err := c.Write(ctx, websocket.MessageText, []byte(connect)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := c.Read(ctx); err != nil || !bytes.HasPrefix(b, []byte("CONNECTED\n")) {
			t.Fatalf("CONNECT: %q %v", b, err)
		}
		conns[i] = c
	}
	// Heart-beats keep coming to every session while nothing else does.
	for _, c := range conns {
		for range 2 {
			if _, b, err := c.Read(ctx); err != nil || string(b) != "\n" {
				t.Fatalf("want a heart-beat, got %q %v", b, err)
			}
		}
	}
	// Between beats no session has a writer; every one has its reader.
	deadline := time.Now().Add(5 * time.Second)
	for {
		readers, writers := sessionGoroutines()
		if readers != n {
			t.Fatalf("%d session readers, want %d", readers, n)
		}
		if writers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d idle sessions still hold a writer goroutine", writers, n)
		}
		time.Sleep(5 * time.Millisecond) // polling the condition itself
	}
	// A frame for an idle session starts a writer at once.
	if err := conns[0].Write(ctx, websocket.MessageText, []byte("SEND\ndestination:/app/x\nreceipt:r1\n\n\x00")); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := conns[0].Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != "\n" {
			if !bytes.HasPrefix(b, []byte("RECEIPT\nreceipt-id:r1\n")) {
				t.Fatalf("want the RECEIPT, got %q", b)
			}
			break
		}
	}
}
