package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
)

func TestSockJSURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8080/ws/000/abc/websocket"},
		{"ws://127.0.0.1:8080/ws/", "ws://127.0.0.1:8080/ws/000/abc/websocket"},
		{"ws://localhost/chat/stomp?x=1", "ws://localhost/chat/stomp/000/abc/websocket?x=1"},
		{"ws://127.0.0.1:1", "ws://127.0.0.1:1/000/abc/websocket"},
	} {
		got, err := sockjsURL(tc.in, "abc")
		if err != nil || got != tc.want {
			t.Errorf("sockjsURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "a.b", "a/b"} {
		if _, err := sockjsURL("ws://127.0.0.1/ws", bad); err == nil {
			t.Errorf("session %q accepted", bad)
		}
	}
	if s := newSockJSSession(); !regexp.MustCompile(`^[a-z2-7]{8}$`).MatchString(s) || s == newSockJSSession() {
		t.Errorf("session ids %q: want 8 random base32 characters", s)
	}
}

// TestAppendSockJSMessage: what the client sends is a JSON array of one
// string that encoding/json (chatd's decoder) reads back as
// the frame, byte for byte; invalid UTF-8 becomes U+FFFD, as it would
// there.
func TestAppendSockJSMessage(t *testing.T) {
	for _, tc := range []struct{ in, want, back string }{
		{in: "", want: `[""]`},
		{in: "\n", want: `["\n"]`},
		{in: "SEND\ndestination:/app/chat.x\n\n{\"message\":\"a\\b\"}\x00",
			want: `["SEND\ndestination:/app/chat.x\n\n{\"message\":\"a\\b\"}\u0000"]`},
		{in: "\r\t\x01\x1f\x7f/<&>", want: `["\r\t\u0001\u001f` + "\x7f" + `/<&>"]`},
		{in: "héllo 😀 \u2028 ✓", want: `["héllo 😀 \u2028 ✓"]`}, // escaped, as chatd escapes it
		{in: "a\xffb\xe2\x82", want: `["a\ufffdb\ufffd\ufffd"]`, back: "a\uFFFDb\uFFFD\uFFFD"},
	} {
		got := string(appendSockJSMessage([]byte("x"), []byte(tc.in)))
		if got != "x"+tc.want {
			t.Errorf("appendSockJSMessage(%q) = %s, want x%s", tc.in, got, tc.want)
		}
		if tc.back == "" {
			tc.back = tc.in
		}
		var back []string
		if err := json.Unmarshal([]byte(got[1:]), &back); err != nil || len(back) != 1 || back[0] != tc.back {
			t.Errorf("%s: encoding/json reads %q, %v; want [%q]", got, back, err, tc.back)
		}
	}
}

// TestUnwrapSockJS decodes the server's frames in place, and agrees with
// encoding/json on every array it accepts.
func TestUnwrapSockJS(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kind byte
		want string
	}{
		{in: "o", kind: 'o'},
		{in: "h", kind: 'h'},
		{in: "a[]", kind: 'a'},
		{in: `a[""]`, kind: 'a'},
		{in: `a["x"]`, kind: 'a', want: "x"},
		{in: `a["MESSAGE\nsubscription:0\n\nhi\u0000"]`, kind: 'a', want: "MESSAGE\nsubscription:0\n\nhi\x00"},
		// Several messages, several frames in one, a frame split across two.
		{in: `a["RECEIPT\nreceipt-id:1\n\n\u0000MESS","AGE\n\nb\u0000","\n"]`, kind: 'a',
			want: "RECEIPT\nreceipt-id:1\n\n\x00MESSAGE\n\nb\x00\n"},
		{in: `a["\"\\\/\b\f\n\r\t"]`, kind: 'a', want: "\"\\/\b\f\n\r\t"},
		{in: `a["\u0000\u001f\u0041\u00e9\u00E9\u20ac\uffff"]`, kind: 'a', want: "\x00\x1fAéé€\uffff"},
		{in: `a["héllo ✓ 😀"]`, kind: 'a', want: "héllo ✓ 😀"},
		{in: `a["\ud83d\ude00!"]`, kind: 'a', want: "😀!"},
		{in: `a["\ud83d!"]`, kind: 'a', want: "\uFFFD!"},           // a lone high half
		{in: `a["\ude00\ud83d"]`, kind: 'a', want: "\uFFFD\uFFFD"}, // halves the wrong way round
		{in: `a["\ud83d\u0041"]`, kind: 'a', want: "\uFFFDA"},
		{in: `a["\u003c\u0026\u003e\u2028"]`, kind: 'a', want: "<&>\u2028"}, // as json.Marshal escapes
		{in: "a[ \"x\" ,\n\"y\" ]\n", kind: 'a', want: "xy"},
	} {
		b := []byte(tc.in)
		n, kind, err := unwrapSockJS(b)
		if err != nil || kind != tc.kind || string(b[:n]) != tc.want {
			t.Errorf("unwrapSockJS(%s) = %q %q %v, want %q %q", tc.in, b[:n], kind, err, tc.want, tc.kind)
		}
		if tc.kind != 'a' {
			continue
		}
		var msgs []string
		if err := json.Unmarshal([]byte(tc.in[1:]), &msgs); err != nil || strings.Join(msgs, "") != tc.want {
			t.Errorf("encoding/json reads %s as %q, %v", tc.in, strings.Join(msgs, ""), err)
		}
	}
}

