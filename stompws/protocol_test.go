package stompws_test

// Protocol tests of the STOMP layer against the fake handler (harness_test.go):
// version negotiation, CONNECT errors, receipts, header escaping and
// content-length. Positive checks wait for an event with a timeout;
// ordering is proved with receipts and message order, never with sleeps.

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/coder/websocket"
	gsframe "github.com/go-stomp/stomp/v3/frame"
)

// 1. Version negotiation, the STOMP command and WebSocket subprotocols.
func TestProtocolVersionNegotiation(t *testing.T) {
	t.Parallel()
	ts := startServer(t)

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
			r := dialRaw(t, ts)
			user := "ver" + strconv.Itoa(i)
			h := []string{"host:/", "login:" + user}
			if tc.accept != "" {
				h = append(h, "accept-version:"+tc.accept)
			}
			r.Send(stomptest.Render(tc.command, "", h...))
			f := r.Expect("CONNECTED")
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
			// The session works at that version: a round trip through a destination.
			dest := "/topic/ver" + strconv.Itoa(i)
			r.Subscribe("s1", dest)
			text := "hello at " + tc.want
			r.Send(stomptest.Render("SEND", text, "destination:"+dest, "content-type:text/plain", "receipt:post"))
			var msg *gsframe.Frame
			receipted := false
			for msg == nil || !receipted {
				g := r.Frame()
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
			if got := msg.Header.Get("destination"); got != dest {
				t.Errorf("MESSAGE destination %q", got)
			}
			if msg.Header.Get("message-id") == "" {
				t.Errorf("MESSAGE without message-id: %v", msg.Header)
			}
			if _, ok := msg.Header.Contains("ack"); ok {
				t.Errorf("auto-ack MESSAGE has an ack header: %v", msg.Header)
			}
			if string(msg.Body) != text || msg.Header.Get("sender") != user {
				t.Errorf("MESSAGE body %q from %q, want %q from %q", msg.Body, msg.Header.Get("sender"), text, user)
			}
		})
	}

	for _, accept := range []string{"2.0", "1.3,2.0", "1.x"} {
		t.Run("unsupported-"+accept, func(t *testing.T) {
			t.Parallel()
			r := dialRaw(t, ts)
			r.Send(stomptest.Render("CONNECT", "", "accept-version:"+accept, "host:/", "login:u"))
			f := r.ExpectError("unsupported")
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
			r := dialRaw(t, ts, offer...)
			want := ""
			if len(offer) > 0 {
				want = offer[0]
			}
			if got := r.WS.Subprotocol(); got != want {
				t.Fatalf("negotiated subprotocol %q, want %q", got, want)
			}
			f := r.ConnectAs("sp-"+name, "1.0,1.1,1.2")
			if got := f.Header.Get("version"); got != "1.2" {
				t.Errorf("CONNECTED version %q, want 1.2", got)
			}
			r.Subscribe("s1", "/queue/x")
		})
	}
}

