package stompws_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/stompws"
)

// rawWS is a WebSocket client written out byte by byte, so that a test
// chooses how its bytes reach the server: in one write with the
// handshake, or dribbled a few at a time.
type rawWS struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// wsFrame encodes a masked client frame.
func wsFrame(opcode byte, payload []byte) []byte {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

// read returns the next server frame's opcode and payload.
func (w *rawWS) read() (byte, []byte) {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		w.t.Fatalf("read frame header: %v", err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, _ = io.ReadFull(w.br, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, _ = io.ReadFull(w.br, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	p := make([]byte, n)
	if got, err := io.ReadFull(w.br, p); err != nil {
		w.t.Fatalf("read frame payload (%d of %d bytes, opcode %#x): %v", got, n, h[0], err)
	}
	return h[0] & 0x0f, p
}

// stompFrames reads server frames until it has n STOMP frames (heart-beats
// aside), and returns them.
func (w *rawWS) stompFrames(n int) []string {
	w.t.Helper()
	var out []string
	for len(out) < n {
		op, p := w.read()
		if op != 0x1 && op != 0x2 {
			w.t.Fatalf("want a data frame, got opcode %#x %q", op, p)
		}
		for f := range strings.SplitSeq(string(p), "\x00") {
			if f = strings.TrimLeft(f, "\n"); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

// openRaw starts a server with cfg and a roomHandler, and opens a session
// on it over rawWS: the handshake, CONNECT and a SUBSCRIBE to /topic/room
// all in one write (so the server must keep what follows the handshake).
// The server shuts down when the test ends.
func openRaw(t *testing.T, cfg stompws.Config) (*rawWS, *roomHandler) {
	t.Helper()
	return openRawBeating(t, cfg, "0,0")
}

// openRawBeating is openRaw with the CONNECT's heart-beat header given;
// the server logs to cfg.Logger, if set.
func openRawBeating(t *testing.T, cfg stompws.Config, heartBeat string) (*rawWS, *roomHandler) {
	t.Helper()
	h := &roomHandler{subs: map[*stompws.Subscription]struct{}{}}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv := stompws.NewServer(cfg, h)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { // also stops the poller a session parked in
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx, "bye"); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	c, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	w := &rawWS{t: t, c: c, br: bufio.NewReader(c)}

	handshake := "GET / HTTP/1.1\r\nHost: " + hs.Listener.Addr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
	first := append([]byte(handshake), wsFrame(0x1, []byte("CONNECT\naccept-version:1.2\nhost:t\nlogin:u\nheart-beat:"+heartBeat+"\n\n\x00"))...)
	first = append(first, wsFrame(0x1, []byte("SUBSCRIBE\nid:0\ndestination:/topic/room\nreceipt:sub\n\n\x00"))...)
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	status, err := w.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("handshake: %q %v", status, err)
	}
	for {
		line, err := w.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	if got := w.stompFrames(2); !strings.HasPrefix(got[0], "CONNECTED\n") || !strings.HasPrefix(got[1], "RECEIPT\nreceipt-id:sub\n") {
		t.Fatalf("frames sent with the handshake: got %q", got)
	}
	return w, h
}

// TestTransportBytesArriveAnyHow: the session's reader and writer buffer
// only while bytes wait, and must not lose or split any on the way. STOMP
// frames sent in the same write as the handshake are read (openRaw); a
// large SEND dribbled in 100-byte writes is read whole; pings are
// answered while the session is idle, and it parks again after each; a
// ping and a SEND in one write get a pong and a RECEIPT; a message far
// larger than any buffer, and a burst of small ones, arrive intact.
func TestTransportBytesArriveAnyHow(t *testing.T) {
	cfg := stompws.DefaultConfig()
	cfg.Limits.MaxFrameSize = 256 << 10
	w, h := openRaw(t, cfg)
	c := w.c

	body := strings.Repeat("0123456789abcdef", 40<<10/16)
	send := wsFrame(0x1, []byte("SEND\ndestination:/app/x\nreceipt:big\ncontent-length:"+strconv.Itoa(len(body))+"\n\n"+body+"\x00"))
	for len(send) > 0 {
		n := min(100, len(send))
		if _, err := c.Write(send[:n]); err != nil {
			t.Fatal(err)
		}
		send = send[n:]
	}
	if got := w.stompFrames(1); !strings.HasPrefix(got[0], "RECEIPT\nreceipt-id:big\n") {
		t.Fatalf("40 KiB SEND in 100-byte writes: got %q", got[0])
	}

	// The session parks after a second of silence, and again after each
	// ping: pings alone keep no goroutine.
	parked := func(why string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if readers, _, _ := sessionGoroutines(); readers == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the silent session never parked", why)
			}
			time.Sleep(10 * time.Millisecond) // polling the condition itself
		}
	}
	parked("after the SEND")
	for _, ping := range []string{"are you there", "", strings.Repeat("p", 125)} {
		if _, err := c.Write(wsFrame(0x9, []byte(ping))); err != nil {
			t.Fatal(err)
		}
		if op, p := w.read(); op != 0xA || string(p) != ping {
			t.Fatalf("ping %q: want its pong, got opcode %#x %q", ping, op, p)
		}
		parked("after a ping")
	}
	// A ping and a SEND in one write; then a ping dribbled a byte at a
	// time, which is the WebSocket reader's to answer.
	both := append(wsFrame(0x9, []byte("and")), wsFrame(0x1, []byte("SEND\ndestination:/app/x\nreceipt:after-ping\n\n\x00"))...)
	if _, err := c.Write(both); err != nil {
		t.Fatal(err)
	}
	if op, p := w.read(); op != 0xA || string(p) != "and" {
		t.Fatalf("ping before a SEND: want its pong, got opcode %#x %q", op, p)
	}
	if got := w.stompFrames(1); !strings.HasPrefix(got[0], "RECEIPT\nreceipt-id:after-ping\n") {
		t.Fatalf("SEND after a ping: got %q", got[0])
	}
	for _, b := range wsFrame(0x9, []byte("slowly")) {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if op, p := w.read(); op != 0xA || string(p) != "slowly" {
		t.Fatalf("dribbled ping: want its pong, got opcode %#x %q", op, p)
	}

	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	large := strings.Repeat("x", 100<<10)
	if !deliver(subs[0], stompws.NewMessage("/topic/room", nil, []byte(large))) {
		t.Fatal("large message not taken")
	}
	got := w.stompFrames(1)
	if !strings.HasPrefix(got[0], "MESSAGE\n") || !strings.HasSuffix(got[0], "\n\n"+large) {
		t.Fatalf("100 KiB message: got %d bytes, starting %q", len(got[0]), got[0][:min(len(got[0]), 80)])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 200 {
		if err := subs[0].DeliverWait(ctx, stompws.NewMessage("/topic/room", nil, []byte("small "+strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	got = w.stompFrames(200)
	for i, f := range got {
		if !bytes.HasSuffix([]byte(f), []byte("\n\nsmall "+strconv.Itoa(i))) {
			t.Fatalf("burst message %d: %q", i, f)
		}
	}
}

// finishing reports whether a session is finishing a frame the socket took
// only in part (Session.finishWrite).
func finishing() bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Contains(buf[:n], []byte("stompws.(*Session).finishWrite("))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// fillableConfig is a session's configuration for fillSocket: a queue
// that holds all it delivers, every delivery that finds no writer written
// at once (writers leave as soon as they have nothing left).
func fillableConfig() stompws.Config {
	cfg := stompws.DefaultConfig()
	cfg.OutboundBytes = 256 << 20
	cfg.OutboundFrames = 1 << 16
	cfg.WriteCoalesce = -1
	return cfg
}

// fillSocket delivers numbered 30 KiB messages to sub, without the client
// reading, until the socket is full; it returns how many. Full shows as a
// frame the socket took only in part, being finished on a goroutine of
// its own (finishWrite). A finisher may also find room at once while the
// client's side still takes data, and a writer that started meanwhile
// then blocks on the full socket instead; a writer still running 200 ms
// after a delivery shows the socket full too. (The sessions are set up
// with fillableConfig, so that a writer with nothing left leaves.)
func fillSocket(t *testing.T, sub *stompws.Subscription) int {
	t.Helper()
	pad := strings.Repeat("y", 30<<10)
	for n := 0; n < 4000; n++ {
		if !deliver(sub, stompws.NewMessage("/topic/room", nil, []byte(fmt.Sprintf("%05d%s", n, pad)))) {
			t.Fatalf("message %d not taken", n)
		}
		stuck := time.Now().Add(200 * time.Millisecond)
		for {
			if finishing() {
				return n + 1
			}
			if _, writers, _ := sessionGoroutines(); writers == 0 {
				break
			}
			if time.Now().After(stuck) {
				return n + 1
			}
			time.Sleep(5 * time.Millisecond) // polling the condition itself
		}
	}
	t.Fatal("the socket never filled")
	return 0
}

// TestTransportSlowReaderGetsWholeFrames: a delivery that finds the
// client's socket full is finished on a goroutine of its own, so the
// deliverer never waits for a slow client; later frames wait for it, and
// a pong coder/websocket sends meanwhile lands between frames, not inside
// one. When the client reads again, every frame arrives whole and in order.
func TestTransportSlowReaderGetsWholeFrames(t *testing.T) {
	w, h := openRaw(t, fillableConfig())
	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	n := fillSocket(t, subs[0])
	pad := strings.Repeat("y", 30<<10)
	for i := n; i < n+20; i++ {
		start := time.Now()
		if !deliver(subs[0], stompws.NewMessage("/topic/room", nil, []byte(fmt.Sprintf("%05d%s", i, pad)))) {
			t.Fatalf("message %d not taken", i)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Deliver to a full socket took %v", d)
		}
	}
	n += 20
	if _, err := w.c.Write(wsFrame(0x9, []byte("still there?"))); err != nil {
		t.Fatal(err)
	}

	next, pongs := 0, 0
	for next < n {
		op, p := w.read()
		switch op {
		case 0xA:
			if string(p) != "still there?" {
				t.Fatalf("pong %q", p)
			}
			pongs++
			continue
		case 0x1, 0x2:
		default:
			t.Fatalf("frame with opcode %#x after message %d", op, next)
		}
		for f := range strings.SplitSeq(string(p), "\x00") {
			if f = strings.TrimLeft(f, "\n"); f == "" {
				continue
			}
			want := fmt.Sprintf("\n\n%05d%s", next, pad)
			if !strings.HasPrefix(f, "MESSAGE\n") || !strings.HasSuffix(f, want) {
				t.Fatalf("message %d of %d: got %d bytes, starting %q", next, n, len(f), f[:min(len(f), 80)])
			}
			next++
		}
	}
	if pongs == 0 {
		if op, p := w.read(); op != 0xA || string(p) != "still there?" {
			t.Fatalf("want the pong after the messages, got opcode %#x %q", op, p)
		}
	}
}

// TestTransportStalledClientIsCut: a client that never reads again is cut
// once a write to it has waited WriteTimeout, also when the write began
// on a deliverer's goroutine, and its session ends.
func TestTransportStalledClientIsCut(t *testing.T) {
	cfg := fillableConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	obs := &closeCounter{}
	cfg.Observer = obs
	w, h := openRaw(t, cfg)
	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	fillSocket(t, subs[0])
	deadline := time.Now().Add(10 * time.Second)
	for obs.closed.Load() == 0 || finishing() {
		if time.Now().After(deadline) {
			t.Fatalf("stalled client: closed %d, still finishing %v", obs.closed.Load(), finishing())
		}
		time.Sleep(10 * time.Millisecond) // polling the condition itself
	}
	_ = w
}

// TestTransportInlineAndQueuedKeepOrder: frames written inline by their
// flusher (Flush) and by the session's writer reach
// the client in the order they were delivered, however the two mix.
func TestTransportInlineAndQueuedKeepOrder(t *testing.T) {
	cfg := stompws.DefaultConfig()
	cfg.WriteCoalesce = -1 // writers do not pause between writes: they and the flusher mix more
	w, h := openRaw(t, cfg)
	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	const n = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			m := stompws.NewMessage("/topic/room", nil, []byte("m"+strconv.Itoa(i)))
			var ok bool
			if i%7 < 3 {
				ok = subs[0].Queue(m)
				subs[0].Session().FlushInWriter()
			} else {
				ok = deliver(subs[0], m)
			}
			if !ok {
				t.Errorf("message %d not taken", i)
				return
			}
		}
	}()
	got := w.stompFrames(n)
	<-done
	for i, f := range got {
		if !strings.HasSuffix(f, "\n\nm"+strconv.Itoa(i)) {
			t.Fatalf("frame %d: %q", i, f)
		}
	}
}

// TestTransportBurstIsOneWrite: what Queue holds waits for the flush, and
// a burst flushed once reaches the client as one WebSocket message with
// every frame in order; a slow consumer's ERROR goes out without a flush.
func TestTransportBurstIsOneWrite(t *testing.T) {
	cfg := stompws.DefaultConfig()
	cfg.OutboundFrames = 40
	w, h := openRaw(t, cfg)
	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	waitFor(t, "the writer of the handshake's frames to leave", func() bool {
		_, writers, _ := sessionGoroutines()
		return writers == 0
	})
	const n = 30
	for i := range n {
		if !subs[0].Queue(stompws.NewMessage("/topic/room", nil, []byte("m"+strconv.Itoa(i)))) {
			t.Fatalf("message %d not taken", i)
		}
	}
	_ = w.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [1]byte
	if _, err := w.br.Read(b[:]); err == nil {
		t.Fatal("queued frames went out before the flush")
	}
	subs[0].Session().Flush()
	op, p := w.read()
	if op != 0x1 {
		t.Fatalf("opcode %#x", op)
	}
	frames := strings.Split(strings.TrimSuffix(string(p), "\x00"), "\x00")
	if len(frames) != n {
		t.Fatalf("the flush wrote %d frames in its first message, want %d", len(frames), n)
	}
	for i, f := range frames {
		if !strings.HasSuffix(f, "\n\nm"+strconv.Itoa(i)) {
			t.Fatalf("frame %d: %q", i, f)
		}
	}

	// Overflow: the 41st queued frame cuts the client off, unflushed; what
	// it had not taken is dropped.
	for i := range 41 {
		if ok := subs[0].Queue(stompws.NewMessage("/topic/room", nil, []byte("x"))); ok != (i < 40) {
			t.Fatalf("message %d taken: %v", i, ok)
		}
	}
	if got := w.stompFrames(1); len(got) != 1 || !strings.HasPrefix(got[0], "ERROR\n") || !strings.Contains(got[0], "slow consumer") {
		t.Fatalf("frames %q, want the slow consumer's ERROR alone", got)
	}
	if op, p := w.read(); op != 0x8 {
		t.Fatalf("after the ERROR: opcode %#x %q, want a close", op, p)
	}
}