func TestUnwrapSockJSErrors(t *testing.T) {
	for _, in := range []string{
		"", "x", "oo", "h\n", "m\"x\"", "a", "a[", "a{}", `a["x`, `a["x"`, `a["x",]`, `a[,"x"]`, `a["x""y"]`,
		`a[1]`, `a["x"]y`, `a["x"]]`, `a["\q"]`, `a["\u12"]`, `a["\u12g4"]`, `a["\`, `a["\"]`,
		"a[\"a\nb\"]", "a[\"\x00\"]", "c", "c[]", "c[1]", `c["a","b"]`, `c[1,2]`, `c[1,"a",3]`,
	} {
		b := []byte(in)
		if n, kind, err := unwrapSockJS(b); !errors.Is(err, errSockJS) {
			t.Errorf("unwrapSockJS(%q) = %d %q %v, want a malformed frame", in, n, kind, err)
		}
	}
}

func TestUnwrapSockJSClose(t *testing.T) {
	for _, tc := range []struct {
		in     string
		code   int
		reason string
	}{
		{`c[3000,"Go away!"]`, 3000, "Go away!"},
		{`c[1012,""]`, 1012, ""},
		{`c[ 2010 , "Another connection still open\u0021" ]`, 2010, "Another connection still open!"},
	} {
		_, kind, err := unwrapSockJS([]byte(tc.in))
		var ce *sockjsClose
		if kind != 'c' || !errors.As(err, &ce) || ce.code != tc.code || ce.reason != tc.reason {
			t.Errorf("unwrapSockJS(%s) = %q %v, want close %d %q", tc.in, kind, err, tc.code, tc.reason)
		}
	}
}

// fakeSockJS is a SockJS websocket transport that checks what the client
// sends and plays a script to it; the messages it sends are encoded with
// encoding/json, as sockjs-go encodes them.
type fakeSockJS struct {
	t      *testing.T
	path   atomic.Value // the request's path
	proto  atomic.Value // the subprotocols the client asked for
	got    chan string  // the client's messages, decoded
	script func(send func(string))
}

func (f *fakeSockJS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.path.Store(r.URL.Path)
	f.proto.Store(r.Header.Get("Sec-WebSocket-Protocol"))
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		f.t.Errorf("accept: %v", err)
		return
	}
	defer func() { _ = ws.CloseNow() }()
	ctx := context.Background()
	go func() {
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				close(f.got)
				return
			}
			var msgs []string
			if err := json.Unmarshal(b, &msgs); err != nil {
				f.t.Errorf("client sent %q: %v", b, err)
			}
			for _, m := range msgs {
				f.got <- m
			}
		}
	}()
	f.script(func(m string) {
		if err := ws.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			f.t.Errorf("write %q: %v", m, err)
		}
	})
}

// sockjsArray is a["..."] as sockjs-go writes it (json.Marshal of each).
func sockjsArray(msgs ...string) string {
	b, _ := json.Marshal(msgs)
	return "a" + string(b)
}

