package frame

import (
	"bytes"
	"testing"
	"unsafe"
)

// checkView checks that a View shows what Decode made of the same bytes.
func checkView(t *testing.T, what string, v View, want *Frame) {
	t.Helper()
	if string(v.Command()) != want.Command || !bytes.Equal(v.Body(), want.Body) {
		t.Fatalf("%s: view %q %q, want %q %q", what, v.Command(), v.Body(), want.Command, want.Body)
	}
	for _, h := range want.Headers {
		wv, _ := want.Get(h.Name)
		if got, ok := v.Header(h.Name); !ok || got != wv {
			t.Fatalf("%s: Header(%q) = %q %v, want %q", what, h.Name, got, ok, wv)
		}
	}
	if _, has := want.Get("no-such-header"); has {
		return
	}
	if got, ok := v.Header("no-such-header"); ok {
		t.Fatalf("%s: found a missing header: %q", what, got)
	}
}

// TestScanMatchesDecode: Scan is Decode's parser at 1.2 without limits,
// so it answers every such input of the decoding table as Decode does.
func TestScanMatchesDecode(t *testing.T) {
	for _, c := range decodeCases() {
		if c.ver != V12 || c.lim != (Limits{}) {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			v, n, err := Scan([]byte(c.in))
			if msg := errMsg(err); msg != c.err {
				t.Fatalf("err = %q, want %q", msg, c.err)
			}
			if c.err != "" {
				if n != 0 || len(v.Command()) != 0 {
					t.Fatalf("on error got view %q, n %d", v.Command(), n)
				}
				return
			}
			wantN := c.n
			if c.want != nil {
				wantN = len(c.in) - c.rest
			}
			if n != wantN {
				t.Fatalf("n = %d, want %d", n, wantN)
			}
			if c.want == nil {
				if len(v.Command()) != 0 || len(v.Body()) != 0 {
					t.Fatalf("no frame expected, got %q %q", v.Command(), v.Body())
				}
				if _, ok := v.Header("a"); ok {
					t.Fatal("an empty view has a header")
				}
				return
			}
			checkView(t, c.name, v, c.want)
		})
	}
}

func TestScanHeader(t *testing.T) {
	v, _, err := Scan([]byte("ERROR\nmessage:a\\cb\\nc\\\\d\\re\nmessage:second\nempty:\nx\\cname:v\r\n\n\x00"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, want string }{
		{"message", "a:b\nc\\d\re"}, // the first, unescaped
		{"empty", ""},
		{"x:name", "v"}, // an escaped name, CRLF line
	} {
		if got, ok := v.Header(c.name); !ok || got != c.want {
			t.Errorf("Header(%q) = %q %v, want %q", c.name, got, ok, c.want)
		}
	}
	if _, ok := v.Header(`x\cname`); ok {
		t.Error("found a header by its escaped name")
	}
	// CONNECTED is never escaped.
	v, _, err = Scan([]byte("CONNECTED\nserver:a\\b\\c\nversion:1.2\n\n\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Header("server"); got != `a\b\c` {
		t.Errorf("CONNECTED server = %q, want it as sent", got)
	}
	// 1.2 escapes only what it defines.
	if _, _, err := Scan([]byte("MESSAGE\nx:a\\tb\n\n\x00")); errMsg(err) != "undefined escape sequence" {
		t.Errorf("undefined escape: err %v", err)
	}
}

// TestScanStream scans back-to-back frames split at every byte, as they
// arrive over a socket.
func TestScanStream(t *testing.T) {
	stream := "\nMESSAGE\nsubscription:0\ncontent-length:2\n\nab\x00\n" +
		"RECEIPT\nreceipt-id:1\n\n\x00" + "MESSAGE\nsubscription:0\n\nxyz\x00\r\n"
	want := []string{"MESSAGE:ab", "RECEIPT:", "MESSAGE:xyz"}
	for split := 0; split <= len(stream); split++ {
		var got []string
		var buf []byte
		for _, part := range []string{stream[:split], stream[split:]} {
			buf = append(buf, part...)
			for {
				v, n, err := Scan(buf)
				if err != nil {
					t.Fatalf("split %d: %v", split, err)
				}
				if n == 0 {
					break
				}
				if len(v.Command()) > 0 {
					got = append(got, string(v.Command())+":"+string(v.Body()))
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

// TestScanDoesNotCopy: a View aliases the buffer, and scanning a frame
// for its command and body allocates nothing.
func TestScanDoesNotCopy(t *testing.T) {
	buf := []byte("MESSAGE\nsubscription:0\nmessage-id:7\ndestination:/topic/a\\cb\n\nhello\x00")
	v, n, err := Scan(buf)
	if err != nil || n != len(buf) {
		t.Fatalf("scan: %v %d", err, n)
	}
	if body := v.Body(); unsafe.SliceData(body) != &buf[len(buf)-6] {
		t.Fatal("the body is a copy")
	}
	allocs := testing.AllocsPerRun(100, func() {
		v, _, _ := Scan(buf)
		if string(v.Command()) != "MESSAGE" || len(v.Body()) != 5 {
			t.Fatal("bad view")
		}
	})
	if allocs != 0 {
		t.Fatalf("Scan allocates %v times", allocs)
	}
}

func BenchmarkScanMessage(b *testing.B) {
	msg := AppendFrame(nil, V12, "MESSAGE", hdrs("subscription", "0", "message-id", "12345",
		"destination", "/topic/chat.room-3", "content-type", "application/json", "content-length", "88"), make([]byte, 88))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		v, n, err := Scan(msg)
		if err != nil || n != len(msg) || len(v.Body()) != 88 {
			b.Fatalf("scan: %v %d", err, n)
		}
	}
}