// 2. CONNECT refused, frames before CONNECT, a second CONNECT.
func TestProtocolConnectErrors(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	cases := []struct {
		name   string
		frames []string // sent after an optional valid CONNECT
		conn   bool     // connect first
		want   string
	}{
		// The handler's refusals reach the client as they are.
		{"no login", []string{stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/")}, false, "login header required"},
		{"empty login", []string{stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", "login:")}, false, "login header required"},
		{"login with space", []string{stomptest.Render("CONNECT", "", "accept-version:1.2", "login:a b")}, false, "invalid login"},
		{"bad heart-beat", []string{stomptest.Render("CONNECT", "", "accept-version:1.2", "login:u", "heart-beat:x,1")}, false, "heart-beat"},
		{"SEND first", []string{stomptest.Render("SEND", "x", "destination:/queue/r")}, false, "expected CONNECT frame, got SEND"},
		{"SUBSCRIBE first", []string{stomptest.Render("SUBSCRIBE", "", "id:1", "destination:/topic/r")}, false, "expected CONNECT frame, got SUBSCRIBE"},
		{"DISCONNECT first", []string{stomptest.Render("DISCONNECT", "", "receipt:x")}, false, "expected CONNECT frame"},
		{"second CONNECT", []string{stomptest.Render("CONNECT", "", "accept-version:1.2", "login:u")}, true, "already connected"},
		{"second STOMP", []string{stomptest.Render("STOMP", "", "accept-version:1.2", "login:u")}, true, "already connected"},
		{"unknown command", []string{stomptest.Render("FROB", "")}, true, "unknown command FROB"},
		{"lower-case command", []string{"send\ndestination:/queue/r\n\n{}\x00"}, true, "invalid command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := dialRaw(t, ts)
			if tc.conn {
				r.ConnectAs("u", "1.2")
			}
			for _, f := range tc.frames {
				r.Send(f)
			}
			r.ExpectError(tc.want)
		})
	}
}

// 3. Receipts, in frame order, and receipt-id on ERROR.
func TestProtocolReceipts(t *testing.T) {
	t.Parallel()
	ts := startServer(t)

	t.Run("every command", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("rc", "1.2")
		// One WebSocket message, synchronous and asynchronous (SEND) frames
		// mixed: receipts come back one each, in frame order.
		r.Send(stomptest.Render("SUBSCRIBE", "", "id:s1", "destination:/topic/rcpt", "receipt:sub-1") +
			stomptest.Render("SEND", "one", "destination:/queue/rcpt-other", "receipt:send-1") +
			stomptest.Render("UNSUBSCRIBE", "", "id:s1", "receipt:unsub-1") +
			stomptest.Render("BEGIN", "", "transaction:t1", "receipt:begin-1") +
			stomptest.Render("SEND", "two", "destination:/queue/rcpt-other", "transaction:t1", "receipt:send-2") +
			stomptest.Render("COMMIT", "", "transaction:t1", "receipt:commit-1") +
			stomptest.Render("BEGIN", "", "transaction:t2", "receipt:begin-2") +
			stomptest.Render("ABORT", "", "transaction:t2", "receipt:abort-1") +
			stomptest.Render("SEND", "three", "destination:/queue/rcpt-other", "receipt:send-3") +
			stomptest.Render("DISCONNECT", "", "receipt:disconnect-1"))
		for _, id := range []string{"sub-1", "send-1", "unsub-1", "begin-1", "send-2", "commit-1",
			"begin-2", "abort-1", "send-3", "disconnect-1"} {
			r.ExpectReceipt(id)
		}
		if code := r.CloseStatus(); code != websocket.StatusNormalClosure {
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
		{"UNSUBSCRIBE unknown", stomptest.Render("UNSUBSCRIBE", "", "id:nope", "receipt:bad-1"), nil, "no subscription", "bad-1"},
		{"COMMIT unknown", stomptest.Render("COMMIT", "", "transaction:nope", "receipt:bad-2"), nil, "unknown transaction", "bad-2"},
		{"SUBSCRIBE refused", stomptest.Render("SUBSCRIBE", "", "id:1", "destination:/refuse/x", "receipt:bad-3"), nil, "cannot SUBSCRIBE", "bad-3"},
		{"SEND refused", stomptest.Render("SEND", "nope", "destination:/queue/r", "receipt:bad-4"), nil, "invalid message body", "bad-4"},
		{"after good frames",
			stomptest.Render("SUBSCRIBE", "", "id:1", "destination:/topic/r", "receipt:ok-1") +
				stomptest.Render("SEND", "fine", "destination:/queue/r2", "receipt:ok-2") +
				stomptest.Render("SEND", "nope", "destination:/queue/r2", "receipt:bad-5") +
				stomptest.Render("SEND", "never", "destination:/queue/r2", "receipt:never"),
			[]string{"ok-1", "ok-2"}, "invalid message body", "bad-5"},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := dialRaw(t, ts)
			r.ConnectAs("rc", "1.2")
			r.Send(tc.frames)
			for _, id := range tc.ok {
				r.ExpectReceipt(id)
			}
			f := r.Expect("ERROR")
			if msg := f.Header.Get("message"); !strings.Contains(msg, tc.want) {
				t.Errorf("ERROR message %q, want %q", msg, tc.want)
			}
			if got := f.Header.Get("receipt-id"); got != tc.rid {
				t.Errorf("ERROR receipt-id %q, want %q", got, tc.rid)
			}
			r.ExpectClosed()
		})
	}
}

// 4. Header escaping.
func TestProtocolHeaderEscaping(t *testing.T) {
	t.Parallel()
	ts := startServer(t)

	t.Run("pass-through", func(t *testing.T) {
		const dest = "/topic/esc"
		gs := dialStomp(t, ts, "gs").subscribe(dest)
		raw12, tee12 := dialRaw(t, ts), &bytes.Buffer{}
		raw12.ConnectAs("r12", "1.2")
		raw12.Tee(tee12)
		raw12.Subscribe("s12", dest)
		raw11, tee11 := dialRaw(t, ts), &bytes.Buffer{}
		raw11.ConnectAs("r11", "1.1")
		raw11.Tee(tee11)
		raw11.Subscribe("s11", dest)
		raw10, tee10 := dialRaw(t, ts), &bytes.Buffer{}
		raw10.ConnectAs("r10", "")
		raw10.Tee(tee10)
		raw10.Subscribe("s10", dest)

		sender := dialRaw(t, ts)
		sender.ConnectAs("sender", "1.2")
		sender.Send(stomptest.Render("SEND", "escaped", "destination:"+dest,
			`x-trace:a\cb`, `x-lines:one\ntwo`, `x-slash:back\\slash`, `x-cr:a\rb`,
			`x-inject:v\ncontent-length:0`, `x\cname:v`, "receipt:s"))
		sender.ExpectReceipt("s")

		// go-stomp (1.2) decodes the re-escaped values.
		m := nextMessage(t, gs)
		want := map[string]string{
			"x-trace": "a:b", "x-lines": "one\ntwo", "x-slash": `back\slash`, "x-cr": "a\rb",
			"x-inject": "v\ncontent-length:0", "x:name": "v",
		}
		for k, v := range want {
			if got := m.Header.Get(k); got != v {
				t.Errorf("go-stomp MESSAGE header %q = %q, want %q", k, got, v)
			}
		}
		if string(m.Body) != "escaped" {
			t.Errorf("body %q", m.Body)
		}

		// 1.2 wire form: escaped again.
		f := raw12.Expect("MESSAGE")
		if string(f.Body) != "escaped" {
			t.Errorf("1.2 body %q", f.Body)
		}
		for _, line := range []string{`x-trace:a\cb` + "\n", `x-lines:one\ntwo` + "\n", `x-slash:back\\slash` + "\n",
			`x-cr:a\rb` + "\n", `x-inject:v\ncontent-length\c0` + "\n", `x\cname:v` + "\n"} {
			if !strings.Contains(tee12.String(), line) {
				t.Errorf("1.2 MESSAGE lacks %q:\n%q", line, tee12.String())
			}
		}

		// 1.1: escaped with 1.1's rules (no \r escape; a CR inside a value
		// is sent as is).
		f = raw11.Expect("MESSAGE")
		if string(f.Body) != "escaped" {
			t.Errorf("1.1 body %q", f.Body)
		}
		for _, line := range []string{`x-trace:a\cb` + "\n", `x-lines:one\ntwo` + "\n", `x-slash:back\\slash` + "\n",
			"x-cr:a\rb\n", `x-inject:v\ncontent-length\c0` + "\n", `x\cname:v` + "\n"} {
			if !strings.Contains(tee11.String(), line) {
				t.Errorf("1.1 MESSAGE lacks %q:\n%q", line, tee11.String())
			}
		}

		// 1.0 has no escaping: values that 1.0 cannot carry must not reach
		// the client at all, above all not as extra header lines.
		f = raw10.Expect("MESSAGE")
		if string(f.Body) != "escaped" {
			t.Errorf("1.0 body %q (headers %v)", f.Body, f.Header)
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
		if strings.Contains(tee10.String(), "\ntwo\n") || strings.Contains(tee10.String(), "x:name") {
			t.Errorf("1.0 MESSAGE has a raw header line from an escaped value:\n%q", tee10.String())
		}
	})

	t.Run("1.0 SEND is not unescaped", func(t *testing.T) {
		const dest = "/topic/esc10"
		gs := dialStomp(t, ts, "gs10").subscribe(dest)
		r := dialRaw(t, ts)
		r.ConnectAs("s10", "1.0")
		r.Send(stomptest.Render("SEND", "m", "destination:"+dest, `x-trace:a\tb\c`, "receipt:r"))
		r.ExpectReceipt("r")
		if got := nextMessage(t, gs).Header.Get("x-trace"); got != `a\tb\c` {
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
			r := dialRaw(t, ts)
			r.ConnectAs("u", tc.accept)
			r.Send(stomptest.Render("SEND", "x", "destination:/queue/r", tc.header))
			r.ExpectError("undefined escape sequence")
		})
	}

	t.Run("CONNECT not unescaped", func(t *testing.T) {
		t.Parallel()
		r, tee := dialRaw(t, ts), &bytes.Buffer{}
		r.Tee(tee)
		// \t would be an undefined escape in any other 1.2 frame.
		r.Send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", `login:u\tx`))
		r.Expect("CONNECTED")
		if !strings.Contains(tee.String(), "\nuser-name:u\\tx\n") {
			t.Errorf("CONNECTED does not carry the login as sent:\n%q", tee.String())
		}
		// The handler saw the login as sent: the session's user is it.
		r.Subscribe("s", "/topic/escc")
		r.Send(stomptest.Render("SEND", "hi", "destination:/topic/escc"))
		if got := r.Expect("MESSAGE").Header.Get("sender"); got != `u\tx` {
			t.Errorf("the session's user %q, want %q", got, `u\tx`)
		}
	})
}

// 5. content-length.
func TestProtocolContentLength(t *testing.T) {
	t.Parallel()
	ts := startServer(t)

	t.Run("NUL inside the body", func(t *testing.T) {
		t.Parallel()
		// Read up to the first NUL, the body would be a message and the
		// rest a garbage frame. Read by content-length it is one SEND,
		// whose body reaches the handler whole.
		const dest = "/topic/cl-nul"
		body := "first\x00second, after a NUL"
		r := dialRaw(t, ts)
		r.ConnectAs("cl", "1.2")
		r.Subscribe("s", dest)
		r.Send(stomptest.Render("SEND", body, "destination:"+dest, "content-length:"+strconv.Itoa(len(body)), "receipt:nul"))
		var msg *gsframe.Frame
		for receipted := false; msg == nil || !receipted; {
			f := r.Frame()
			switch {
			case f.Command == "MESSAGE" && msg == nil:
				msg = f
			case f.Command == "RECEIPT" && f.Header.Get("receipt-id") == "nul":
				receipted = true
			default:
				t.Fatalf("unexpected %s %v %q", f.Command, f.Header, f.Body)
			}
		}
		if string(msg.Body) != body {
			t.Errorf("MESSAGE body %q, want %q", msg.Body, body)
		}
		if got := msg.Header.Get("content-length"); got != strconv.Itoa(len(body)) {
			t.Errorf("MESSAGE content-length %q, want %d", got, len(body))
		}
	})

	t.Run("NUL right after the body", func(t *testing.T) {
		t.Parallel()
		const dest = "/topic/cl-ok"
		r := dialRaw(t, ts)
		r.ConnectAs("cl", "1.2")
		r.Subscribe("s", dest)
		// Exact content-length, EOLs after the NUL, and a second frame in
		// the same WebSocket message.
		b1, b2 := "first", "second"
		r.Send(stomptest.Render("SEND", b1, "destination:"+dest, "content-length:"+strconv.Itoa(len(b1)), "receipt:1") +
			"\n\r\n" + stomptest.Render("SEND", b2, "destination:"+dest, "content-length:"+strconv.Itoa(len(b2)), "receipt:2"))
		var got []string
		var receipts []string
		for len(got) < 2 || len(receipts) < 2 {
			f := r.Frame()
			switch f.Command {
			case "MESSAGE":
				got = append(got, string(f.Body))
			case "RECEIPT":
				receipts = append(receipts, f.Header.Get("receipt-id"))
			default:
				t.Fatalf("unexpected %s %v", f.Command, f.Header)
			}
		}
		if got[0] != b1 || got[1] != b2 {
			t.Errorf("messages %q", got)
		}
		if receipts[0] != "1" || receipts[1] != "2" {
			t.Errorf("receipts %q", receipts)
		}
	})

	t.Run("frame split across WebSocket messages", func(t *testing.T) {
		t.Parallel()
		const dest = "/topic/cl-split"
		r := dialRaw(t, ts)
		r.ConnectAs("cl", "1.2")
		r.Subscribe("s", dest)
		body := "split"
		whole := stomptest.Render("SEND", body, "destination:"+dest, "content-length:"+strconv.Itoa(len(body)), "receipt:split")
		cut1, cut2 := 9, len(whole)-5 // inside a header, inside the body
		r.Send(whole[:cut1])
		r.Send(whole[cut1:cut2])
		r.Send(whole[cut2:])
		for seen, receipted := false, false; !seen || !receipted; {
			f := r.Frame()
			switch {
			case f.Command == "MESSAGE":
				if string(f.Body) != body {
					t.Fatalf("message %q", f.Body)
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
		{"no NUL after the body", "SEND\ndestination:/queue/r\ncontent-length:3\n\n{}}}\x00", "missing NUL after body"},
		{"content-length not a number", "SEND\ndestination:/queue/r\ncontent-length:abc\n\n{}\x00", "invalid content-length"},
		{"negative content-length", "SEND\ndestination:/queue/r\ncontent-length:-1\n\n{}\x00", "invalid content-length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := dialRaw(t, ts)
			r.ConnectAs("cl", "1.2")
			r.Send(tc.frame)
			r.ExpectError(tc.want)
		})
	}
}
