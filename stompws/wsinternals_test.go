package stompws

// These tests pin what transport.go relies on of coder/websocket's
// unexported behaviour (the version in go.mod), so that an upgrade that
// changes it fails here, by name, rather than as lost bytes or hung
// sessions. Each drives the real websocket.Accept over our hijacker on a
// net.Pipe, where the test decides which bytes reach which read.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// pipeResponse is an http.ResponseWriter whose hijacked connection is one
// end of a net.Pipe. pre stands for bytes net/http had read past the
// handshake; they wait in the reader Hijack returns.
type pipeResponse struct {
	header http.Header
	conn   net.Conn
	pre    []byte
}

func (p *pipeResponse) Header() http.Header         { return p.header }
func (p *pipeResponse) Write(b []byte) (int, error) { return len(b), nil }
func (p *pipeResponse) WriteHeader(int)             {}

func (p *pipeResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	br := bufio.NewReader(io.MultiReader(bytes.NewReader(p.pre), p.conn))
	if len(p.pre) > 0 {
		if _, err := br.Peek(len(p.pre)); err != nil {
			return nil, nil, err
		}
	}
	return p.conn, bufio.NewReadWriter(br, bufio.NewWriter(p.conn)), nil
}

// acceptPipe accepts a WebSocket as ServeHTTP does, over a hijacker on a
// pipe, and returns the hijacker, the server's Conn and the client's end.
func acceptPipe(t *testing.T, pre []byte) (*hijacker, *websocket.Conn, net.Conn) {
	t.Helper()
	server, client := net.Pipe()
	chunks := &sync.Pool{New: func() any { b := make([]byte, connReadChunk); return &b }}
	h := &hijacker{ResponseWriter: &pipeResponse{header: http.Header{}, conn: server, pre: pre}, chunks: chunks}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	ws, err := websocket.Accept(h, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	ws.SetReadLimit(-1)
	t.Cleanup(func() { _ = ws.CloseNow(); _ = client.Close() })
	if h.in == nil || h.br == nil || h.out == nil {
		t.Fatal("websocket.Accept did not hijack through our hijacker (ServeHTTP's connReader and connWriter would be unused)")
	}
	return h, ws, client
}

// maskedFrame encodes a final client frame (payloads under 126 bytes).
func maskedFrame(op byte, payload string) []byte {
	mask := [4]byte{0x0f, 0xf0, 0x55, 0xaa}
	b := []byte{0x80 | op, 0x80 | byte(len(payload))}
	b = append(b, mask[:]...)
	for i := range len(payload) {
		b = append(b, payload[i]^mask[i%4])
	}
	return b
}

// serverFrame reads one unmasked server frame from the client's end.
func serverFrame(c net.Conn) (op byte, payload []byte, err error) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// serverFrames reads n server frames from the client's end on a goroutine
// of its own (a pipe's write waits for the read that takes it).
func serverFrames(c net.Conn, n int) <-chan []byte {
	frames := make(chan []byte, n)
	go func() {
		defer close(frames)
		for range n {
			op, p, err := serverFrame(c)
			if err != nil {
				return
			}
			frames <- append([]byte{op}, p...)
		}
	}()
	return frames
}

// next returns the next frame serverFrames read: its opcode, then payload.
func next(t *testing.T, frames <-chan []byte, what string) []byte {
	t.Helper()
	f, ok := <-frames
	if !ok {
		t.Fatalf("no %s from the server", what)
	}
	return f
}

// readMessage reads one whole message with coder/websocket, failing if
// that takes more than 5 s.
func readMessage(t *testing.T, ws *websocket.Conn, why string) string {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		_, r, err := ws.Reader(context.Background())
		if err != nil {
			done <- result{nil, err}
			return
		}
		b, err := io.ReadAll(r)
		done <- result{b, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("%s: %v", why, res.err)
		}
		return string(res.b)
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still reading after 5 s", why)
	}
	return ""
}

// write writes b to the client's end on a goroutine of its own (a pipe's
// write waits for the reads that take it); the error, when the test
// ends, must be nil.
func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := c.Write(b); done <- err }()
	t.Cleanup(func() {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("client write: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("client write not taken within 5 s")
		}
	})
}