// TestSockJSConn runs the client over a real WebSocket against a fake
// server: the handshake, frames split across SockJS messages at every
// character and several in one, "h" frames, writes, and the close frame.
func TestSockJSConn(t *testing.T) {
	stream := "MESSAGE\nsubscription:0\ncontent-length:13\n\n{\"m\":\"é\\u0\"}\x00\n" +
		"RECEIPT\nreceipt-id:1\n\n\x00" + "MESSAGE\nsubscription:0\n\nnul\\u0000 \"😀\"\x00"
	want := []string{"MESSAGE:{\"m\":\"é\\u0\"}", "RECEIPT:", "MESSAGE:nul\\u0000 \"😀\""}
	var splits []int
	for i := range len(stream) + 1 {
		if i == len(stream) || utf8.RuneStart(stream[i]) {
			splits = append(splits, i)
		}
	}
	f := &fakeSockJS{t: t, got: make(chan string, 16)}
	f.script = func(send func(string)) {
		send("o")
		connect := <-f.got
		if !strings.HasPrefix(connect, "CONNECT\naccept-version:1.2\nhost:chat\nlogin:u1\n") || !strings.HasSuffix(connect, "\n\n\x00") {
			t.Errorf("CONNECT: %q", connect)
		}
		send(sockjsArray("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00"))
		send("h")
		for _, i := range splits {
			// Two messages, split at i; then one array of both.
			send(sockjsArray(stream[:i]))
			send("h")
			send(sockjsArray(stream[i:]))
			send(sockjsArray(stream[:i], stream[i:]))
		}
		if m := <-f.got; m != "SEND\ndestination:/app/x\n\n\"é\"\x00" {
			t.Errorf("SEND: %q", m)
		}
		send(`c[3000,"Go away!"]`)
	}
	srv := httptest.NewServer(f)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dialSTOMP(ctx, newDialer(net.IPv4(127, 0, 0, 1)), connectOptions{
		url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", sockjs: true, login: "u1", host: "chat", readBuffer: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if p := f.path.Load().(string); !regexp.MustCompile(`^/ws/000/[a-z2-7]{8}/websocket$`).MatchString(p) {
		t.Errorf("path %q", p)
	}
	if p := f.proto.Load().(string); p != "" {
		t.Errorf("asked for subprotocol %q", p)
	}
	var got []string
	err = c.serve(func(fr *frame.View, _ int64) int {
		got = append(got, string(fr.Command())+":"+string(fr.Body()))
		if len(got) == 2*len(want)*len(splits) {
			if err := c.write([]byte("SEND\ndestination:/app/x\n\n\"é\"\x00")); err != nil {
				t.Errorf("write: %v", err)
			}
		}
		return 1
	}, nil)
	var ce *sockjsClose
	if !errors.As(err, &ce) || ce.code != 3000 || ce.reason != "Go away!" {
		t.Errorf("serve ended with %v, want the close frame", err)
	}
	if len(got) != 2*len(want)*len(splits) {
		t.Fatalf("%d frames, want %d", len(got), 2*len(want)*len(splits))
	}
	for i, g := range got {
		if w := want[i%len(want)]; g != w {
			t.Fatalf("frame %d (split %d) = %q, want %q", i, splits[i/len(want)/2], g, w)
		}
	}
}

// TestSockJSConnProtocol: a frame before "o", a second "o" or a malformed
// frame ends the connection as a malformed frame.
func TestSockJSConnProtocol(t *testing.T) {
	for _, script := range [][]string{
		{sockjsArray("CONNECTED\n\n\x00")},
		{"h"},
		{"o", "o"},
		{"o", `a["CONNECTED\n\n\u0000"`},
		{"o", `m"x"`},
	} {
		f := &fakeSockJS{t: t, got: make(chan string, 16)}
		f.script = func(send func(string)) {
			for _, m := range script {
				send(m)
			}
			time.Sleep(100 * time.Millisecond)
		}
		srv := httptest.NewServer(f)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := dialSTOMP(ctx, newDialer(net.IPv4(127, 0, 0, 1)), connectOptions{
			url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", sockjs: true, login: "u", host: "chat",
		})
		cancel()
		srv.Close()
		if !errors.Is(err, errSockJS) {
			t.Errorf("%q: dial error %v, want a malformed SockJS frame", script, err)
		}
	}
}
