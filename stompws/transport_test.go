package stompws_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
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
	if _, err := io.ReadFull(w.br, p); err != nil {
		w.t.Fatalf("read frame payload: %v", err)
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

// TestTransportBytesArriveAnyHow: the session's reader and writer buffer
// only while bytes wait, and must not lose or split any on the way. STOMP
// frames sent in the same write as the handshake are read; a large SEND
// dribbled in 100-byte writes is read whole; a ping is answered while the
// session is idle; a message far larger than any buffer, and a burst of
// small ones, arrive intact.
func TestTransportBytesArriveAnyHow(t *testing.T) {
	h := &roomHandler{subs: map[*stompws.Subscription]struct{}{}}
	cfg := stompws.DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Limits.MaxFrameSize = 256 << 10
	srv := stompws.NewServer(cfg, h)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer func() { // stops the poller its session parked in
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx, "bye"); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	c, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := &rawWS{t: t, c: c, br: bufio.NewReader(c)}

	handshake := "GET / HTTP/1.1\r\nHost: " + hs.Listener.Addr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n"
	first := append([]byte(handshake), wsFrame(0x1, []byte("CONNECT\naccept-version:1.2\nhost:t\nlogin:u\nheart-beat:0,0\n\n\x00"))...)
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

	// The session parks after a second of silence.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if readers, _, _ := sessionGoroutines(); readers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the silent session never parked")
		}
		time.Sleep(10 * time.Millisecond) // polling the condition itself
	}
	if _, err := c.Write(wsFrame(0x9, []byte("are you there"))); err != nil {
		t.Fatal(err)
	}
	if op, p := w.read(); op != 0xA || string(p) != "are you there" {
		t.Fatalf("ping: want its pong, got opcode %#x %q", op, p)
	}

	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	large := strings.Repeat("x", 100<<10)
	if !subs[0].Deliver(stompws.NewMessage("/topic/room", nil, []byte(large))) {
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
