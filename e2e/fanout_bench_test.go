package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/wstest"
	"github.com/coder/websocket"
)

// benchMember connects, subscribes to the room (waiting for the RECEIPT)
// and then reads and counts every frame the node sends it.
func benchMember(ctx context.Context, url, login, room string, frames *atomic.Int64, progress chan<- struct{}) (*websocket.Conn, error) {
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.SetReadLimit(-1)
	setup := "CONNECT\naccept-version:1.2\nhost:bench\nlogin:" + login + "\nheart-beat:0,0\n\n\x00" +
		"SUBSCRIBE\nid:0\ndestination:/topic/chat." + room + "\nreceipt:r\n\n\x00"
	if err := c.Write(ctx, websocket.MessageText, []byte(setup)); err != nil {
		_ = c.CloseNow()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	for got := 0; got < 2; { // CONNECTED, RECEIPT
		_, b, err := c.Read(ctx)
		if err != nil {
			_ = c.CloseNow()
			return nil, fmt.Errorf("read CONNECTED/RECEIPT: %w", err)
		}
		if bytes.HasPrefix(b, []byte("ERROR")) {
			_ = c.CloseNow()
			return nil, fmt.Errorf("server: %q", b)
		}
		got += bytes.Count(b, []byte{0})
	}
	if frames == nil {
		return c, nil
	}
	wstest.CountFrames(c, frames, progress)
	return c, nil
}

// BenchmarkRoomFanout is the whole message path of a real node: one SEND is
// stored in JetStream, republished, turned into a MESSAGE with its unread
// count, and delivered to N subscribers of the room over loopback
// WebSockets. One op is one message reaching all N.
func BenchmarkRoomFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run("subscribers="+strconv.Itoa(n), func(b *testing.B) { benchRoomFanout(b, n) })
	}
}

func benchRoomFanout(b *testing.B, n int) {
	node := startNode(b)
	url := node.wsURL()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var frames atomic.Int64
	progress := make(chan struct{}, 1)
	conns := make([]*websocket.Conn, n+1)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.CloseNow()
			}
		}
	}()
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := benchMember(ctx, url, "m"+strconv.Itoa(i), "bench", &frames, progress)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("member: %v", err)
	}
	// The publisher subscribes too (to join the room) but is not counted.
	pub, err := benchMember(ctx, url, "publisher", "bench", nil, nil)
	if err != nil {
		b.Fatalf("publisher: %v", err)
	}
	conns[n] = pub
	go func() { // drain the publisher's own deliveries
		for {
			if _, _, err := pub.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	send := []byte("SEND\ndestination:/app/chat.bench\ncontent-type:application/json\n\n{\"message\":\"hello there\"}\x00")

	b.ReportAllocs()
	var want int64
	for b.Loop() {
		if err := pub.Write(ctx, websocket.MessageText, send); err != nil {
			b.Fatalf("SEND: %v", err)
		}
		want += int64(n)
		deadline := time.After(10 * time.Second)
		for frames.Load() < want {
			select {
			case <-progress:
			case <-deadline:
				b.Fatalf("%d of %d deliveries within 10s", frames.Load(), want)
			}
		}
	}
	b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
}