// TestCoderReadsThroughOurReaders pins (a): after Accept, coder/websocket
// reads the connection through the *bufio.Reader our hijacker returned
// (re-pointed at what it buffered, then the net.Conn we returned, which
// reads through connReader), and through nothing of its own. So
// idleWaiter.buffered sees all input coder/websocket holds, and bytes the
// client sent with its handshake (connReader.pre) are read first.
func TestCoderReadsThroughOurReaders(t *testing.T) {
	early := maskedFrame(0x1, "sent with the handshake")
	h, ws, client := acceptPipe(t, early)
	if got := readMessage(t, ws, "the message sent with the handshake"); got != "sent with the handshake" {
		t.Fatalf("assumption (a): the bytes sent with the handshake read as %q", got)
	}
	first, second := maskedFrame(0x1, "first"), maskedFrame(0x2, "second, in the same read")
	// One write, which one read of the pipe takes whole.
	write(t, client, append(append([]byte(nil), first...), second...))
	if got := readMessage(t, ws, "the first message"); got != "first" {
		t.Fatalf("first message %q", got)
	}
	if got := h.br.Buffered() + h.in.buffered(); got != len(second) {
		t.Fatalf("assumption (a) broken: coder/websocket must read only through the bufio.Reader and net.Conn "+
			"our hijacker returned, so that idleWaiter.buffered sees what it holds: after the first message, "+
			"%d bytes wait in our readers, want the second message's %d", got, len(second))
	}
	if got := readMessage(t, ws, "the second message"); got != "second, in the same read" {
		t.Fatalf("second message %q", got)
	}
	if got := h.br.Buffered() + h.in.buffered(); got != 0 {
		t.Fatalf("%d bytes left in our readers after both messages", got)
	}
}

// TestCoderHoldsNothingBetweenMessages pins (c): a message read to its
// end leaves coder/websocket holding no part of the next frame, nor
// waiting for one, so that with nothing in our readers the next frame is
// whole in the socket. answerPing relies on it: it takes a ping from the
// socket itself, and coder/websocket must then read on in step.
func TestCoderHoldsNothingBetweenMessages(t *testing.T) {
	h, ws, client := acceptPipe(t, nil)
	write(t, client, maskedFrame(0x1, "one"))
	// No more input comes: reading past the message's end would block.
	if got := readMessage(t, ws, "assumption (c): reading a message to its end, with nothing after it"); got != "one" {
		t.Fatalf("message %q", got)
	}
	if got := h.br.Buffered() + h.in.buffered(); got != 0 {
		t.Fatalf("%d bytes in our readers between messages", got)
	}
	ping := maskedFrame(0x9, "taken from the socket")
	write(t, client, ping)
	got := make([]byte, len(ping))
	_ = h.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(h.conn, got); err != nil || !bytes.Equal(got, ping) {
		t.Fatalf("the ping from the socket: %q %v", got, err)
	}
	_ = h.conn.SetReadDeadline(time.Time{})
	write(t, client, maskedFrame(0x1, "two"))
	if got := readMessage(t, ws, "assumption (c): the message after a ping taken from the socket"); got != "two" {
		t.Fatalf("assumption (c) broken: after a ping taken from under coder/websocket, the next message reads as %q", got)
	}
}

