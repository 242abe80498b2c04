package frame

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// framesEqual treats a nil and an empty Headers/Body as equal.
func framesEqual(a, b *Frame) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Command != b.Command || !bytes.Equal(a.Body, b.Body) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i] != b.Headers[i] {
			return false
		}
	}
	return true
}

func errMsg(err error) string {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Msg
	}
	if err != nil {
		return "non-*Error: " + err.Error()
	}
	return ""
}

func hdrs(kv ...string) []Header {
	var hs []Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, Header{kv[i], kv[i+1]})
	}
	return hs
}

// decodeCase is one input of the decoding table, which Decode and Scan
// both answer.
type decodeCase struct {
	name string
	ver  Version
	lim  Limits
	in   string
	want *Frame // nil: no frame expected
	n    int    // expected consumed bytes when want == nil
	rest int    // expected unconsumed bytes when want != nil
	err  string // expected Error.Msg
}

func decodeCases() []decodeCase {
	frame := func(cmd string, body string, kv ...string) *Frame {
		f := &Frame{Command: cmd, Headers: hdrs(kv...)}
		if body != "" {
			f.Body = []byte(body)
		}
		return f
	}
	send := "SEND\ndestination:/q\nreceipt:7\n\nhello\x00"
	return []decodeCase{
		// Basic shapes.
		{name: "send", ver: V12, in: send, want: frame("SEND", "hello", "destination", "/q", "receipt", "7")},
		{name: "no headers no body", ver: V12, in: "DISCONNECT\n\n\x00", want: frame("DISCONNECT", "")},
		{name: "body no headers", ver: V12, in: "SEND\n\nxyz\x00", want: frame("SEND", "xyz")},
		{name: "empty value", ver: V12, in: "SEND\na:\n\n\x00", want: frame("SEND", "", "a", "")},
		{name: "raw colon in value", ver: V10, in: "SEND\na:b:c\n\n\x00", want: frame("SEND", "", "a", "b:c")},
		{name: "raw colon in value v12", ver: V12, in: "SEND\na:b:c\n\n\x00", want: frame("SEND", "", "a", "b:c")},
		{name: "repeated headers kept in order", ver: V12, in: "MESSAGE\nfoo:1\nfoo:2\n\n\x00", want: frame("MESSAGE", "", "foo", "1", "foo", "2")},
		{name: "second frame not consumed", ver: V12, in: "A\n\n\x00B\n\n\x00", want: frame("A", ""), rest: 4},

		// EOLs: heart-beats before, padding after.
		{name: "heartbeat LF", ver: V12, in: "\n", n: 1},
		{name: "heartbeat CRLF", ver: V12, in: "\r\n", n: 2},
		{name: "heartbeats mixed before frame", ver: V12, in: "\n\r\n\nSEND\n\n\x00", n: 4},
		{name: "lone CR waits", ver: V12, in: "\r", n: 0},
		{name: "CR then junk", ver: V12, in: "\rX", err: "invalid command"},
		{name: "EOLs after NUL consumed", ver: V12, in: "A\n\n\x00\n\r\n\n", want: frame("A", "")},
		{name: "EOLs after NUL then frame", ver: V12, in: "A\n\n\x00\n\nB\n\n\x00", want: frame("A", ""), rest: 4},
		{name: "lone CR after NUL not consumed", ver: V12, in: "A\n\n\x00\n\r", want: frame("A", ""), rest: 1},
		{name: "CRLF lines", ver: V12, in: "SEND\r\ndestination:/q\r\n\r\nhi\x00\r\n", want: frame("SEND", "hi", "destination", "/q")},
		{name: "CRLF lines v10", ver: V10, in: "SEND\r\na:b\r\n\r\n\x00", want: frame("SEND", "", "a", "b")},
		{name: "only one CR stripped", ver: V12, in: "SEND\na:b\r\r\n\n\x00", want: frame("SEND", "", "a", "b\r")},

		// Escapes.
		{name: "v12 escapes", ver: V12, in: "SEND\nk\\ce\\\\y:v\\na\\rl\\c\n\n\x00", want: frame("SEND", "", "k:e\\y", "v\na\rl:")},
		{name: "v11 escapes", ver: V11, in: "SEND\nk\\ce\\\\y:v\\na\\c\n\n\x00", want: frame("SEND", "", "k:e\\y", "v\na:")},
		{name: "v11 rejects \\r", ver: V11, in: "SEND\na:b\\r\n\n\x00", err: "undefined escape sequence"},
		{name: "v12 rejects \\t", ver: V12, in: "SEND\na:b\\t\n\n\x00", err: "undefined escape sequence"},
		{name: "v11 rejects \\t", ver: V11, in: "SEND\na:b\\t\n\n\x00", err: "undefined escape sequence"},
		{name: "trailing backslash in value", ver: V12, in: "SEND\na:b\\\n\n\x00", err: "undefined escape sequence"},
		{name: "trailing backslash in name", ver: V12, in: "SEND\na\\:b\n\n\x00", err: "undefined escape sequence"},
		{name: "bad escape in name", ver: V11, in: "SEND\na\\x:b\n\n\x00", err: "undefined escape sequence"},
		{name: "v10 no unescaping", ver: V10, in: "SEND\na:b\\c\\t\\\n\n\x00", want: frame("SEND", "", "a", "b\\c\\t\\")},
		{name: "version 0 no unescaping", ver: 0, in: "SEND\na:b\\c\\t\n\n\x00", want: frame("SEND", "", "a", "b\\c\\t")},
		{name: "CONNECT not unescaped", ver: V12, in: "CONNECT\nlogin:a\\tb\\c\n\n\x00", want: frame("CONNECT", "", "login", "a\\tb\\c")},
		{name: "STOMP not unescaped", ver: V11, in: "STOMP\npasscode:p\\w\n\n\x00", want: frame("STOMP", "", "passcode", "p\\w")},
		{name: "CONNECTED not unescaped", ver: V12, in: "CONNECTED\nserver:x\\y\n\n\x00", want: frame("CONNECTED", "", "server", "x\\y")},

		// Bodies and content-length.
		{name: "content-length with NULs", ver: V12, in: "SEND\ncontent-length:5\n\na\x00b\x00c\x00", want: frame("SEND", "a\x00b\x00c", "content-length", "5")},
		{name: "content-length zero", ver: V12, in: "SEND\ncontent-length:0\n\n\x00\n", want: frame("SEND", "", "content-length", "0")},
		{name: "content-length leading zeros", ver: V12, in: "SEND\ncontent-length:002\n\nab\x00", want: frame("SEND", "ab", "content-length", "002")},
		{name: "first content-length wins", ver: V12, in: "SEND\ncontent-length:2\ncontent-length:x\n\na\x00\x00", want: frame("SEND", "a\x00", "content-length", "2", "content-length", "x")},
		{name: "content-length partial body", ver: V12, in: "SEND\ncontent-length:5\n\nab", n: 0},
		{name: "content-length body without NUL yet", ver: V12, in: "SEND\ncontent-length:2\n\nab", n: 0},
		{name: "missing NUL after body", ver: V12, in: "SEND\ncontent-length:2\n\nabc\x00", err: "missing NUL after body"},
		{name: "content-length empty", ver: V12, in: "SEND\ncontent-length:\n\n\x00", err: "invalid content-length"},
		{name: "content-length negative", ver: V12, in: "SEND\ncontent-length:-1\n\n\x00", err: "invalid content-length"},
		{name: "content-length plus", ver: V12, in: "SEND\ncontent-length:+1\n\na\x00", err: "invalid content-length"},
		{name: "content-length space", ver: V12, in: "SEND\ncontent-length: 1\n\na\x00", err: "invalid content-length"},
		{name: "content-length trailing space", ver: V12, in: "SEND\ncontent-length:1 \n\na\x00", err: "invalid content-length"},
		{name: "content-length hex", ver: V12, in: "SEND\ncontent-length:0x1\n\na\x00", err: "invalid content-length"},
		{name: "content-length escaped", ver: V12, in: "SEND\ncontent-length:1\\\\\n\na\x00", err: "invalid content-length"},
		{name: "content-length overflow", ver: V12, in: "SEND\ncontent-length:99999999999999999999999\n\n", err: "frame too large"},
		{name: "content-length overflow partial", ver: V12, in: "SEND\ncontent-length:99999999999999999999999\n", err: "frame too large"},
		{name: "content-length huge no limit waits", ver: V12, in: "SEND\ncontent-length:9223372036854775807\n\nab", n: 0},
		{name: "NUL in header value", ver: V12, in: "SEND\na:\x00\n\n\x00", want: frame("SEND", "", "a", "\x00")},

		// Malformed.
		{name: "lowercase command", ver: V12, in: "send\n\n\x00", err: "invalid command"},
		{name: "command with space", ver: V12, in: "SE ND\n\n\x00", err: "invalid command"},
		{name: "command with digit", ver: V12, in: "SEND1\n\n\x00", err: "invalid command"},
		{name: "command CR CR", ver: V12, in: "\r\r\n\n\x00", err: "invalid command"},
		{name: "command CR inside", ver: V12, in: "SE\rND\n\n\x00", err: "invalid command"},
		{name: "bare NUL", ver: V12, in: "\x00", err: "invalid command"},
		{name: "partial invalid command", ver: V12, in: "se", err: "invalid command"},
		{name: "partial valid command", ver: V12, in: "SEN", n: 0},
		{name: "partial command CR", ver: V12, in: "SEND\r", n: 0},
		{name: "header without colon", ver: V12, in: "SEND\nfoo\n\n\x00", err: "malformed header"},
		{name: "empty header name", ver: V12, in: "SEND\n:v\n\n\x00", err: "empty header name"},
		{name: "missing blank line", ver: V12, in: "SEND\na:b\n\x00", n: 0},

		// Limits on complete frames.
		{name: "frame exactly max", ver: V12, lim: Limits{MaxFrameSize: 10}, in: "SEND\n\nabc\x00", want: frame("SEND", "abc")},
		{name: "frame over max", ver: V12, lim: Limits{MaxFrameSize: 9}, in: "SEND\n\nabc\x00", err: "frame too large"},
		{name: "trailing EOLs do not count", ver: V12, lim: Limits{MaxFrameSize: 10}, in: "SEND\n\nabc\x00\n\n", want: frame("SEND", "abc")},
		{name: "content-length frame exactly max", ver: V12, lim: Limits{MaxFrameSize: 27}, in: "SEND\ncontent-length:3\n\na\x00c\x00", want: frame("SEND", "a\x00c", "content-length", "3")},
		{name: "content-length frame over max", ver: V12, lim: Limits{MaxFrameSize: 26}, in: "SEND\ncontent-length:3\n\na\x00c\x00", err: "frame too large"},
		{name: "headers exactly max", ver: V12, lim: Limits{MaxHeaders: 2}, in: "SEND\na:1\nb:2\n\n\x00", want: frame("SEND", "", "a", "1", "b", "2")},
		{name: "headers over max", ver: V12, lim: Limits{MaxHeaders: 1}, in: "SEND\na:1\nb:2\n\n\x00", err: "too many headers"},
		{name: "header exactly max len", ver: V12, lim: Limits{MaxHeaderLen: 5}, in: "SEND\nab:cd\r\n\n\x00", want: frame("SEND", "", "ab", "cd")},
		{name: "header over max len", ver: V12, lim: Limits{MaxHeaderLen: 4}, in: "SEND\nab:cd\n\n\x00", err: "header too long"},
		{name: "header len counts escaped form", ver: V12, lim: Limits{MaxHeaderLen: 4}, in: "SEND\na:\\n\\n\n\n\x00", err: "header too long"},

		// Limits on partial input: the caller must be able to stop buffering.
		{name: "partial too many headers", ver: V12, lim: Limits{MaxHeaders: 2}, in: "SEND\na:1\nb:2\nc", err: "too many headers"},
		{name: "partial headers at max waits", ver: V12, lim: Limits{MaxHeaders: 2}, in: "SEND\na:1\nb:2\n\r", n: 0},
		{name: "partial header too long", ver: V12, lim: Limits{MaxHeaderLen: 5}, in: "SEND\nabcdef", err: "header too long"},
		{name: "partial header at max len waits", ver: V12, lim: Limits{MaxHeaderLen: 5}, in: "SEND\nab:cd\r", n: 0},
		{name: "partial content-length too large", ver: V12, lim: Limits{MaxFrameSize: 100}, in: "SEND\ncontent-length:200\n", err: "frame too large"},
		{name: "partial content-length too large after more headers", ver: V12, lim: Limits{MaxFrameSize: 40}, in: "SEND\ncontent-length:10\nxxxxxxxxxx:yyyy\n", err: "frame too large"},
		{name: "partial content-length fits waits", ver: V12, lim: Limits{MaxFrameSize: 100}, in: "SEND\ncontent-length:20\n", n: 0},
		{name: "partial body too large", ver: V12, lim: Limits{MaxFrameSize: 10}, in: "SEND\n\nabcd", err: "frame too large"},
		{name: "partial body just fits waits", ver: V12, lim: Limits{MaxFrameSize: 10}, in: "SEND\n\nabc", n: 0},
		{name: "partial command too large", ver: V12, lim: Limits{MaxFrameSize: 10}, in: "ABCDEFGH", err: "frame too large"},
		{name: "partial command just fits waits", ver: V12, lim: Limits{MaxFrameSize: 10}, in: "ABCDEFG", n: 0},
		{name: "partial header block too large", ver: V12, lim: Limits{MaxFrameSize: 10}, in: "SEND\na:bcd", err: "frame too large"},
	}
}

