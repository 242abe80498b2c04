package stompws_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/wstest"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
)

// roomHandler is the smallest real Handler: every login is accepted and
// every subscription joins one room, whose members the benchmark delivers
// to as chatd's room feed does.
type roomHandler struct {
	mu   sync.Mutex
	subs map[*stompws.Subscription]struct{}
}

func (h *roomHandler) Authenticate(_ context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	return stompws.Principal{User: req.Frame.Value("login")}, nil
}

func (h *roomHandler) Send(_ context.Context, _ *stompws.Session, _ *frame.Frame, done func(error)) {
	done(nil)
}

func (h *roomHandler) Subscribe(_ context.Context, sub *stompws.Subscription) error {
	h.mu.Lock()
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	return nil
}

func (h *roomHandler) Unsubscribe(sub *stompws.Subscription) {
	h.mu.Lock()
	delete(h.subs, sub)
	h.mu.Unlock()
}

func (h *roomHandler) members() []*stompws.Subscription {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*stompws.Subscription, 0, len(h.subs))
	for s := range h.subs {
		out = append(out, s)
	}
	return out
}

// drainingClient reads everything its session sends and counts frames.
func drainingClient(ctx context.Context, url string, i int, frames *atomic.Int64, progress chan<- struct{}) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.SetReadLimit(-1)
	setup := "CONNECT\naccept-version:1.2\nhost:bench\nlogin:u" + strconv.Itoa(i) + "\nheart-beat:0,0\n\n\x00" +
		"SUBSCRIBE\nid:0\ndestination:/topic/room\nreceipt:r\n\n\x00"
	if err := c.Write(ctx, websocket.MessageText, []byte(setup)); err != nil {
		_ = c.CloseNow()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	// CONNECTED and RECEIPT: the subscription is in place after these two.
	got := 0
	for got < 2 {
		_, b, err := c.Read(ctx)
		if err != nil {
			_ = c.CloseNow()
			return nil, fmt.Errorf("read CONNECTED/RECEIPT: %w", err)
		}
		got += bytes.Count(b, []byte{0})
	}
	wstest.CountFrames(c, frames, progress)
	return c, nil
}

// BenchmarkFanout delivers one room message to N subscribers, each a real
// session on a loopback WebSocket whose client reads and counts frames, and
// waits until every client has it: one op is one message reaching N
// subscribers. Allocations include the clients'.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run("subscribers="+strconv.Itoa(n), func(b *testing.B) { benchFanout(b, n) })
	}
}

func benchFanout(b *testing.B, n int) {
	h := &roomHandler{subs: map[*stompws.Subscription]struct{}{}}
	cfg := stompws.DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := stompws.NewServer(cfg, h)
	hs := httptest.NewServer(srv) // 127.0.0.1
	defer hs.Close()
	url := "ws://" + hs.Listener.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var frames atomic.Int64
	progress := make(chan struct{}, 1)
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := drainingClient(ctx, url, i, &frames, progress)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.CloseNow()
			}
		}
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx, "benchmark done")
	}()
	if err := <-errs; err != nil {
		b.Fatalf("client: %v", err)
	}
	subs := h.members()
	if len(subs) != n {
		b.Fatalf("%d subscriptions, want %d", len(subs), n)
	}
	body := []byte(`{"id":1795320202978319,"roomId":"lobby","userId":"alice","message":"hello there","unreadCount":4,"createdAt":"2026-11-22T04:03:26.851Z"}`)
	hdr := []frame.Header{{Name: "content-type", Value: "application/json"}}

	b.ReportAllocs()
	var want int64
	for b.Loop() {
		// As chatd's room feed: one Message per room message, shared by
		// every delivery.
		m := stompws.NewMessage("/topic/room", hdr, body)
		for _, sub := range subs {
			if !sub.Queue(m) {
				b.Fatal("subscription ended")
			}
		}
		for _, sub := range subs {
			sub.Session().Flush()
		}
		want += int64(n)
		deadline := time.After(10 * time.Second)
		for frames.Load() < want {
			select {
			case <-progress:
			case <-deadline:
				b.Fatalf("%d of %d frames arrived within 10s", frames.Load(), want)
			}
		}
	}
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
}
