// Package stomptest is the STOMP clients of the tests: go-stomp's client
// over a real WebSocket, and a raw connection that speaks STOMP by hand,
// for malformed and edge-case frames.
package stomptest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// Subprotocols are the STOMP WebSocket subprotocols a client offers by
// default.
var Subprotocols = []string{"v12.stomp", "v11.stomp", "v10.stomp"}

// DialOptions shape a dial; the zero value offers Subprotocols.
type DialOptions struct {
	// Subprotocols offered; nil offers the default, an empty non-nil
	// list none.
	Subprotocols []string
	// Header is sent with the handshake (Authorization, Cookie, Origin).
	Header http.Header
}

// DialWS opens a real WebSocket to url, closed when the test ends.
func DialWS(t testing.TB, url string, o DialOptions) *websocket.Conn {
	t.Helper()
	if o.Subprotocols == nil {
		o.Subprotocols = Subprotocols
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: o.Subprotocols, HTTPHeader: o.Header})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(-1)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// Client is go-stomp's client over a real WebSocket.
type Client struct {
	*stomp.Conn
	T    testing.TB
	User string
	WS   *websocket.Conn
}

// Dial connects go-stomp to url as user (the login header), with opts.
func Dial(t testing.TB, url, user string, opts ...func(*stomp.Conn) error) *Client {
	t.Helper()
	ws := DialWS(t, url, DialOptions{})
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageText)
	all := append([]func(*stomp.Conn) error{stomp.ConnOpt.Login(user, ""), stomp.ConnOpt.Host("/")}, opts...)
	sc, err := stomp.Connect(nc, all...)
	if err != nil {
		t.Fatalf("STOMP connect as %s: %v", user, err)
	}
	t.Cleanup(func() { _ = sc.MustDisconnect() })
	return &Client{Conn: sc, T: t, User: user, WS: ws}
}

// Next waits for the subscription's next MESSAGE.
func Next(t testing.TB, sub *stomp.Subscription) *stomp.Message {
	t.Helper()
	select {
	case m, ok := <-sub.C:
		if !ok {
			t.Fatalf("subscription %s closed", sub.Destination())
		}
		if m.Err != nil {
			t.Fatalf("subscription %s: %v", sub.Destination(), m.Err)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("no message on %s within 10s", sub.Destination())
	}
	return nil
}

// Quiet asserts that nothing arrives on sub for d. It only shows that
// something did NOT happen; every positive check waits for an event.
func Quiet(t testing.TB, sub *stomp.Subscription, d time.Duration) {
	t.Helper()
	select {
	case m := <-sub.C:
		if m != nil && m.Err == nil {
			t.Fatalf("unexpected message on %s: %s", sub.Destination(), m.Body)
		}
	case <-time.After(d):
	}
}

// Render renders one frame. Headers are "name:value" lines, escaped by
// the caller as the test needs.
func Render(command, body string, headers ...string) string {
	var b strings.Builder
	b.WriteString(command)
	b.WriteByte('\n')
	for _, h := range headers {
		b.WriteString(h)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(body)
	b.WriteByte(0)
	return b.String()
}

// msgConn feeds a WebSocket to go-stomp's frame.Reader message by message.
// Unlike websocket.NetConn it accepts text and binary messages alike, keeps
// the close error as it is (NetConn reports 1000 and 1001 as io.EOF), and
// can record the raw bytes received.
type msgConn struct {
	net.Conn // only Read and SetReadDeadline are used
	ws       *websocket.Conn
	buf      []byte
	deadline time.Time
	tee      *bytes.Buffer
}

func (m *msgConn) Read(p []byte) (int, error) {
	for len(m.buf) == 0 {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if !m.deadline.IsZero() {
			ctx, cancel = context.WithDeadline(ctx, m.deadline)
		}
		_, b, err := m.ws.Read(ctx)
		cancel()
		if err != nil {
			return 0, err
		}
		if m.tee != nil {
			m.tee.Write(b)
		}
		m.buf = b
	}
	n := copy(p, m.buf)
	m.buf = m.buf[n:]
	return n, nil
}

func (m *msgConn) SetReadDeadline(t time.Time) error { m.deadline = t; return nil }

// Raw speaks STOMP by hand over a real WebSocket.
type Raw struct {
	T  testing.TB
	WS *websocket.Conn
	mc *msgConn
	rd *frame.Reader
}

// DialRaw opens a Raw connection to url.
func DialRaw(t testing.TB, url string, o DialOptions) *Raw {
	t.Helper()
	ws := DialWS(t, url, o)
	mc := &msgConn{ws: ws}
	return &Raw{T: t, WS: ws, mc: mc, rd: frame.NewReader(mc)}
}

// Tee records every byte received from now on into b.
func (r *Raw) Tee(b *bytes.Buffer) { r.mc.tee = b }

// Send writes s as one WebSocket text message.
func (r *Raw) Send(s string) {
	r.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.WS.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		r.T.Fatalf("raw write: %v", err)
	}
}

// Read reads the next frame, skipping heart-beats; frames may share or
// span WebSocket messages.
func (r *Raw) Read(timeout time.Duration) (*frame.Frame, error) {
	_ = r.mc.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := r.rd.Read()
		if err != nil {
			return nil, err
		}
		if f != nil {
			return f, nil
		}
	}
}