// isLimitMsg: the error breaks a limit rather than the grammar.
func isLimitMsg(msg string) bool {
	return msg == "frame too large" || msg == "too many headers" || msg == "header too long"
}

func TestFrameDecodeTable(t *testing.T) {
	for _, c := range decodeCases() {
		t.Run(c.name, func(t *testing.T) {
			d := Decoder{Limits: c.lim, Version: c.ver}
			f, n, err := d.Decode([]byte(c.in))
			if msg := errMsg(err); msg != c.err {
				t.Fatalf("err = %q, want %q", msg, c.err)
			}
			if c.err != "" {
				if f != nil || n != 0 {
					t.Fatalf("on error got frame %+v, n %d", f, n)
				}
				if got := err.(*Error).Limit; got != isLimitMsg(c.err) {
					t.Fatalf("%q: Limit = %v, want %v", c.err, got, isLimitMsg(c.err))
				}
				return
			}
			if !framesEqual(f, c.want) {
				t.Fatalf("frame = %+v, want %+v", f, c.want)
			}
			wantN := c.n
			if c.want != nil {
				wantN = len(c.in) - c.rest
			}
			if n != wantN {
				t.Fatalf("n = %d, want %d", n, wantN)
			}
		})
	}
}

func TestFrameGet(t *testing.T) {
	f := &Frame{Command: "MESSAGE", Headers: hdrs("foo", "1", "bar", "", "foo", "2")}
	if v, ok := f.Get("foo"); !ok || v != "1" {
		t.Errorf("Get(foo) = %q, %v", v, ok)
	}
	if v, ok := f.Get("bar"); !ok || v != "" {
		t.Errorf("Get(bar) = %q, %v", v, ok)
	}
	if v, ok := f.Get("baz"); ok || v != "" {
		t.Errorf("Get(baz) = %q, %v", v, ok)
	}
	if f.Value("foo") != "1" || f.Value("baz") != "" {
		t.Errorf("Value mismatch")
	}
}

