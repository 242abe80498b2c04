package app_test

// Integration tests of the STOMP session layer (stompws) against a real
// node: embedded NATS and JetStream, real WebSockets. Positive checks wait for
// an event with a timeout; ordering is proved with receipts and message
// order, never with sleeps.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3/frame"
)

// msgConn feeds a WebSocket to frame.Reader message by message. Unlike
// websocket.NetConn it accepts text and binary messages alike, keeps the
// close error as it is (NetConn reports 1000 and 1001 as io.EOF), and can
// record the raw bytes received, to check the wire form of headers.
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

// dialMsg is dialRaw over msgConn. With no subprotocols it offers all three
// STOMP ones; pass an empty, non-nil list to offer none.
func dialMsg(t testing.TB, n *node, subprotocols ...string) (*rawConn, *msgConn) {
	t.Helper()
	ws := dialWS(t, n.wsURL(), subprotocols...)
	t.Cleanup(func() { _ = ws.CloseNow() })
	mc := &msgConn{ws: ws}
	return &rawConn{t: t, ws: ws, nc: mc, rd: frame.NewReader(mc)}, mc
}

// stompFrame renders one frame. Headers are "name:value" lines, escaped by
// the caller as the test needs.
func stompFrame(command, body string, headers ...string) string {
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

// connectAs sends CONNECT with the given accept-version ("" for none) and
// extra headers, and expects CONNECTED.
func (r *rawConn) connectAs(user, accept string, extra ...string) *frame.Frame {
	r.t.Helper()
	h := []string{"host:/", "login:" + user}
	if accept != "" {
		h = append(h, "accept-version:"+accept)
	}
	r.send(stompFrame("CONNECT", "", append(h, extra...)...))
	return r.expect("CONNECTED")
}

// expect reads the next frame and checks its command.
func (r *rawConn) expect(command string) *frame.Frame {
	r.t.Helper()
	f := r.frame()
	if f.Command != command {
		r.t.Fatalf("want %s, got %s %v %q", command, f.Command, f.Header, f.Body)
	}
	return f
}

func (r *rawConn) expectReceipt(id string) {
	r.t.Helper()
	f := r.expect("RECEIPT")
	if got := f.Header.Get("receipt-id"); got != id {
		r.t.Fatalf("RECEIPT receipt-id %q, want %q", got, id)
	}
}

// subscribe subscribes with a receipt and waits for it.
func (r *rawConn) subscribe(id, dest string, extra ...string) {
	r.t.Helper()
	h := append([]string{"id:" + id, "destination:" + dest, "receipt:sub-" + id}, extra...)
	r.send(stompFrame("SUBSCRIBE", "", h...))
	r.expectReceipt("sub-" + id)
}

// closeStatus reads until the connection ends and returns its close code
// (-1 for a connection cut without a close frame).
func (r *rawConn) closeStatus() websocket.StatusCode {
	r.t.Helper()
	for {
		_, err := r.read(10 * time.Second)
		if err == nil {
			continue
		}
		if errors.Is(err, context.DeadlineExceeded) {
			r.t.Fatalf("connection still open after 10s")
		}
		return websocket.CloseStatus(err)
	}
}

func decodeChat(t testing.TB, body []byte) chat.Message {
	t.Helper()
	var m chat.Message
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return m
}

// 1. Version negotiation, the STOMP command and WebSocket subprotocols.
func TestProtocolVersionNegotiation(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	cases := []struct {
		name, command, accept, want string
	}{
		{"all", "CONNECT", "1.0,1.1,1.2", "1.2"},
		{"unordered", "CONNECT", "1.2, 1.0", "1.2"},
		{"1.1", "CONNECT", "1.1", "1.1"},
		{"1.1-and-unknown", "CONNECT", "1.1,3.0", "1.1"},
		{"absent", "CONNECT", "", "1.0"},
		{"STOMP-1.2", "STOMP", "1.0,1.1,1.2", "1.2"},
		{"STOMP-1.1", "STOMP", "1.1", "1.1"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			user := "ver" + strconv.Itoa(i)
			h := []string{"host:/", "login:" + user}
			if tc.accept != "" {
				h = append(h, "accept-version:"+tc.accept)
			}
			r.send(stompFrame(tc.command, "", h...))
			f := r.expect("CONNECTED")
			if got := f.Header.Get("version"); got != tc.want {
				t.Fatalf("CONNECTED version %q, want %q", got, tc.want)
			}
			if got := f.Header.Get("user-name"); got != user {
				t.Errorf("CONNECTED user-name %q, want %q", got, user)
			}
			for _, name := range []string{"session", "server", "heart-beat"} {
				if f.Header.Get(name) == "" {
					t.Errorf("CONNECTED without %s header: %v", name, f.Header)
				}
			}
			// The session works at that version: a round trip through a room.
			room := "ver" + strconv.Itoa(i)
			r.subscribe("s1", "/topic/chat."+room)
			text := "hello at " + tc.want
			r.send(stompFrame("SEND", msgBody(text), "destination:/app/chat."+room,
				"content-type:application/json", "receipt:post"))
			var msg *frame.Frame
			receipted := false
			for msg == nil || !receipted {
				g := r.frame()
				switch {
				case g.Command == "RECEIPT" && g.Header.Get("receipt-id") == "post":
					receipted = true
				case g.Command == "MESSAGE" && msg == nil:
					msg = g
				default:
					t.Fatalf("unexpected %s %v %q", g.Command, g.Header, g.Body)
				}
			}
			if got := msg.Header.Get("subscription"); got != "s1" {
				t.Errorf("MESSAGE subscription %q, want s1", got)
			}
			if got := msg.Header.Get("destination"); got != "/topic/chat."+room {
				t.Errorf("MESSAGE destination %q", got)
			}
			if msg.Header.Get("message-id") == "" {
				t.Errorf("MESSAGE without message-id: %v", msg.Header)
			}
			if _, ok := msg.Header.Contains("ack"); ok {
				t.Errorf("auto-ack MESSAGE has an ack header: %v", msg.Header)
			}
			if m := decodeChat(t, msg.Body); m.Message != text || m.UserID != user || m.RoomID != room {
				t.Errorf("MESSAGE body %+v", m)
			}
		})
	}

	for _, accept := range []string{"2.0", "1.3,2.0", "1.x"} {
		t.Run("unsupported-"+accept, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			r.send(stompFrame("CONNECT", "", "accept-version:"+accept, "host:/", "login:u"))
			f := r.expectError("unsupported")
			v := f.Header.Get("version")
			for _, want := range []string{"1.0", "1.1", "1.2"} {
				if !strings.Contains(v, want) {
					t.Errorf("ERROR version header %q does not list %s", v, want)
				}
			}
		})
	}

	subprotocols := map[string][]string{
		"v10.stomp": {"v10.stomp"},
		"v11.stomp": {"v11.stomp"},
		"v12.stomp": {"v12.stomp"},
		"none":      {},
	}
	for name, offer := range subprotocols {
		t.Run("subprotocol-"+name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n, offer...)
			want := ""
			if len(offer) > 0 {
				want = offer[0]
			}
			if got := r.ws.Subprotocol(); got != want {
				t.Fatalf("negotiated subprotocol %q, want %q", got, want)
			}
			f := r.connectAs("sp-"+name, "1.0,1.1,1.2")
			if got := f.Header.Get("version"); got != "1.2" {
				t.Errorf("CONNECTED version %q, want 1.2", got)
			}
			r.subscribe("s1", "/user/queue/x")
		})
	}
}