// recordConn records the writes made to it.
type recordConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordConn) taken() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// TestCoderWritesControlFramesWhole pins (b): coder/websocket writes each
// control frame, even the largest (125 bytes of payload), through the
// bufio.Writer our hijacker returned, and so to connWriter, in one Write
// of the whole frame. connWriter holds its lock for each Write, which
// then never lands inside one of chatd's own frames.
func TestCoderWritesControlFramesWhole(t *testing.T) {
	h, ws, client := acceptPipe(t, nil)
	rec := &recordConn{Conn: h.out.conn}
	h.out.conn = rec

	payload := strings.Repeat("p", 125)
	write(t, client, append(maskedFrame(0x9, payload), maskedFrame(0x1, "after the ping")...))
	frames := serverFrames(client, 2)
	if got := readMessage(t, ws, "the message after a ping"); got != "after the ping" {
		t.Fatalf("message %q", got)
	}
	if f := next(t, frames, "pong"); f[0] != 0xA || string(f[1:]) != payload {
		t.Fatalf("want the pong, got opcode %#x %q", f[0], f[1:])
	}
	wantPong := append([]byte{0x8A, 125}, payload...)
	if w := rec.taken(); len(w) != 1 || !bytes.Equal(w[0], wantPong) {
		t.Fatalf("assumption (b) broken: coder/websocket must write a pong to connWriter whole, in one Write: "+
			"it took %d writes of %d bytes", len(w), lens(w))
	}

	reason := strings.Repeat("r", 123)
	closed := make(chan error, 1)
	go func() { closed <- ws.Close(websocket.StatusNormalClosure, reason) }()
	if f := next(t, frames, "close frame"); f[0] != 0x8 {
		t.Fatalf("want the close frame, got opcode %#x", f[0])
	}
	if _, err := client.Write(maskedFrame(0x8, "\x03\xe8")); err != nil {
		t.Fatal(err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
	wantClose := append([]byte{0x88, 125, 0x03, 0xe8}, reason...)
	if w := rec.taken(); len(w) != 1 || !bytes.Equal(w[0], wantClose) {
		t.Fatalf("assumption (b) broken: coder/websocket must write a close frame to connWriter whole, in one Write: "+
			"it took %d writes of %d bytes", len(w), lens(w))
	}
}

func lens(w [][]byte) []int {
	n := make([]int, len(w))
	for i := range w {
		n[i] = len(w[i])
	}
	return n
}

// countConn counts the bytes read from it.
type countConn struct {
	net.Conn
	mu sync.Mutex
	n  int
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	return n, err
}

func (c *countConn) read() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestCoderCloseReadsThroughOurReaders pins (d): Close's handshake, which
// a session's writer starts once its read loop has stopped, reads the
// client's input itself, through our readers, past any data frame up to
// the client's close frame. Session.handedOver keeps the read loop's own
// reads (the buffered check, answerPing) out of its way.
func TestCoderCloseReadsThroughOurReaders(t *testing.T) {
	h, ws, client := acceptPipe(t, nil)
	cc := &countConn{Conn: h.in.conn}
	h.in.conn = cc
	closed := make(chan error, 1)
	go func() { closed <- ws.Close(websocket.StatusPolicyViolation, "") }()
	if f := next(t, serverFrames(client, 1), "close frame"); f[0] != 0x8 {
		t.Fatalf("want the close frame, got opcode %#x", f[0])
	}
	late := append(maskedFrame(0x1, "sent before the client saw the close"), maskedFrame(0x8, "\x03\xf0")...)
	if _, err := client.Write(late); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("assumption (d) broken: Close's handshake did not complete: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("assumption (d) broken: Close did not return after the client's close frame")
	}
	if got := cc.read(); got != len(late) {
		t.Fatalf("assumption (d) broken: Close's handshake read %d bytes through connReader, want the %d the client sent", got, len(late))
	}
}

// TestCoderCloseNowCutsOurWrites pins (e): CloseNow closes the net.Conn
// our hijacker returned at once, even while a write of ours to it is
// stuck, and that write then fails. A session's write timeout
// (Session.write, finishWrite) and the slow-consumer cut-off rely on it.
func TestCoderCloseNowCutsOurWrites(t *testing.T) {
	h, ws, client := acceptPipe(t, nil)
	done := make(chan error, 1)
	go func() { done <- h.out.writeFrame(make([]byte, 64<<10)) }()
	// The write has begun once some of it arrives; nobody reads the rest.
	var some [16]byte
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, some[:]); err != nil {
		t.Fatal(err)
	}
	if err := ws.CloseNow(); err != nil {
		t.Fatalf("CloseNow: %v", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("assumption (e) broken: a stuck write of ours succeeded after CloseNow")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("assumption (e) broken: CloseNow left a stuck write of ours stuck")
	}
}
