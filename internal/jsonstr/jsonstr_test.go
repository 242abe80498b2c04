package jsonstr

import (
	"encoding/json"
	"testing"
)

// FuzzAppend: what the websocket transport writes parses as
// the JSON string encoding/json would write for the same bytes (invalid
// UTF-8 becoming U+FFFD byte by byte), and stays one line.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "MESSAGE\ndestination:/t\n\n{\"a\":\"b\\\\c\"}\x00", "\x00\x01\x1f\x7f", "é\u2028\u2029ü", "\xff\xfe\xc3", "\xe2\x80", "😀\t\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		got := append([]byte{'"'}, Append(nil, p)...)
		got = append(got, '"')
		var ours, theirs string
		if err := json.Unmarshal(got, &ours); err != nil {
			t.Fatalf("%q escaped to %q, not a JSON string: %v", p, got, err)
		}
		want, _ := json.Marshal(string(p))
		if err := json.Unmarshal(want, &theirs); err != nil {
			t.Fatal(err)
		}
		if ours != theirs {
			t.Fatalf("%q read back as %q, encoding/json's as %q", p, ours, theirs)
		}
		for _, c := range got {
			if c < 0x20 {
				t.Fatalf("%q escaped to %q, with a control byte left", p, got)
			}
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	p := []byte("MESSAGE\ndestination:/topic/chat.room-1\nsubscription:sub-0\nmessage-id:1234\nid:98765\ncontent-type:application/json\n\n" +
		`{"id":98765,"room":"room-1","userId":"alice","message":"hello there, how are you doing today? 안녕하세요","sentAt":"2026-12-04T01:02:03Z"}` + "\x00")
	dst := make([]byte, 0, 1024)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		dst = Append(dst[:0], p)
	}
}
