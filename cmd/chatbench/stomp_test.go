package main

import (
	"errors"
	"testing"

	"github.com/chatd/chatd/stompws/frame"
)

// TestScanFrame: frame.Scan, as the client parses the server's frames.
func TestScanFrame(t *testing.T) {
	cases := []struct {
		name       string
		in         string
		n          int // bytes used; 0: incomplete
		cmd, body  string
		err        bool
		heartBeats bool
	}{
		{name: "message", in: "MESSAGE\nsubscription:0\n\nhello\x00rest", n: 30, cmd: "MESSAGE", body: "hello"},
		{name: "no body", in: "RECEIPT\nreceipt-id:7\n\n\x00", n: 23, cmd: "RECEIPT"},
		{name: "EOLs after the NUL", in: "RECEIPT\nreceipt-id:7\n\n\x00\n\r\nMESSAGE", n: 26, cmd: "RECEIPT"},
		{name: "no headers", in: "CONNECTED\n\n\x00", n: 12, cmd: "CONNECTED"},
		{name: "crlf", in: "ERROR\r\nmessage:x\r\n\r\nbad\x00", n: 24, cmd: "ERROR", body: "bad"},
		{name: "content-length with NUL in body", in: "MESSAGE\ncontent-length:3\n\na\x00b\x00", n: 30, cmd: "MESSAGE", body: "a\x00b"},
		{name: "content-length incomplete", in: "MESSAGE\ncontent-length:10\n\nabc"},
		{name: "content-length exactly without NUL yet", in: "MESSAGE\ncontent-length:3\n\nabc"},
		{name: "missing NUL after content-length", in: "MESSAGE\ncontent-length:1\n\nab\x00", err: true},
		{name: "bad content-length", in: "MESSAGE\ncontent-length:x\n\n\x00", err: true},
		{name: "heart-beats", in: "\n\r\n\nMESSAGE", n: 4, heartBeats: true},
		{name: "lone CR waits", in: "\r"},
		{name: "partial command", in: "MESS"},
		{name: "partial headers", in: "MESSAGE\nsubscription:0\n"},
		{name: "no NUL yet", in: "MESSAGE\n\nhello"},
		{name: "empty command", in: "\r\r\n\n\x00", err: true},
		{name: "lower-case command", in: "message\n\n\x00", err: true},
		{name: "empty", in: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := frame.Scan([]byte(tc.in))
			if tc.err {
				var fe *frame.Error
				if err := malformed(err); !errors.Is(err, errFrame) || !errors.As(err, &fe) {
					t.Fatalf("err %v, want errFrame wrapping a *frame.Error", err)
				}
				return
			}
			if err != nil || n != tc.n {
				t.Fatalf("n %d err %v, want n %d", n, err, tc.n)
			}
			if string(f.Command()) != tc.cmd || string(f.Body()) != tc.body {
				t.Fatalf("frame %q %q, want %q %q", f.Command(), f.Body(), tc.cmd, tc.body)
			}
			if tc.heartBeats && len(f.Command()) != 0 {
				t.Fatal("heart-beats gave a frame")
			}
		})
	}
}

// TestScanFrameStream parses back-to-back frames split at every byte, as
// they arrive over a socket.
func TestScanFrameStream(t *testing.T) {
	stream := "\nMESSAGE\nsubscription:0\ncontent-length:2\n\nab\x00\n" +
		"RECEIPT\nreceipt-id:1\n\n\x00" + "MESSAGE\nsubscription:0\n\nxyz\x00"
	want := []string{"MESSAGE:ab", "RECEIPT:", "MESSAGE:xyz"}
	for split := 0; split <= len(stream); split++ {
		var got []string
		var buf []byte
		for _, part := range []string{stream[:split], stream[split:]} {
			buf = append(buf, part...)
			for {
				f, n, err := frame.Scan(buf)
				if err != nil {
					t.Fatalf("split %d: %v", split, err)
				}
				if n == 0 {
					break
				}
				if len(f.Command()) > 0 {
					got = append(got, string(f.Command())+":"+string(f.Body()))
				}
				buf = buf[n:]
			}
		}
		if len(got) != len(want) || len(buf) != 0 {
			t.Fatalf("split %d: got %q, left %q", split, got, buf)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("split %d: got %q", split, got)
			}
		}
	}
}

func TestScanFrameHeader(t *testing.T) {
	f, _, err := frame.Scan([]byte("ERROR\nmessage:a\\cb\\nc\\\\d\nmessage:second\nempty:\n\n\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Header("message"); !ok || v != "a:b\nc\\d" {
		t.Fatalf("message = %q %v", v, ok)
	}
	if v, ok := f.Header("empty"); !ok || v != "" {
		t.Fatalf("empty = %q %v", v, ok)
	}
	if _, ok := f.Header("missing"); ok {
		t.Fatal("found a missing header")
	}
	// CONNECTED is never escaped.
	f, _, _ = frame.Scan([]byte("CONNECTED\nserver:a\\b\n\n\x00"))
	if v, _ := f.Header("server"); v != `a\b` {
		t.Fatalf("CONNECTED server = %q", v)
	}
}

// TestClientFrames: the frames the client writes (frame.AppendFrame at
// 1.2) escape headers, except CONNECT's.
func TestClientFrames(t *testing.T) {
	got := string(frame.AppendFrame(nil, frame.V12, "SEND",
		[]frame.Header{{Name: "destination", Value: "/app/a:b"}, {Name: "x", Value: "1\n2"}}, []byte("hi")))
	if want := "SEND\ndestination:/app/a\\cb\nx:1\\n2\n\nhi\x00"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	got = string(frame.AppendFrame(nil, frame.V12, "CONNECT", []frame.Header{{Name: "login", Value: "a:b"}}, nil))
	if want := "CONNECT\nlogin:a:b\n\n\x00"; got != want {
		t.Fatalf("CONNECT got %q, want %q", got, want)
	}
}