// 2. CONNECT refused, frames before CONNECT, a second CONNECT.
func TestProtocolConnectErrors(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	cases := []struct {
		name   string
		frames []string // sent after an optional valid CONNECT
		conn   bool     // connect first
		want   string
	}{
		{"no login", []string{stompFrame("CONNECT", "", "accept-version:1.2", "host:/")}, false, "login header required"},
		{"empty login", []string{stompFrame("CONNECT", "", "accept-version:1.2", "host:/", "login:")}, false, "login header required"},
		{"login with space", []string{stompFrame("CONNECT", "", "accept-version:1.2", "login:a b")}, false, "invalid login"},
		{"bad heart-beat", []string{stompFrame("CONNECT", "", "accept-version:1.2", "login:u", "heart-beat:x,1")}, false, "heart-beat"},
		{"SEND first", []string{stompFrame("SEND", msgBody("x"), "destination:/app/chat.r")}, false, "expected CONNECT frame, got SEND"},
		{"SUBSCRIBE first", []string{stompFrame("SUBSCRIBE", "", "id:1", "destination:/topic/chat.r")}, false, "expected CONNECT frame, got SUBSCRIBE"},
		{"DISCONNECT first", []string{stompFrame("DISCONNECT", "", "receipt:x")}, false, "expected CONNECT frame"},
		{"second CONNECT", []string{stompFrame("CONNECT", "", "accept-version:1.2", "login:u")}, true, "already connected"},
		{"second STOMP", []string{stompFrame("STOMP", "", "accept-version:1.2", "login:u")}, true, "already connected"},
		{"unknown command", []string{stompFrame("FROB", "")}, true, "unknown command FROB"},
		{"lower-case command", []string{"send\ndestination:/app/chat.r\n\n{}\x00"}, true, "invalid command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			if tc.conn {
				r.connectAs("u", "1.2")
			}
			for _, f := range tc.frames {
				r.send(f)
			}
			r.expectError(tc.want)
		})
	}
}

// 3. Receipts, in frame order, and receipt-id on ERROR.
func TestProtocolReceipts(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	t.Run("every command", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("rc", "1.2")
		// One WebSocket message, synchronous and asynchronous (SEND) frames
		// mixed: receipts come back one each, in frame order.
		r.send(stompFrame("SUBSCRIBE", "", "id:s1", "destination:/topic/chat.rcpt", "receipt:sub-1") +
			stompFrame("SEND", msgBody("one"), "destination:/app/chat.rcpt-other", "receipt:send-1") +
			stompFrame("UNSUBSCRIBE", "", "id:s1", "receipt:unsub-1") +
			stompFrame("BEGIN", "", "transaction:t1", "receipt:begin-1") +
			stompFrame("SEND", msgBody("two"), "destination:/app/chat.rcpt-other", "transaction:t1", "receipt:send-2") +
			stompFrame("COMMIT", "", "transaction:t1", "receipt:commit-1") +
			stompFrame("BEGIN", "", "transaction:t2", "receipt:begin-2") +
			stompFrame("ABORT", "", "transaction:t2", "receipt:abort-1") +
			stompFrame("SEND", msgBody("three"), "destination:/app/chat.rcpt-other", "receipt:send-3") +
			stompFrame("DISCONNECT", "", "receipt:disconnect-1"))
		for _, id := range []string{"sub-1", "send-1", "unsub-1", "begin-1", "send-2", "commit-1",
			"begin-2", "abort-1", "send-3", "disconnect-1"} {
			r.expectReceipt(id)
		}
		if code := r.closeStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close code %d after DISCONNECT, want 1000", code)
		}
	})

	errCases := []struct {
		name   string
		frames string
		ok     []string // receipts expected before the ERROR
		want   string
		rid    string
	}{
		{"UNSUBSCRIBE unknown", stompFrame("UNSUBSCRIBE", "", "id:nope", "receipt:bad-1"), nil, "no subscription", "bad-1"},
		{"COMMIT unknown", stompFrame("COMMIT", "", "transaction:nope", "receipt:bad-2"), nil, "unknown transaction", "bad-2"},
		{"SUBSCRIBE invalid", stompFrame("SUBSCRIBE", "", "id:1", "destination:/topic/chat.*", "receipt:bad-3"), nil, "invalid destination", "bad-3"},
		{"SEND invalid body", stompFrame("SEND", "nope", "destination:/app/chat.r", "receipt:bad-4"), nil, "invalid message body", "bad-4"},
		{"after good frames",
			stompFrame("SUBSCRIBE", "", "id:1", "destination:/topic/chat.r", "receipt:ok-1") +
				stompFrame("SEND", msgBody("fine"), "destination:/app/chat.r2", "receipt:ok-2") +
				stompFrame("SEND", `{"message":""}`, "destination:/app/chat.r2", "receipt:bad-5") +
				stompFrame("SEND", msgBody("never"), "destination:/app/chat.r2", "receipt:never"),
			[]string{"ok-1", "ok-2"}, "invalid message body", "bad-5"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			r.connectAs("rc", "1.2")
			r.send(tc.frames)
			for _, id := range tc.ok {
				r.expectReceipt(id)
			}
			f := r.expect("ERROR")
			if msg := f.Header.Get("message"); !strings.Contains(msg, tc.want) {
				t.Errorf("ERROR message %q, want %q", msg, tc.want)
			}
			if got := f.Header.Get("receipt-id"); got != tc.rid {
				t.Errorf("ERROR receipt-id %q, want %q", got, tc.rid)
			}
			r.expectClosed()
		})
	}
}

