package frame

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

var fuzzLimits = Limits{MaxFrameSize: 65536, MaxHeaders: 64, MaxHeaderLen: 8192}

var fuzzVersions = [...]Version{0, V10, V11, V12}

// roundTrips reports whether f can be re-encoded faithfully. Without
// escaping (V10, version 0, the CONNECT family) and in V11 (no \r escape) a
// value ending in CR is written as "...\r\n", which reads back as a CRLF.
func roundTrips(v Version, f *Frame) bool {
	if escFor(v, isConnect([]byte(f.Command))) == escV12 {
		return true
	}
	for _, h := range f.Headers {
		if strings.HasSuffix(h.Value, "\r") {
			return false
		}
	}
	return true
}

func FuzzDecode(f *testing.F) {
	seeds := []string{
		"CONNECT\naccept-version:1.0,1.1,1.2\nhost:chat\nlogin:a\npasscode:p\\w\nheart-beat:10000,10000\n\n\x00",
		"STOMP\r\naccept-version:1.2\r\nhost:chat\r\n\r\n\x00",
		"CONNECTED\nversion:1.2\nserver:chatd\nheart-beat:0,0\n\n\x00",
		"SEND\ndestination:/topic/a\ncontent-type:text/plain\nreceipt:1\n\nhello\x00",
		"SEND\ndestination:/q\ncontent-length:5\n\na\x00b\x00c\x00\n\n",
		"SUBSCRIBE\nid:0\ndestination:/topic/room.1\nack:client-individual\n\n\x00",
		"UNSUBSCRIBE\nid:0\n\n\x00",
		"ACK\nid:m\\c1\n\n\x00",
		"NACK\nid:m-1\ntransaction:t\n\n\x00",
		"BEGIN\ntransaction:t1\n\n\x00",
		"COMMIT\ntransaction:t1\n\n\x00",
		"ABORT\ntransaction:t1\n\n\x00",
		"DISCONNECT\nreceipt:77\n\n\x00",
		"MESSAGE\nsubscription:0\nmessage-id:1\ndestination:/topic/a\\cb\ncontent-length:3\n\nxyz\x00",
		"RECEIPT\nreceipt-id:77\n\n\x00",
		"ERROR\nmessage:bad\\nframe\ncontent-type:text/plain\n\ndetails\x00",
		"SEND\nk\\ce\\\\y:v\\na\\rl\\c\nfoo:1\nfoo:2\n\n\x00",
		"SEND\na:b\\t\n\n\x00",
		"SEND\na:b\\\n\n\x00",
		"SEND\na:b\r\r\n\n\x00",
		"\n\r\n\nSEND\n\n\x00\r\n\nACK\nid:1\n\n\x00",
		"SEND\ncontent-length:2\n\nabc\x00",
		"SEND\ncontent-length:-1\n\n\x00",
		"SEND\ncontent-length:99999999999999999999\n\n\x00",
		"SEND\ndestination:/q\n\nhel",       // split frame
		"SEND\ncontent-length:10\n\nab\x00", // split body with NUL
		"SEND\r",                            // split inside CRLF
		"SEND\nfoo\n\n\x00",                 // no colon
		"send\n\n\x00",                      // bad command
		"SEND\n:v\n\n\x00",                  // empty name
		"SEND\n" + strings.Repeat("h:v\n", 70) + "\n\x00",
	}
	for _, s := range seeds {
		for v := range fuzzVersions {
			f.Add([]byte(s), uint8(v))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, vsel uint8) {
		ver := fuzzVersions[int(vsel)%len(fuzzVersions)]
		d := Decoder{Limits: fuzzLimits, Version: ver}
		buf := data
		for len(buf) > 0 {
			if ver == V12 {
				scanAgrees(t, buf)
			}
			fr, n, err := d.Decode(buf)
			if n < 0 || n > len(buf) {
				t.Fatalf("consumed %d of %d", n, len(buf))
			}
			if err != nil {
				var fe *Error
				if !errors.As(err, &fe) || fe.Msg == "" {
					t.Fatalf("error %v is not a *Error with a message", err)
				}
				if fr != nil || n != 0 {
					t.Fatalf("error with frame %v, n %d", fr, n)
				}
				return
			}
			if fr == nil {
				if n == 0 {
					// Waiting for more: the limit promise says this cannot
					// happen once the buffer exceeds the frame limit.
					if len(buf) > fuzzLimits.MaxFrameSize {
						t.Fatalf("still buffering %d bytes", len(buf))
					}
					return
				}
				if skipEOLs(buf[:n]) != n {
					t.Fatalf("skipped non-EOL bytes %q", buf[:n])
				}
				buf = buf[n:]
				continue
			}
			checkFrame(t, &d, buf[:n], fr)
			buf = buf[n:]
		}
	})
}