func TestFrameDecodeMultiple(t *testing.T) {
	in := "\nSEND\na:1\n\nx\x00\r\nACK\r\nid:9\r\n\r\n\x00MESSAGE\ncontent-length:1\n\n\x00\x00\n\n"
	want := []*Frame{
		{Command: "SEND", Headers: hdrs("a", "1"), Body: []byte("x")},
		{Command: "ACK", Headers: hdrs("id", "9")},
		{Command: "MESSAGE", Headers: hdrs("content-length", "1"), Body: []byte{0}},
	}
	d := Decoder{Version: V12}
	buf := []byte(in)
	var got []*Frame
	for len(buf) > 0 {
		f, n, err := d.Decode(buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("stuck with %q", buf)
		}
		if f != nil {
			got = append(got, f)
		}
		buf = buf[n:]
	}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if !framesEqual(got[i], want[i]) {
			t.Errorf("frame %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// Every strict prefix of a frame must ask for more data; from the NUL on, the
// frame decodes and only complete trailing EOLs are consumed.
func TestFrameDecodeSplitEverywhere(t *testing.T) {
	cases := []struct {
		ver  Version
		lim  Limits
		wire string // one frame, then optional EOLs
		want *Frame
	}{
		{V12, Limits{}, "SEND\ndestination:/q\n\nhello\x00", &Frame{Command: "SEND", Headers: hdrs("destination", "/q"), Body: []byte("hello")}},
		{V12, Limits{}, "SEND\r\na\\c:b\\r\\n\r\n\r\nhi\x00\r\n\n", &Frame{Command: "SEND", Headers: hdrs("a:", "b\r\n"), Body: []byte("hi")}},
		{V11, Limits{}, "MESSAGE\ncontent-length:3\nx:y\n\n\x00\x00\x00\x00\n", &Frame{Command: "MESSAGE", Headers: hdrs("content-length", "3", "x", "y"), Body: []byte{0, 0, 0}}},
		{V10, Limits{}, "CONNECT\naccept-version:1.2\nhost:h\n\n\x00", &Frame{Command: "CONNECT", Headers: hdrs("accept-version", "1.2", "host", "h")}},
		// Tight limits: exactly at the bound, so no prefix may trip early.
		{V12, Limits{MaxFrameSize: 27, MaxHeaders: 1, MaxHeaderLen: 14}, "SEND\ndestination:/q\n\nhello\x00\r\n", &Frame{Command: "SEND", Headers: hdrs("destination", "/q"), Body: []byte("hello")}},
		{V12, Limits{MaxFrameSize: 29, MaxHeaders: 1, MaxHeaderLen: 16}, "SEND\ncontent-length:5\n\nab\x00de\x00", &Frame{Command: "SEND", Headers: hdrs("content-length", "5"), Body: []byte("ab\x00de")}},
	}
	for i, c := range cases {
		end := len(strings.TrimRight(c.wire, "\r\n")) // up to and including the NUL
		d := Decoder{Limits: c.lim, Version: c.ver}
		for k := 0; k <= len(c.wire); k++ {
			// A fresh exact-size copy, so reading past the prefix panics.
			f, n, err := d.Decode([]byte(c.wire[:k]))
			if err != nil {
				t.Fatalf("case %d prefix %d: %v", i, k, err)
			}
			if k < end {
				if f != nil || n != 0 {
					t.Fatalf("case %d prefix %d: got frame %v n %d, want (nil,0)", i, k, f, n)
				}
				continue
			}
			if !framesEqual(f, c.want) {
				t.Fatalf("case %d prefix %d: frame %+v, want %+v", i, k, f, c.want)
			}
			wantN := end + skipEOLs([]byte(c.wire[end:k]))
			if n != wantN {
				t.Fatalf("case %d prefix %d: n %d, want %d", i, k, n, wantN)
			}
		}
	}
}

// An over-limit frame fed byte by byte must be rejected as soon as a prefix
// proves it (at the latest when len(buf) reaches MaxFrameSize), never decode,
// and never be rejected before the proof.
func TestFrameDecodeStopsEarly(t *testing.T) {
	cases := []struct {
		name   string
		lim    Limits
		wire   string
		errAt  int // length of the first prefix that errors
		errMsg string
	}{
		{"body", Limits{MaxFrameSize: 16}, "SEND\n\n" + strings.Repeat("x", 40) + "\x00", 16, "frame too large"},
		{"content-length", Limits{MaxFrameSize: 64}, "SEND\ncontent-length:100\n\n" + strings.Repeat("x", 100) + "\x00", len("SEND\ncontent-length:100\n"), "frame too large"},
		{"headers", Limits{MaxHeaders: 3}, "SEND\na:1\nb:2\nc:3\nd:4\n\n\x00", len("SEND\na:1\nb:2\nc:3\nd"), "too many headers"},
		{"header len", Limits{MaxHeaderLen: 8}, "SEND\nabcd:efgh\n\n\x00", len("SEND\nabcd:efgh"), "header too long"},
		{"command", Limits{MaxFrameSize: 8}, strings.Repeat("A", 20) + "\n\n\x00", 6, "frame too large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := Decoder{Limits: c.lim, Version: V12}
			for k := 0; k <= len(c.wire); k++ {
				f, n, err := d.Decode([]byte(c.wire[:k]))
				if f != nil || n != 0 {
					t.Fatalf("prefix %d: got frame %v n %d", k, f, n)
				}
				if err != nil {
					if msg := errMsg(err); msg != c.errMsg {
						t.Fatalf("prefix %d: err %q, want %q", k, msg, c.errMsg)
					}
					if k != c.errAt {
						t.Fatalf("first error at prefix %d, want %d", k, c.errAt)
					}
					return
				}
				if k >= c.errAt {
					t.Fatalf("prefix %d: no error, want %q by %d", k, c.errMsg, c.errAt)
				}
			}
			t.Fatalf("never errored")
		})
	}
}

func TestFrameDecodeDoesNotAlias(t *testing.T) {
	for _, ver := range []Version{0, V10, V11, V12} {
		buf := []byte("SEND\ndestination:/q\\c1\nk:v\n\nbody\x00")
		d := Decoder{Version: ver}
		f, _, err := d.Decode(buf)
		if err != nil {
			t.Fatal(err)
		}
		before := fmt.Sprintf("%q %q %q", f.Command, f.Headers, f.Body)
		for i := range buf {
			buf[i] = 'Z'
		}
		if after := fmt.Sprintf("%q %q %q", f.Command, f.Headers, f.Body); after != before {
			t.Errorf("%v: frame changed with buffer: %s -> %s", ver, before, after)
		}
	}
}

func TestFrameRoundTrip(t *testing.T) {
	body := []byte("a\x00b\nc")
	cases := []struct {
		ver     Version
		command string
		headers []Header
	}{
		{V12, "SEND", hdrs("de:st", "v:a\nl\\u\re\r", "x", "", "x", "second", "\r\n:\\", "\\\\")},
		{V12, "MESSAGE", hdrs("subscription", "0", "message-id", "m:1\n", "destination", "/topic/a\\b")},
		{V11, "SEND", hdrs("de:st", "v:a\nl\\u\re", "x", "", "n\\:\n", "\\c")},
		{V10, "SEND", hdrs("dest", "v:a\\l\re", "x", "")},
		{0, "SEND", hdrs("dest", "v:a\\l\re")},
		// CONNECT family is never escaped, so only values that survive raw.
		{V12, "CONNECT", hdrs("accept-version", "1.0,1.1,1.2", "host", "h:1", "passcode", "p\\c\\n\rq")},
		{V11, "STOMP", hdrs("login", "a\\b")},
		{V12, "CONNECTED", hdrs("version", "1.2", "server", "chatd/1.0", "heart-beat", "0,10000")},
	}
	for _, c := range cases {
		t.Run(c.ver.String()+"/"+c.command, func(t *testing.T) {
			hs := append(append([]Header(nil), c.headers...), Header{"content-length", fmt.Sprint(len(body))})
			wire := AppendFrame([]byte("prefix"), c.ver, c.command, hs, body)
			if !bytes.HasPrefix(wire, []byte("prefix")) || wire[len(wire)-1] != 0 {
				t.Fatalf("bad wire %q", wire)
			}
			wire = wire[len("prefix"):]
			d := Decoder{Version: c.ver}
			f, n, err := d.Decode(wire)
			if err != nil {
				t.Fatalf("decode %q: %v", wire, err)
			}
			if n != len(wire) {
				t.Fatalf("n = %d, want %d", n, len(wire))
			}
			want := &Frame{Command: c.command, Headers: hs, Body: body}
			if !framesEqual(f, want) {
				t.Fatalf("got %q, want %q (wire %q)", f, want, wire)
			}
		})
	}
}

func TestFrameAppendWire(t *testing.T) {
	cases := []struct {
		ver     Version
		command string
		headers []Header
		body    string
		want    string
	}{
		{V12, "SEND", hdrs("a:b", "c\nd\re\\"), "x", "SEND\na\\cb:c\\nd\\re\\\\\n\nx\x00"},
		{V11, "SEND", hdrs("a:b", "c\nd\re\\"), "x", "SEND\na\\cb:c\\nd\re\\\\\n\nx\x00"},
		{V10, "SEND", hdrs("a", "b:c\\"), "", "SEND\na:b:c\\\n\n\x00"},
		{V12, "CONNECTED", hdrs("server", "a:b\\"), "", "CONNECTED\nserver:a:b\\\n\n\x00"},
		{V12, "DISCONNECT", nil, "", "DISCONNECT\n\n\x00"},
	}
	for _, c := range cases {
		if got := string(AppendFrame(nil, c.ver, c.command, c.headers, []byte(c.body))); got != c.want {
			t.Errorf("AppendFrame(%v, %s) = %q, want %q", c.ver, c.command, got, c.want)
		}
	}
	if got := string(AppendHeader([]byte("X"), V12, "a:b", "1\n2")); got != "Xa\\cb:1\\n2\n" {
		t.Errorf("AppendHeader V12 = %q", got)
	}
	if got := string(AppendHeader(nil, V10, "a", "1:2")); got != "a:1:2\n" {
		t.Errorf("AppendHeader V10 = %q", got)
	}
}

func TestFrameEscape(t *testing.T) {
	s := "a\\b\nc\rd:e"
	cases := []struct {
		ver  Version
		in   string
		want string
	}{
		{V12, s, "a\\\\b\\nc\\rd\\ce"},
		{V11, s, "a\\\\b\\nc\rd\\ce"},
		{V10, s, s},
		{0, s, s},
		{V12, "plain", "plain"},
		{V12, "", ""},
	}
	for _, c := range cases {
		if got := Escape(c.ver, c.in); got != c.want {
			t.Errorf("Escape(%v, %q) = %q, want %q", c.ver, c.in, got, c.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = Escape(V12, "no-specials-here") }); n != 0 {
		t.Errorf("Escape without specials allocates %v times", n)
	}
}

func TestFrameVersionString(t *testing.T) {
	for v, want := range map[Version]string{V10: "1.0", V11: "1.1", V12: "1.2", 0: "Version(0)", 7: "Version(7)"} {
		if got := v.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(v), got, want)
		}
	}
	if got := (&Error{Msg: "frame too large"}).Error(); got != "stomp: frame too large" {
		t.Errorf("Error() = %q", got)
	}
}

var benchSend = []byte("SEND\n" +
	"destination:/topic/chat.room.42\n" +
	"content-type:text/plain;charset=utf-8\n" +
	"content-length:88\n" +
	"receipt:r-1234\n" +
	"\n" +
	"{\"room\":42,\"from\":\"alice\",\"text\":\"hello everyone, the meeting moved to 3pm today.\"}     \x00\n")

func TestFrameDecodeAllocs(t *testing.T) {
	d := Decoder{Limits: Limits{MaxFrameSize: 65536, MaxHeaders: 64, MaxHeaderLen: 8192}, Version: V12}
	f, n, err := d.Decode(benchSend)
	if err != nil || n != len(benchSend) || len(f.Body) != 88 || len(f.Headers) != 4 {
		t.Fatalf("bench frame: %v %d %+v", err, n, f)
	}
	// Frame, header slice, header-block string, body.
	if a := testing.AllocsPerRun(100, func() { _, _, _ = d.Decode(benchSend) }); a > 4 {
		t.Errorf("Decode allocates %v times, want <= 4", a)
	}
}

func BenchmarkDecodeSend(b *testing.B) {
	d := Decoder{Limits: Limits{MaxFrameSize: 65536, MaxHeaders: 64, MaxHeaderLen: 8192}, Version: V12}
	b.SetBytes(int64(len(benchSend)))
	b.ReportAllocs()
	for b.Loop() {
		f, _, err := d.Decode(benchSend)
		if err != nil || f == nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendFrameMessage(b *testing.B) {
	hs := hdrs("subscription", "sub-0", "message-id", "m-1234", "destination", "/topic/chat.room.42", "content-type", "text/plain;charset=utf-8", "content-length", "88")
	body := make([]byte, 88)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFrame(buf[:0], V12, "MESSAGE", hs, body)
	}
	sink = buf
}

var sink []byte