// 4. Header escaping.
func TestProtocolHeaderEscaping(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	t.Run("pass-through", func(t *testing.T) {
		const room = "esc"
		gs := dial(t, n, "gs").subscribe("/topic/chat." + room)
		raw12, tee12 := dialMsg(t, n)
		raw12.connectAs("r12", "1.2")
		tee12.tee = &bytes.Buffer{}
		raw12.subscribe("s12", "/topic/chat."+room)
		raw11, tee11 := dialMsg(t, n)
		raw11.connectAs("r11", "1.1")
		tee11.tee = &bytes.Buffer{}
		raw11.subscribe("s11", "/topic/chat."+room)
		raw10, tee10 := dialMsg(t, n)
		raw10.connectAs("r10", "")
		tee10.tee = &bytes.Buffer{}
		raw10.subscribe("s10", "/topic/chat."+room)

		sender, _ := dialMsg(t, n)
		sender.connectAs("sender", "1.2")
		sender.send(stompFrame("SEND", msgBody("escaped"), "destination:/app/chat."+room,
			`x-trace:a\cb`, `x-lines:one\ntwo`, `x-slash:back\\slash`, `x-cr:a\rb`,
			`x-inject:v\ncontent-length:0`, `x\cname:v`, "receipt:s"))
		sender.expectReceipt("s")

		// go-stomp (1.2) decodes the re-escaped values.
		m := next(t, gs)
		want := map[string]string{
			"x-trace": "a:b", "x-lines": "one\ntwo", "x-slash": `back\slash`, "x-cr": "a\rb",
			"x-inject": "v\ncontent-length:0", "x:name": "v",
		}
		for k, v := range want {
			if got := m.Header.Get(k); got != v {
				t.Errorf("go-stomp MESSAGE header %q = %q, want %q", k, got, v)
			}
		}
		if cm := decodeChat(t, m.Body); cm.Message != "escaped" {
			t.Errorf("body %+v", cm)
		}

		// 1.2 wire form: escaped again.
		f := raw12.expect("MESSAGE")
		if cm := decodeChat(t, f.Body); cm.Message != "escaped" {
			t.Errorf("1.2 body %+v", cm)
		}
		for _, line := range []string{`x-trace:a\cb` + "\n", `x-lines:one\ntwo` + "\n", `x-slash:back\\slash` + "\n",
			`x-cr:a\rb` + "\n", `x-inject:v\ncontent-length\c0` + "\n", `x\cname:v` + "\n"} {
			if !strings.Contains(tee12.tee.String(), line) {
				t.Errorf("1.2 MESSAGE lacks %q:\n%q", line, tee12.tee.String())
			}
		}

		// 1.1: escaped with 1.1's rules (no \r escape; a CR inside a value
		// is sent as is).
		f = raw11.expect("MESSAGE")
		if cm := decodeChat(t, f.Body); cm.Message != "escaped" {
			t.Errorf("1.1 body %+v", cm)
		}
		for _, line := range []string{`x-trace:a\cb` + "\n", `x-lines:one\ntwo` + "\n", `x-slash:back\\slash` + "\n",
			"x-cr:a\rb\n", `x-inject:v\ncontent-length\c0` + "\n", `x\cname:v` + "\n"} {
			if !strings.Contains(tee11.tee.String(), line) {
				t.Errorf("1.1 MESSAGE lacks %q:\n%q", line, tee11.tee.String())
			}
		}

		// 1.0 has no escaping: values that 1.0 cannot carry must not reach
		// the client at all, above all not as extra header lines.
		f = raw10.expect("MESSAGE")
		if cm := decodeChat(t, f.Body); cm.Message != "escaped" {
			t.Errorf("1.0 body %+v (headers %v)", cm, f.Header)
		}
		if got := f.Header.Get("x-trace"); got != "a:b" {
			t.Errorf("1.0 x-trace %q, want a:b", got)
		}
		if cl := f.Header.GetAll("content-length"); len(cl) != 1 {
			t.Errorf("1.0 MESSAGE has content-length headers %q: a header value broke the frame", cl)
		}
		for _, k := range []string{"x-lines", "x-inject"} {
			if v, ok := f.Header.Contains(k); ok {
				t.Errorf("1.0 MESSAGE carries %s=%q, which 1.0 cannot encode", k, v)
			}
		}
		if strings.Contains(tee10.tee.String(), "\ntwo\n") || strings.Contains(tee10.tee.String(), "x:name") {
			t.Errorf("1.0 MESSAGE has a raw header line from an escaped value:\n%q", tee10.tee.String())
		}
	})

	t.Run("1.0 SEND is not unescaped", func(t *testing.T) {
		const room = "esc10"
		gs := dial(t, n, "gs10").subscribe("/topic/chat." + room)
		r, _ := dialMsg(t, n)
		r.connectAs("s10", "1.0")
		r.send(stompFrame("SEND", msgBody("m"), "destination:/app/chat."+room, `x-trace:a\tb\c`, "receipt:r"))
		r.expectReceipt("r")
		if got := next(t, gs).Header.Get("x-trace"); got != `a\tb\c` {
			t.Errorf("x-trace %q, want %q", got, `a\tb\c`)
		}
	})

	for _, tc := range []struct{ name, accept, header string }{
		{"undefined escape 1.2", "1.2", `x-trace:a\tb`},
		{"undefined escape in name", "1.2", `x\t:v`},
		{"trailing backslash", "1.2", `x-trace:a\`},
		{"carriage return escape in 1.1", "1.1", `x-trace:a\rb`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			r.connectAs("u", tc.accept)
			r.send(stompFrame("SEND", msgBody("x"), "destination:/app/chat.r", tc.header))
			r.expectError("undefined escape sequence")
		})
	}

	t.Run("CONNECT not unescaped", func(t *testing.T) {
		t.Parallel()
		r, mc := dialMsg(t, n)
		mc.tee = &bytes.Buffer{}
		// \t would be an undefined escape in any other 1.2 frame.
		r.send(stompFrame("CONNECT", "", "accept-version:1.2", "host:/", `login:u\tx`))
		r.expect("CONNECTED")
		if !strings.Contains(mc.tee.String(), "\nuser-name:u\\tx\n") {
			t.Errorf("CONNECTED does not carry the login as sent:\n%q", mc.tee.String())
		}
		r.subscribe("s", "/topic/chat.escc")
		r.send(stompFrame("SEND", msgBody("hi"), "destination:/app/chat.escc"))
		if m := decodeChat(t, r.expect("MESSAGE").Body); m.UserID != `u\tx` {
			t.Errorf("userId %q, want %q", m.UserID, `u\tx`)
		}
	})
}

// 5. content-length.
func TestProtocolContentLength(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	t.Run("NUL inside the body", func(t *testing.T) {
		t.Parallel()
		// Read up to the first NUL, the body would be a valid message and
		// the rest a garbage frame. Read by content-length it is one SEND
		// whose body is not JSON.
		body := msgBody("first") + "\x00" + `{"x":1}`
		r, _ := dialMsg(t, n)
		r.connectAs("cl", "1.2")
		r.subscribe("s", "/topic/chat.cl-nul")
		r.send(stompFrame("SEND", body, "destination:/app/chat.cl-nul",
			"content-length:"+strconv.Itoa(len(body)), "receipt:nul"))
		f := r.expect("ERROR")
		if msg := f.Header.Get("message"); !strings.Contains(msg, "invalid message body") {
			t.Fatalf("ERROR %q, want invalid message body", msg)
		}
		if got := f.Header.Get("receipt-id"); got != "nul" {
			t.Errorf("ERROR receipt-id %q, want nul", got)
		}
		r.expectClosed()
	})

	t.Run("NUL right after the body", func(t *testing.T) {
		t.Parallel()
		const room = "cl-ok"
		r, _ := dialMsg(t, n)
		r.connectAs("cl", "1.2")
		r.subscribe("s", "/topic/chat."+room)
		// Exact content-length, EOLs after the NUL, a second frame in the
		// same WebSocket message, and a message with a (JSON-escaped) NUL.
		b1 := `{"message":"a\u0000b"}`
		b2 := msgBody("second")
		r.send(stompFrame("SEND", b1, "destination:/app/chat."+room, "content-length:"+strconv.Itoa(len(b1)), "receipt:1") +
			"\n\r\n" + stompFrame("SEND", b2, "destination:/app/chat."+room, "content-length:"+strconv.Itoa(len(b2)), "receipt:2"))
		var got []string
		var receipts []string
		for len(got) < 2 || len(receipts) < 2 {
			f := r.frame()
			switch f.Command {
			case "MESSAGE":
				got = append(got, decodeChat(t, f.Body).Message)
			case "RECEIPT":
				receipts = append(receipts, f.Header.Get("receipt-id"))
			default:
				t.Fatalf("unexpected %s %v", f.Command, f.Header)
			}
		}
		if got[0] != "a\x00b" || got[1] != "second" {
			t.Errorf("messages %q", got)
		}
		if receipts[0] != "1" || receipts[1] != "2" {
			t.Errorf("receipts %q", receipts)
		}
	})

	t.Run("frame split across WebSocket messages", func(t *testing.T) {
		t.Parallel()
		const room = "cl-split"
		r, _ := dialMsg(t, n)
		r.connectAs("cl", "1.2")
		r.subscribe("s", "/topic/chat."+room)
		body := msgBody("split")
		whole := stompFrame("SEND", body, "destination:/app/chat."+room, "content-length:"+strconv.Itoa(len(body)), "receipt:split")
		cut1, cut2 := 9, len(whole)-5 // inside a header, inside the body
		r.send(whole[:cut1])
		r.send(whole[cut1:cut2])
		r.send(whole[cut2:])
		for seen, receipted := false, false; !seen || !receipted; {
			f := r.frame()
			switch {
			case f.Command == "MESSAGE":
				if m := decodeChat(t, f.Body); m.Message != "split" {
					t.Fatalf("message %+v", m)
				}
				seen = true
			case f.Command == "RECEIPT" && f.Header.Get("receipt-id") == "split":
				receipted = true
			default:
				t.Fatalf("unexpected %s %v", f.Command, f.Header)
			}
		}
	})

	for _, tc := range []struct{ name, frame, want string }{
		{"no NUL after the body", "SEND\ndestination:/app/chat.r\ncontent-length:3\n\n{}}}\x00", "missing NUL after body"},
		{"content-length not a number", "SEND\ndestination:/app/chat.r\ncontent-length:abc\n\n{}\x00", "invalid content-length"},
		{"negative content-length", "SEND\ndestination:/app/chat.r\ncontent-length:-1\n\n{}\x00", "invalid content-length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			r.connectAs("cl", "1.2")
			r.send(tc.frame)
			r.expectError(tc.want)
		})
	}
}

// 6. Limits.
func TestProtocolLimits(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	t.Run("frame over 64KiB", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("lim", "1.2")
		r.send(stompFrame("SEND", msgBody(strings.Repeat("x", 65<<10)), "destination:/app/chat.lim"))
		r.expectError("frame too large")
	})

	t.Run("content-length over 64KiB", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("lim", "1.2")
		// Refused from the header alone: no body follows.
		r.send("SEND\ndestination:/app/chat.lim\ncontent-length:70000\n\n")
		r.expectError("frame too large")
	})

	t.Run("frame under 64KiB", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("lim", "1.2")
		r.send(stompFrame("SEND", msgBody(strings.Repeat("y", 60<<10)), "destination:/app/chat.lim", "receipt:big"))
		r.expectReceipt("big")
	})

	t.Run("pre-CONNECT frame over 16KiB", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.send(stompFrame("CONNECT", strings.Repeat("z", 17<<10), "accept-version:1.2", "login:u"))
		r.expectError("frame too large")
	})

	t.Run("pre-CONNECT frame under 16KiB", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		pad := strings.Repeat("p", 6<<10)
		r.connectAs("lim", "1.2", "x-pad1:"+pad, "x-pad2:"+pad)
	})

	headers := func(n int) []string {
		h := []string{"destination:/app/chat.lim", "receipt:many"}
		for i := len(h); i < n; i++ {
			h = append(h, fmt.Sprintf("x-h%d:%d", i, i))
		}
		return h
	}
	t.Run("32 headers", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("lim", "1.2")
		r.send(stompFrame("SEND", msgBody("h"), headers(32)...))
		r.expectReceipt("many")
	})
	t.Run("33 headers", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("lim", "1.2")
		r.send(stompFrame("SEND", msgBody("h"), headers(33)...))
		r.expectError("too many headers")
	})

	t.Run("subscriptions over 64", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("lim", "1.2")
		var b strings.Builder
		for i := range 64 {
			h := []string{"id:s" + strconv.Itoa(i), "destination:/user/queue/q" + strconv.Itoa(i)}
			if i == 63 {
				h = append(h, "receipt:64")
			}
			b.WriteString(stompFrame("SUBSCRIBE", "", h...))
		}
		r.send(b.String())
		r.expectReceipt("64")
		// A freed slot can be reused; past the limit is refused.
		r.send(stompFrame("UNSUBSCRIBE", "", "id:s0", "receipt:un"))
		r.expectReceipt("un")
		r.subscribe("again", "/user/queue/again")
		r.send(stompFrame("SUBSCRIBE", "", "id:s65", "destination:/user/queue/one-too-many", "receipt:65"))
		r.expectError("too many subscriptions")
	})
}

// 7. Bad destinations and requests end the offending session only.
func TestProtocolBadDestinations(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	const room = "r"
	watcher := dial(t, n, "watcher")
	wsub := watcher.subscribe("/topic/chat." + room)
	poster := dial(t, n, "poster")

	long := strings.Repeat("a", 65)
	cases := []struct {
		name, frame, want string
	}{
		{"subscribe wildcard *", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat.*"), "invalid destination"},
		{"subscribe wildcard >", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat.>"), "invalid destination"},
		{"subscribe extra token", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat.a.b"), "invalid destination"},
		{"subscribe empty room", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat."), "invalid destination"},
		{"subscribe trailing dot", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat.r."), "invalid destination"},
		{"subscribe space", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat.a b"), "invalid destination"},
		{"subscribe queue", stompFrame("SUBSCRIBE", "", "id:x", "destination:/queue/x"), "invalid destination"},
		{"subscribe user queue wildcard", stompFrame("SUBSCRIBE", "", "id:x", "destination:/user/queue/*"), "invalid destination"},
		{"subscribe user queue empty token", stompFrame("SUBSCRIBE", "", "id:x", "destination:/user/queue/a..b"), "invalid destination"},
		{"subscribe long room", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat."+long), "invalid destination"},
		{"subscribe app", stompFrame("SUBSCRIBE", "", "id:x", "destination:/app/chat.r"), "cannot SUBSCRIBE"},
		{"subscribe bad since-id", stompFrame("SUBSCRIBE", "", "id:x", "destination:/topic/chat.r", "since-id:abc"), "invalid since-id"},
		{"subscribe without destination", stompFrame("SUBSCRIBE", "", "id:x"), "without destination"},
		{"subscribe without id", stompFrame("SUBSCRIBE", "", "destination:/topic/chat.r"), "without id"},
		{"subscribe duplicate id", stompFrame("SUBSCRIBE", "", "id:mine", "destination:/topic/chat.r2"), "already in use"},
		{"send extra tokens", stompFrame("SEND", msgBody("x"), "destination:/app/chat.a.b.c"), "invalid destination"},
		{"send long room", stompFrame("SEND", msgBody("x"), "destination:/app/chat."+long), "invalid destination"},
		{"send wildcard", stompFrame("SEND", msgBody("x"), "destination:/app/chat.*"), "invalid destination"},
		{"send to topic", stompFrame("SEND", msgBody("x"), "destination:/topic/chat.r"), "cannot SEND"},
		{"send to user queue", stompFrame("SEND", msgBody("x"), "destination:/user/queue/x"), "cannot SEND"},
		{"send without destination", stompFrame("SEND", msgBody("x")), "without destination"},
		{"send invalid JSON", stompFrame("SEND", "{not json", "destination:/app/chat.r"), "invalid message body"},
		{"send empty message", stompFrame("SEND", `{"message":""}`, "destination:/app/chat.r"), "invalid message body"},
		{"send no message", stompFrame("SEND", `{"text":"x"}`, "destination:/app/chat.r"), "invalid message body"},
		{"send empty body", stompFrame("SEND", "", "destination:/app/chat.r"), "invalid message body"},
		{"bad read receipt", stompFrame("SEND", `{"lastReadId":"x"}`, "destination:/app/chat.r.read"), "invalid read receipt"},
		{"bad log request", stompFrame("SEND", `{"limit":-1}`, "destination:/app/chat.r.log"), "invalid log request"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { // one after another: they share the room
			// The offender is subscribed to the same room when it misbehaves.
			r, _ := dialMsg(t, n)
			r.connectAs(fmt.Sprintf("bad%d", i), "1.2")
			r.subscribe("mine", "/topic/chat."+room)
			r.send(tc.frame)
			r.expectError(tc.want)
			// The room still works for everyone else.
			p := *poster
			p.t = t
			text := "after " + tc.name
			p.post(room, text)
			if got := nextChat(t, wsub); got.Message != text {
				t.Fatalf("the watcher got %q, want %q", got.Message, text)
			}
		})
	}
}

// 8a. Acknowledgement modes.
func TestProtocolAckModes(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	// subscribeAndReceive subscribes r with the ack mode, posts count
	// messages and returns the MESSAGE frames.
	subscribeAndReceive := func(t *testing.T, r *rawConn, room, mode string, count int) []*frame.Frame {
		t.Helper()
		r.subscribe("s1", "/topic/chat."+room, "ack:"+mode)
		poster := dial(t, n, "poster-"+room)
		for i := range count {
			poster.post(room, "m"+strconv.Itoa(i))
		}
		var out []*frame.Frame
		for i := range count {
			f := r.expect("MESSAGE")
			if m := decodeChat(t, f.Body); m.Message != "m"+strconv.Itoa(i) {
				t.Fatalf("message %d: %+v", i, m)
			}
			out = append(out, f)
		}
		return out
	}

	t.Run("client-individual 1.2", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "ack-ci", "client-individual", 3)
		for _, m := range ms {
			if m.Header.Get("ack") == "" {
				t.Fatalf("client-individual MESSAGE without ack header: %v", m.Header)
			}
		}
		r.send(stompFrame("ACK", "", "id:"+ms[1].Header.Get("ack"), "receipt:a1"))
		r.expectReceipt("a1")
		r.send(stompFrame("NACK", "", "id:"+ms[0].Header.Get("ack"), "receipt:n0"))
		r.expectReceipt("n0")
		r.send(stompFrame("ACK", "", "id:"+ms[2].Header.Get("ack"), "receipt:a2"))
		r.expectReceipt("a2")
		// Each id settles once.
		r.send(stompFrame("ACK", "", "id:"+ms[1].Header.Get("ack"), "receipt:again"))
		f := r.expectError("ACK for an unknown message")
		if got := f.Header.Get("receipt-id"); got != "again" {
			t.Errorf("ERROR receipt-id %q", got)
		}
	})

	t.Run("client 1.2 is cumulative", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "ack-c", "client", 3)
		for _, m := range ms {
			if m.Header.Get("ack") == "" {
				t.Fatalf("client MESSAGE without ack header: %v", m.Header)
			}
		}
		r.send(stompFrame("ACK", "", "id:"+ms[1].Header.Get("ack"), "receipt:a1"))
		r.expectReceipt("a1")
		// Settled along with the second.
		r.send(stompFrame("ACK", "", "id:"+ms[0].Header.Get("ack"), "receipt:a0"))
		r.expectError("ACK for an unknown message")
	})

	t.Run("unknown ids", func(t *testing.T) {
		t.Parallel()
		for _, id := range []string{"999999", "abc", ""} {
			r, _ := dialMsg(t, n)
			r.connectAs("ack", "1.2")
			r.subscribe("s1", "/topic/chat.ack-u", "ack:client-individual")
			r.send(stompFrame("ACK", "", "id:"+id))
			r.expectError("ACK for an unknown message")
		}
		r, _ := dialMsg(t, n)
		r.connectAs("ack", "1.2")
		r.send(stompFrame("NACK", "", "id:1"))
		r.expectError("NACK for an unknown message")
	})

	t.Run("auto has no ack header and nothing to ack", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "ack-auto", "auto", 1)
		if v, ok := ms[0].Header.Contains("ack"); ok {
			t.Fatalf("auto MESSAGE has ack:%s", v)
		}
		r.send(stompFrame("ACK", "", "id:"+ms[0].Header.Get("message-id")))
		r.expectError("ACK for an unknown message")
	})

	t.Run("1.1 message-id and subscription", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("ack", "1.1")
		ms := subscribeAndReceive(t, r, "ack-11", "client-individual", 2)
		if _, ok := ms[0].Header.Contains("ack"); ok {
			t.Errorf("1.1 MESSAGE has an ack header: %v", ms[0].Header)
		}
		r.send(stompFrame("ACK", "", "message-id:"+ms[0].Header.Get("message-id"), "subscription:s1", "receipt:a0"))
		r.expectReceipt("a0")
		r.send(stompFrame("NACK", "", "message-id:"+ms[1].Header.Get("message-id"), "subscription:other", "receipt:a1"))
		r.expectError("NACK for an unknown message")
	})

	t.Run("1.0 refuses client-individual", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("ack", "1.0")
		r.send(stompFrame("SUBSCRIBE", "", "id:s", "destination:/topic/chat.ack10", "ack:client-individual"))
		r.expectError("invalid ack mode")
	})

	t.Run("ACK inside transactions", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "ack-tx", "client-individual", 2)
		a0, a1 := ms[0].Header.Get("ack"), ms[1].Header.Get("ack")
		// An aborted ACK settles nothing.
		r.send(stompFrame("BEGIN", "", "transaction:t1") +
			stompFrame("ACK", "", "id:"+a0, "transaction:t1") +
			stompFrame("ABORT", "", "transaction:t1") +
			stompFrame("ACK", "", "id:"+a0, "receipt:after-abort"))
		r.expectReceipt("after-abort")
		// A committed one does.
		r.send(stompFrame("BEGIN", "", "transaction:t2") +
			stompFrame("ACK", "", "id:"+a1, "transaction:t2") +
			stompFrame("COMMIT", "", "transaction:t2", "receipt:commit"))
		r.expectReceipt("commit")
		r.send(stompFrame("ACK", "", "id:"+a1))
		r.expectError("ACK for an unknown message")
	})
}

// 8b. Transactions.
func TestProtocolTransactions(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	t.Run("commit", func(t *testing.T) {
		t.Parallel()
		const room = "tx-commit"
		wsub := dial(t, n, "w1").subscribe("/topic/chat." + room)
		r, _ := dialMsg(t, n)
		r.connectAs("txer", "1.2")
		r.send(stompFrame("BEGIN", "", "transaction:t", "receipt:b"))
		r.expectReceipt("b")
		r.send(stompFrame("SEND", msgBody("in-tx-1"), "destination:/app/chat."+room, "transaction:t", "receipt:s1"))
		r.expectReceipt("s1")
		r.send(stompFrame("SEND", msgBody("in-tx-2"), "destination:/app/chat."+room, "transaction:t", "receipt:s2"))
		r.expectReceipt("s2")
		// Barrier: a SEND outside the transaction, after the ones inside.
		// Had those gone out already, they would arrive first.
		r.send(stompFrame("SEND", msgBody("outside"), "destination:/app/chat."+room, "receipt:out"))
		r.expectReceipt("out")
		if got := nextChat(t, wsub).Message; got != "outside" {
			t.Fatalf("before COMMIT the subscriber got %q", got)
		}
		r.send(stompFrame("COMMIT", "", "transaction:t", "receipt:c"))
		r.expectReceipt("c")
		for _, want := range []string{"in-tx-1", "in-tx-2"} {
			if got := nextChat(t, wsub).Message; got != want {
				t.Fatalf("after COMMIT got %q, want %q", got, want)
			}
		}
	})

	t.Run("abort", func(t *testing.T) {
		t.Parallel()
		const room = "tx-abort"
		wsub := dial(t, n, "w2").subscribe("/topic/chat." + room)
		r, _ := dialMsg(t, n)
		r.connectAs("txer", "1.2")
		r.send(stompFrame("BEGIN", "", "transaction:t") +
			stompFrame("SEND", msgBody("aborted"), "destination:/app/chat."+room, "transaction:t") +
			stompFrame("ABORT", "", "transaction:t", "receipt:a") +
			stompFrame("SEND", msgBody("after-abort"), "destination:/app/chat."+room, "receipt:s"))
		r.expectReceipt("a")
		r.expectReceipt("s")
		if got := nextChat(t, wsub).Message; got != "after-abort" {
			t.Fatalf("got %q, want after-abort", got)
		}
		// The transaction is gone.
		r.send(stompFrame("COMMIT", "", "transaction:t"))
		r.expectError("unknown transaction")
	})

	for _, tc := range []struct{ name, frames, want string }{
		{"COMMIT unknown", stompFrame("COMMIT", "", "transaction:nope"), "unknown transaction"},
		{"ABORT unknown", stompFrame("ABORT", "", "transaction:nope"), "unknown transaction"},
		{"SEND in unknown", stompFrame("SEND", msgBody("x"), "destination:/app/chat.r", "transaction:nope"), "unknown transaction"},
		{"BEGIN twice", stompFrame("BEGIN", "", "transaction:t") + stompFrame("BEGIN", "", "transaction:t"), "already begun"},
		{"BEGIN without name", stompFrame("BEGIN", ""), "BEGIN without transaction"},
		{"bad SEND in commit", stompFrame("BEGIN", "", "transaction:t") +
			stompFrame("SEND", "nope", "destination:/app/chat.r", "transaction:t") +
			stompFrame("COMMIT", "", "transaction:t"), "invalid message body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			r.connectAs("txer", "1.2")
			r.send(tc.frames)
			r.expectError(tc.want)
		})
	}
}

// 9a. Heart-beats both ways.
func TestProtocolHeartBeats(t *testing.T) {
	t.Parallel()
	const every = 500 * time.Millisecond
	const grace = 300 * time.Millisecond
	// The CONNECT timeout stays at its default (10s), well past every+grace.
	n := startNode(t, func(c *config.Config) {
		c.HeartBeat = every
		c.HeartBeatGrace = grace
	})

	t.Run("server sends", func(t *testing.T) {
		t.Parallel()
		ws := dialWS(t, n.wsURL())
		t.Cleanup(func() { _ = ws.CloseNow() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ws.Write(ctx, websocket.MessageText,
			[]byte(stompFrame("CONNECT", "", "accept-version:1.2", "login:hb", "heart-beat:0,500"))); err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("CONNECTED\n")) || !bytes.Contains(b, []byte("\nheart-beat:500,0\n")) {
			t.Fatalf("want CONNECTED with heart-beat:500,0, got %q", b)
		}
		const window = 3 * time.Second
		rctx, rcancel := context.WithTimeout(context.Background(), window)
		defer rcancel()
		var beats []time.Time
		for {
			_, b, err := ws.Read(rctx)
			if err != nil {
				if rctx.Err() == nil {
					t.Fatalf("read: %v", err)
				}
				break
			}
			if string(b) != "\n" {
				t.Fatalf("unexpected message %q", b)
			}
			beats = append(beats, time.Now())
		}
		if len(beats) < 2 {
			t.Fatalf("%d heart-beats in %s, want at least 2", len(beats), window)
		}
		if max := int(window/every) + 1; len(beats) > max {
			t.Fatalf("%d heart-beats in %s, want at most %d", len(beats), window, max)
		}
	})

	t.Run("none unless asked", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		f := r.connectAs("hb", "1.2", "heart-beat:0,0")
		if got := f.Header.Get("heart-beat"); got != "0,0" {
			t.Fatalf("CONNECTED heart-beat %q, want 0,0", got)
		}
		r2, _ := dialMsg(t, n)
		f = r2.connectAs("hb", "1.2", "heart-beat:100,0")
		if got := f.Header.Get("heart-beat"); got != "0,500" {
			t.Fatalf("CONNECTED heart-beat %q, want 0,500 (the server never asks for more often than it offers)", got)
		}
		// Nothing was asked of the first client: it may stay silent past
		// every+grace. (A wait only to show that something does NOT happen.)
		time.Sleep(every + grace + 500*time.Millisecond)
		r.subscribe("s", "/user/queue/still-here")
	})

	t.Run("silent client is closed", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		start := time.Now()
		f := r.connectAs("hb", "1.2", "heart-beat:500,0")
		if got := f.Header.Get("heart-beat"); got != "0,500" {
			t.Fatalf("CONNECTED heart-beat %q, want 0,500", got)
		}
		e := r.expect("ERROR")
		elapsed := time.Since(start)
		if msg := e.Header.Get("message"); !strings.Contains(msg, "heart-beat") {
			t.Fatalf("ERROR %q, want a heart-beat timeout", msg)
		}
		if elapsed < every+grace-50*time.Millisecond {
			t.Errorf("closed after %s, before the %s the client was allowed", elapsed, every+grace)
		}
		if limit := every + grace + 2*time.Second; elapsed > limit {
			t.Errorf("closed after %s, want within %s", elapsed, limit)
		}
		r.expectClosed()
	})

	t.Run("client heart-beats keep it open", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("hb", "1.2", "heart-beat:500,0")
		tick := time.NewTicker(every / 3)
		defer tick.Stop()
		for end := time.Now().Add(3 * (every + grace)); time.Now().Before(end); {
			<-tick.C
			r.send("\n")
		}
		r.subscribe("s", "/user/queue/alive")
	})
}

// 9b. No CONNECT in time.
func TestProtocolConnectTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	n := startNode(t, func(c *config.Config) { c.ConnectTimeout = timeout })

	for _, tc := range []struct{ name, send string }{
		{"nothing", ""},
		{"partial CONNECT", "CONNECT\naccept-version:1.2\n"},
		{"heart-beats only", "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, _ := dialMsg(t, n)
			start := time.Now()
			if tc.send != "" {
				r.send(tc.send)
			}
			r.expectError("no CONNECT frame")
			if elapsed := time.Since(start); elapsed < timeout/2 || elapsed > timeout+5*time.Second {
				t.Errorf("closed after %s, want about %s", elapsed, timeout)
			}
		})
	}
}

// 10. A client that stops reading is cut off; nobody else notices.
func TestProtocolSlowConsumer(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	const (
		room       = "flood"
		publishers = 4
		perPub     = 3000
		total      = publishers * perPub
		batch      = 50
	)
	pad := strings.Repeat("x", 1000)

	fast := dial(t, n, "fast")
	fsub := fast.subscribe("/topic/chat." + room)

	slow, _ := dialMsg(t, n)
	slow.connectAs("slow", "1.2")
	slow.subscribe("s", "/topic/chat."+room)
	// From here on the slow client reads nothing until the burst is over.

	pubs := make([]*rawConn, publishers)
	for p := range pubs {
		pubs[p], _ = dialMsg(t, n)
		pubs[p].connectAs("pub"+strconv.Itoa(p), "1.2")
	}
	errs := make(chan error, publishers)
	var wg sync.WaitGroup
	for p, r := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for i := 0; i < perPub; i += batch {
					var b strings.Builder
					end := min(i+batch, perPub)
					for k := i; k < end; k++ {
						b.WriteString(stompFrame("SEND", msgBody(fmt.Sprintf("p%d-%d-%s", p, k, pad)),
							"destination:/app/chat."+room, "content-type:application/json", fmt.Sprintf("receipt:%d", k)))
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := r.ws.Write(ctx, websocket.MessageText, []byte(b.String()))
					cancel()
					if err != nil {
						return fmt.Errorf("publisher %d: write: %w", p, err)
					}
					for k := i; k < end; k++ {
						f, err := r.read(20 * time.Second)
						if err != nil {
							return fmt.Errorf("publisher %d: waiting for receipt %d: %w", p, k, err)
						}
						if f.Command != "RECEIPT" || f.Header.Get("receipt-id") != strconv.Itoa(k) {
							return fmt.Errorf("publisher %d: want RECEIPT %d, got %s %v", p, k, f.Command, f.Header)
						}
					}
				}
				return nil
			}()
		}()
	}

	// The fast consumer gets everything, in order, with no gap.
	nextSeq := make([]int, publishers)
	var lastID uint64
	for i := range total {
		m := nextChat(t, fsub)
		var p, k int
		if _, err := fmt.Sscanf(m.Message, "p%d-%d-", &p, &k); err != nil || p < 0 || p >= publishers {
			t.Fatalf("message %d: unexpected text %.40q", i, m.Message)
		}
		if k != nextSeq[p] {
			t.Fatalf("message %d: publisher %d's #%d, want #%d", i, p, k, nextSeq[p])
		}
		nextSeq[p]++
		if lastID != 0 && m.ID != lastID+1 {
			t.Fatalf("message %d: id %d after %d", i, m.ID, lastID)
		}
		lastID = m.ID
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// The slow client was cut off: what it still finds is the MESSAGEs that
	// were on their way, then possibly the ERROR, then the end of the
	// connection, which must come without the client doing anything.
	got := 0
	for {
		f, err := slow.read(10 * time.Second)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("slow consumer still connected after reading %d of %d messages", got, total)
			}
			break
		}
		if f.Command == "ERROR" {
			if msg := f.Header.Get("message"); !strings.Contains(msg, "slow consumer") {
				t.Fatalf("ERROR %q, want slow consumer", msg)
			}
			slow.expectClosed()
			break
		}
		if f.Command != "MESSAGE" {
			t.Fatalf("slow consumer got %s %v", f.Command, f.Header)
		}
		got++
	}
	if got >= total {
		t.Fatalf("slow consumer received all %d messages: it was never cut off", total)
	}
	t.Logf("slow consumer received %d of %d messages before the cut", got, total)

	// The cut shows in /metrics: one slow consumer, its ERROR, and the
	// deliveries it could no longer take.
	waitDeltas(t, n, nil, map[string]float64{
		"chatd_slow_consumer_disconnects_total":    1,
		`chatd_errors_total{kind="slow_consumer"}`: 1,
	})
	if dropped := scrape(t, n)["chatd_deliveries_dropped_total"]; dropped < 1 {
		t.Fatalf("chatd_deliveries_dropped_total = %v after a slow consumer was cut mid-burst", dropped)
	}
}

// 11. Graceful shutdown.
func TestProtocolShutdown(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	r, _ := dialMsg(t, n)
	r.connectAs("sd", "1.2")
	r.subscribe("s", "/topic/chat.sd")
	stopped := make(chan struct{})
	go func() { defer close(stopped); n.stop() }()
	t.Cleanup(func() { <-stopped }) // before startNode's n.stop
	f := r.expect("ERROR")
	if msg := f.Header.Get("message"); msg != "server shutting down, reconnect" {
		t.Errorf("ERROR message %q", msg)
	}
	if code := r.closeStatus(); code != websocket.StatusServiceRestart {
		t.Errorf("close code %d, want 1012", code)
	}
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("node did not stop within 15s")
	}
}

// 12. DISCONNECT.
func TestProtocolDisconnect(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	t.Run("with receipt", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("dc", "1.2")
		r.send(stompFrame("DISCONNECT", "", "receipt:bye"))
		r.expectReceipt("bye")
		if code := r.closeStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close code %d, want 1000", code)
		}
	})

	t.Run("without receipt", func(t *testing.T) {
		t.Parallel()
		r, _ := dialMsg(t, n)
		r.connectAs("dc", "1.0")
		r.send(stompFrame("DISCONNECT", ""))
		if code := r.closeStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close code %d, want 1000", code)
		}
	})

	t.Run("after pending SENDs", func(t *testing.T) {
		t.Parallel()
		// DISCONNECT right behind SENDs that are still being stored: the
		// receipts of both come back, in order, then a normal close.
		const room = "dc-pending"
		wsub := dial(t, n, "dcw").subscribe("/topic/chat." + room)
		r, _ := dialMsg(t, n)
		r.connectAs("dc", "1.2")
		var b strings.Builder
		for i := range 5 {
			b.WriteString(stompFrame("SEND", msgBody("m"+strconv.Itoa(i)), "destination:/app/chat."+room, "receipt:s"+strconv.Itoa(i)))
		}
		b.WriteString(stompFrame("DISCONNECT", "", "receipt:bye"))
		r.send(b.String())
		for i := range 5 {
			r.expectReceipt("s" + strconv.Itoa(i))
		}
		r.expectReceipt("bye")
		if code := r.closeStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close code %d, want 1000", code)
		}
		for i := range 5 {
			if got := nextChat(t, wsub).Message; got != "m"+strconv.Itoa(i) {
				t.Fatalf("got %q, want m%d", got, i)
			}
		}
	})
}

// TestProtocolNothingAfterAFailedFrameTakesEffect pipelines a good SEND, a
// bad one and another good one: the bad one's ERROR waits for the first's
// RECEIPT, and the third is never stored.
func TestProtocolNothingAfterAFailedFrameTakesEffect(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	for i := range 5 {
		r := dialRaw(t, n)
		r.connect("alice")
		r.send(stompFrame("SEND", msgBody("kept"), "destination:/app/chat.halt", "receipt:r1") +
			stompFrame("SEND", "not json", "destination:/app/chat.halt", "receipt:r2") +
			stompFrame("SEND", msgBody("must not be stored"), "destination:/app/chat.halt", "receipt:r3"))
		r.expectReceipt("r1")
		if f := r.expectError("invalid message body"); f.Header.Get("receipt-id") != "r2" {
			t.Fatalf("round %d: ERROR receipt-id %q", i, f.Header.Get("receipt-id"))
		}
	}
	bob := dial(t, n, "bob")
	h := history(t, bob, bob.subscribe("/user/queue/chat.log"), "halt", `{"limit":100}`)
	if len(h) != 5 {
		t.Fatalf("stored %v, want 5 x kept", texts(h))
	}
	for _, m := range h {
		if m.Message != "kept" {
			t.Fatalf("a frame after the failed one was stored: %v", texts(h))
		}
	}
}

// TestProtocolHeartBeatOff: with --heartbeat 0 the server neither sends nor
// asks for heart-beats, whatever the client offers.
func TestProtocolHeartBeatOff(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *config.Config) { c.HeartBeat = 0 })
	r := dialRaw(t, n)
	r.send("CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\nheart-beat:100,100\n\n\x00")
	f := r.frame()
	if f.Command != "CONNECTED" || f.Header.Get("heart-beat") != "0,0" {
		t.Fatalf("got %s heart-beat %q, want CONNECTED 0,0", f.Command, f.Header.Get("heart-beat"))
	}
}

// TestProtocolTooManyUnacked: a client-ack subscriber that reads but never
// ACKs is cut off with an ERROR once MaxUnacked (1,024) messages wait,
// while its queue is empty; the sender is unaffected.
func TestProtocolTooManyUnacked(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	const room, total = "unacked", 1100
	lazy, _ := dialMsg(t, n)
	lazy.connectAs("lazy", "1.2")
	lazy.subscribe("s", "/topic/chat."+room, "ack:client-individual")

	pub, _ := dialMsg(t, n)
	pub.connectAs("pub", "1.2")
	var b strings.Builder
	for k := range total {
		b.WriteString(stompFrame("SEND", msgBody("m"+strconv.Itoa(k)), "destination:/app/chat."+room, fmt.Sprintf("receipt:%d", k)))
	}
	pub.send(b.String())
	for k := range total {
		if f := pub.expect("RECEIPT"); f.Header.Get("receipt-id") != strconv.Itoa(k) {
			t.Fatalf("receipt %d: %v", k, f.Header)
		}
	}
	got := 0
	for {
		f, err := lazy.read(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d messages: %v, want an ERROR", got, err)
		}
		if f.Command == "ERROR" {
			// Messages queued but not yet written when the limit trips are
			// dropped with the session, so fewer than 1,024 may arrive.
			if msg := f.Header.Get("message"); msg != "slow consumer: too many unacknowledged messages" || got > 1024 {
				t.Fatalf("ERROR %q after %d messages, want the unacked limit, after at most 1024", msg, got)
			}
			return
		}
		if f.Command != "MESSAGE" {
			t.Fatalf("got %s", f.Command)
		}
		got++
	}
}
