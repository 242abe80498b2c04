package e2e_test

// Chat over STOMP, end to end: what the chat adapter makes of
// destinations, bodies and headers. The STOMP layer's own behaviour is
// tested in stompws against a fake handler.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/testkit/stomptest"
)

func decodeChat(t testing.TB, body []byte) chat.Message {
	t.Helper()
	var m chat.Message
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return m
}

// TestChatDestinationsAndBodies: every destination, since-id and body the
// chat adapter refuses gets an ERROR and a close, and the room goes on for
// everyone else.
// 7. Bad destinations and requests end the offending session only.
func TestChatDestinationsAndBodies(t *testing.T) {
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
		{"subscribe wildcard *", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat.*"), "invalid destination"},
		{"subscribe wildcard >", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat.>"), "invalid destination"},
		{"subscribe extra token", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat.a.b"), "invalid destination"},
		{"subscribe empty room", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat."), "invalid destination"},
		{"subscribe trailing dot", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat.r."), "invalid destination"},
		{"subscribe space", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat.a b"), "invalid destination"},
		{"subscribe queue", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/queue/x"), "invalid destination"},
		{"subscribe user queue wildcard", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/user/queue/*"), "invalid destination"},
		{"subscribe user queue empty token", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/user/queue/a..b"), "invalid destination"},
		{"subscribe long room", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat."+long), "invalid destination"},
		{"subscribe app", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/app/chat.r"), "cannot SUBSCRIBE"},
		{"subscribe bad since-id", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/topic/chat.r", "since-id:abc"), "invalid since-id"},
		{"subscribe without destination", stomptest.Render("SUBSCRIBE", "", "id:x"), "without destination"},
		{"subscribe without id", stomptest.Render("SUBSCRIBE", "", "destination:/topic/chat.r"), "without id"},
		{"subscribe duplicate id", stomptest.Render("SUBSCRIBE", "", "id:mine", "destination:/topic/chat.r2"), "already in use"},
		{"send extra tokens", stomptest.Render("SEND", msgBody("x"), "destination:/app/chat.a.b.c"), "invalid destination"},
		{"send long room", stomptest.Render("SEND", msgBody("x"), "destination:/app/chat."+long), "invalid destination"},
		{"send wildcard", stomptest.Render("SEND", msgBody("x"), "destination:/app/chat.*"), "invalid destination"},
		{"send to topic", stomptest.Render("SEND", msgBody("x"), "destination:/topic/chat.r"), "cannot SEND"},
		{"send to user queue", stomptest.Render("SEND", msgBody("x"), "destination:/user/queue/x"), "cannot SEND"},
		{"send without destination", stomptest.Render("SEND", msgBody("x")), "without destination"},
		{"send invalid JSON", stomptest.Render("SEND", "{not json", "destination:/app/chat.r"), "invalid message body"},
		{"send empty message", stomptest.Render("SEND", `{"message":""}`, "destination:/app/chat.r"), "invalid message body"},
		{"send no message", stomptest.Render("SEND", `{"text":"x"}`, "destination:/app/chat.r"), "invalid message body"},
		{"send empty body", stomptest.Render("SEND", "", "destination:/app/chat.r"), "invalid message body"},
		{"bad read receipt", stomptest.Render("SEND", `{"lastReadId":"x"}`, "destination:/app/chat.r.read"), "invalid read receipt"},
		{"bad log request", stomptest.Render("SEND", `{"limit":-1}`, "destination:/app/chat.r.log"), "invalid log request"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { // one after another: they share the room
			// The offender is subscribed to the same room when it misbehaves.
			r := dialRaw(t, n)
			r.ConnectAs(fmt.Sprintf("bad%d", i), "1.2")
			r.Subscribe("mine", "/topic/chat."+room)
			r.Send(tc.frame)
			r.ExpectError(tc.want)
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

// TestHeadersPassThrough: a SEND's own headers reach every subscriber's
// MESSAGE, escaped for each one's STOMP version, and the CONNECT login is
// the user id as sent.
func TestHeadersPassThrough(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	t.Run("pass-through", func(t *testing.T) {
		const room = "esc"
		gs := dial(t, n, "gs").subscribe("/topic/chat." + room)
		raw12, tee12 := dialRaw(t, n), &bytes.Buffer{}
		raw12.ConnectAs("r12", "1.2")
		raw12.Tee(tee12)
		raw12.Subscribe("s12", "/topic/chat."+room)
		raw11, tee11 := dialRaw(t, n), &bytes.Buffer{}
		raw11.ConnectAs("r11", "1.1")
		raw11.Tee(tee11)
		raw11.Subscribe("s11", "/topic/chat."+room)
		raw10, tee10 := dialRaw(t, n), &bytes.Buffer{}
		raw10.ConnectAs("r10", "")
		raw10.Tee(tee10)
		raw10.Subscribe("s10", "/topic/chat."+room)

		sender := dialRaw(t, n)
		sender.ConnectAs("sender", "1.2")
		sender.Send(stomptest.Render("SEND", msgBody("escaped"), "destination:/app/chat."+room,
			`x-trace:a\cb`, `x-lines:one\ntwo`, `x-slash:back\\slash`, `x-cr:a\rb`,
			`x-inject:v\ncontent-length:0`, `x\cname:v`, "receipt:s"))
		sender.ExpectReceipt("s")

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
		f := raw12.Expect("MESSAGE")
		if cm := decodeChat(t, f.Body); cm.Message != "escaped" {
			t.Errorf("1.2 body %+v", cm)
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
		if cm := decodeChat(t, f.Body); cm.Message != "escaped" {
			t.Errorf("1.1 body %+v", cm)
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
		if strings.Contains(tee10.String(), "\ntwo\n") || strings.Contains(tee10.String(), "x:name") {
			t.Errorf("1.0 MESSAGE has a raw header line from an escaped value:\n%q", tee10.String())
		}
	})

	t.Run("CONNECT not unescaped", func(t *testing.T) {
		t.Parallel()
		r, tee := dialRaw(t, n), &bytes.Buffer{}
		r.Tee(tee)
		// \t would be an undefined escape in any other 1.2 frame.
		r.Send(stomptest.Render("CONNECT", "", "accept-version:1.2", "host:/", `login:u\tx`))
		r.Expect("CONNECTED")
		if !strings.Contains(tee.String(), "\nuser-name:u\\tx\n") {
			t.Errorf("CONNECTED does not carry the login as sent:\n%q", tee.String())
		}
		r.Subscribe("s", "/topic/chat.escc")
		r.Send(stomptest.Render("SEND", msgBody("hi"), "destination:/app/chat.escc"))
		if m := decodeChat(t, r.Expect("MESSAGE").Body); m.UserID != `u\tx` {
			t.Errorf("userId %q, want %q", m.UserID, `u\tx`)
		}
	})
}