// Frame reads the next frame, failing the test after 10 s.
func (r *Raw) Frame() *frame.Frame {
	r.T.Helper()
	f, err := r.Read(10 * time.Second)
	if err != nil {
		r.T.Fatalf("raw read: %v", err)
	}
	return f
}

// Expect reads the next frame and checks its command.
func (r *Raw) Expect(command string) *frame.Frame {
	r.T.Helper()
	f := r.Frame()
	if f.Command != command {
		r.T.Fatalf("want %s, got %s %v %q", command, f.Command, f.Header, f.Body)
	}
	return f
}

// ExpectReceipt reads the next frame and checks it is RECEIPT id.
func (r *Raw) ExpectReceipt(id string) {
	r.T.Helper()
	f := r.Expect("RECEIPT")
	if got := f.Header.Get("receipt-id"); got != id {
		r.T.Fatalf("RECEIPT receipt-id %q, want %q", got, id)
	}
}

// ConnectWith sends a STOMP 1.2 CONNECT with the given header lines and
// returns the answer.
func (r *Raw) ConnectWith(headers ...string) *frame.Frame {
	r.T.Helper()
	r.Send(Render("CONNECT", "", append([]string{"accept-version:1.2", "host:/"}, headers...)...))
	return r.Frame()
}

// Connect connects as user (the login header) and expects CONNECTED.
func (r *Raw) Connect(user string) {
	r.T.Helper()
	if f := r.ConnectWith("login:" + user); f.Command != "CONNECTED" {
		r.T.Fatalf("want CONNECTED, got %s %v %q", f.Command, f.Header, f.Body)
	}
}

// ConnectAs sends CONNECT as user with the given accept-version ("" for
// none) and extra header lines, and expects CONNECTED.
func (r *Raw) ConnectAs(user, accept string, extra ...string) *frame.Frame {
	r.T.Helper()
	h := []string{"host:/", "login:" + user}
	if accept != "" {
		h = append(h, "accept-version:"+accept)
	}
	r.Send(Render("CONNECT", "", append(h, extra...)...))
	return r.Expect("CONNECTED")
}

// Subscribe subscribes with a receipt and waits for it.
func (r *Raw) Subscribe(id, dest string, extra ...string) {
	r.T.Helper()
	h := append([]string{"id:" + id, "destination:" + dest, "receipt:sub-" + id}, extra...)
	r.Send(Render("SUBSCRIBE", "", h...))
	r.ExpectReceipt("sub-" + id)
}

// ExpectError reads frames until an ERROR and checks its message, then
// checks the server closes the connection.
func (r *Raw) ExpectError(wantSubstr string) *frame.Frame {
	r.T.Helper()
	for {
		f := r.Frame()
		if f.Command != "ERROR" {
			continue
		}
		if msg := f.Header.Get("message"); !strings.Contains(msg, wantSubstr) {
			r.T.Fatalf("ERROR message %q, want it to contain %q", msg, wantSubstr)
		}
		r.ExpectClosed()
		return f
	}
}

// ExpectClosed reads until the connection ends, within 10 s.
func (r *Raw) ExpectClosed() {
	r.T.Helper()
	deadline := time.Now().Add(10 * time.Second)
	_ = r.mc.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	for {
		if _, err := r.mc.Read(buf); err != nil {
			if errors.Is(err, context.DeadlineExceeded) || time.Now().After(deadline) {
				r.T.Fatalf("connection still open 10s after ERROR")
			}
			return
		}
	}
}

// CloseStatus reads until the connection ends and returns its close code
// (-1 for a connection cut without a close frame).
func (r *Raw) CloseStatus() websocket.StatusCode {
	r.T.Helper()
	for {
		_, err := r.Read(10 * time.Second)
		if err == nil {
			continue
		}
		if errors.Is(err, context.DeadlineExceeded) {
			r.T.Fatalf("connection still open after 10s")
		}
		return websocket.CloseStatus(err)
	}
}