// scanAgrees checks that Scan answers buf as a 1.2 Decoder without
// limits does: the same bytes used, the same error, the same frame.
func scanAgrees(t *testing.T, buf []byte) {
	t.Helper()
	d := Decoder{Version: V12}
	fr, n, err := d.Decode(buf)
	v, vn, verr := Scan(buf)
	if vn != n || errMsg(verr) != errMsg(err) {
		t.Fatalf("%q: Scan used %d (err %v), Decode %d (err %v)", buf, vn, verr, n, err)
	}
	if fr == nil {
		if len(v.Command()) != 0 {
			t.Fatalf("%q: Scan found %q, Decode no frame", buf, v.Command())
		}
		return
	}
	checkView(t, string(buf), v, fr)
}

// checkFrame checks a frame decoded from wire (exactly what Decode consumed).
func checkFrame(t *testing.T, d *Decoder, wire []byte, fr *Frame) {
	t.Helper()
	if fr.Command == "" || strings.Trim(fr.Command, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		t.Fatalf("bad command %q", fr.Command)
	}
	if len(fr.Headers) > d.Limits.MaxHeaders {
		t.Fatalf("%d headers", len(fr.Headers))
	}
	end := len(bytes.TrimRight(wire, "\r\n"))
	if end == 0 || wire[end-1] != 0 || end > d.Limits.MaxFrameSize {
		t.Fatalf("frame end %d in %q", end, wire)
	}

	// Any cut before the NUL must just wait for more data.
	for _, k := range []int{0, end / 4, end / 2, end * 3 / 4, end - 2, end - 1} {
		if k < 0 {
			continue
		}
		if pf, pn, perr := d.Decode(wire[:k:k]); pf != nil || pn != 0 || perr != nil {
			t.Fatalf("prefix %d of %q: %v %d %v", k, wire, pf, pn, perr)
		}
	}

	if !roundTrips(d.Version, fr) {
		return
	}
	// The re-encoded form may be longer (e.g. a raw ':' in a value comes
	// back escaped), so decode it without limits.
	re := AppendFrame(nil, d.Version, fr.Command, fr.Headers, fr.Body)
	d2 := Decoder{Version: d.Version}
	fr2, n2, err := d2.Decode(re)
	if err != nil || n2 != len(re) || !framesEqual(fr, fr2) {
		t.Fatalf("round trip of %q via %q: %+v %d %v, want %+v", wire, re, fr2, n2, err, fr)
	}
}

// FuzzAppendFrame checks that any representable header survives encoding.
func FuzzAppendFrame(f *testing.F) {
	f.Add(uint8(0), uint8(3), "destination", "/topic/a", []byte("body"))
	f.Add(uint8(1), uint8(3), "a:b\\c", "x\ny\rz:", []byte("a\x00b"))
	f.Add(uint8(2), uint8(2), "k\r", "v\r\n\\", []byte{})
	f.Add(uint8(3), uint8(1), "host", "h:1\\", []byte(nil))
	commands := []string{"SEND", "MESSAGE", "CONNECT", "STOMP", "CONNECTED", "ERROR", "ACK"}
	f.Fuzz(func(t *testing.T, csel, vsel uint8, name, value string, body []byte) {
		cmd := commands[int(csel)%len(commands)]
		ver := fuzzVersions[int(vsel)%len(fuzzVersions)]
		esc := escFor(ver, isConnect([]byte(cmd)))
		switch {
		case name == "" || name == "content-length":
			return
		case esc == escNone && (strings.ContainsAny(name, ":\n") || strings.Contains(value, "\n")):
			return // not representable without escaping
		case esc != escV12 && strings.HasSuffix(value, "\r"):
			return // reads back as CRLF
		}
		hs := []Header{{name, value}, {"content-length", strconv.Itoa(len(body))}}
		wire := AppendFrame(nil, ver, cmd, hs, body)
		d := Decoder{Version: ver}
		fr, n, err := d.Decode(wire)
		want := &Frame{Command: cmd, Headers: hs, Body: body}
		if err != nil || n != len(wire) || !framesEqual(fr, want) {
			t.Fatalf("wire %q: %+v %d %v, want %+v", wire, fr, n, err, want)
		}
		if got := string(AppendHeader(nil, ver, name, value)); got != Escape(ver, name)+":"+Escape(ver, value)+"\n" {
			t.Fatalf("AppendHeader %q disagrees with Escape", got)
		}
	})
}
