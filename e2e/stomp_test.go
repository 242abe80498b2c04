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
// MESSAGE (their escaping per STOMP version is stompws's, tested there),
// STOMP's and chatd's control headers never do, and the CONNECT login is
// the user id as sent.
func TestHeadersPassThrough(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	const room = "esc"
	gs := dial(t, n, "gs").subscribe("/topic/chat." + room)
	sender := dialRaw(t, n)
	sender.ConnectAs("sender", "1.2")
	sender.Send(stomptest.Render("SEND", msgBody("escaped"), "destination:/app/chat."+room,
		`x-trace:a\cb`, `x-lines:one\ntwo`, "message-id:forged", "subscription:forged", "history:gap",
		"client-msg-id:c1", "receipt:s"))
	sender.ExpectReceipt("s")
	m := next(t, gs)
	if got := m.Header.Get("x-trace"); got != "a:b" {
		t.Errorf("x-trace %q, want a:b", got)
	}
	if got := m.Header.Get("x-lines"); got != "one\ntwo" {
		t.Errorf("x-lines %q", got)
	}
	for _, h := range []string{"message-id", "subscription"} {
		if got := m.Header.Get(h); got == "forged" {
			t.Errorf("the client's %s reached the MESSAGE", h)
		}
	}
	for _, h := range []string{"history", "client-msg-id", "receipt"} {
		if v, ok := m.Header.Contains(h); ok {
			t.Errorf("the client's %s=%q reached the MESSAGE", h, v)
		}
	}
	if cm := decodeChat(t, m.Body); cm.Message != "escaped" || cm.UserID != "sender" {
		t.Errorf("body %+v", cm)
	}

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
}
