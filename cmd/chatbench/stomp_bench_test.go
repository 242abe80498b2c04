package main

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
)

// benchStream is 256 MESSAGE frames as chatd sends them to a subscriber.
func benchStream(b *testing.B) []byte {
	b.Helper()
	var s []byte
	for i := range 256 {
		body := appendPayload([]byte(`{"id":1795320202978319,"roomId":"cbab12-3","userId":"cbab12-r3p0","message":"`),
			"ab12", 3, uint64(i+1), time.Now().UnixNano(), 0)
		body = append(body, `","unreadCount":99,"createdAt":"2026-11-22T04:03:26.851Z"}`...)
		s = appendFrame(s, "MESSAGE", [][2]string{{"subscription", "0"}, {"message-id", "12345"},
			{"destination", "/topic/chat.cbab12-3"}, {"content-type", "application/json"}}, body)
	}
	return s
}

// BenchmarkParseMessages compares the tool's in-place parser (frame and
// payload, as a subscriber does) with go-stomp's frame reader on the same
// bytes: the reason chatbench has its own client. One op is one frame.
func BenchmarkParseMessages(b *testing.B) {
	stream := benchStream(b)
	b.Run("chatbench", func(b *testing.B) {
		sub := &subscriber{run: "ab12", base: 3, trackers: make([]seqTracker, 1)}
		b.SetBytes(int64(len(stream) / 256))
		b.ReportAllocs()
		rest := stream
		for b.Loop() {
			if len(rest) == 0 {
				rest = stream
				sub.trackers[0] = seqTracker{}
			}
			f, used, err := nextFrame(rest)
			if err != nil || used == 0 {
				b.Fatalf("parse: %v", err)
			}
			if sub.onMessage(f.body, time.Now().UnixNano()) != 1 {
				b.Fatal("message not counted")
			}
			rest = rest[used:]
		}
	})
	b.Run("go-stomp", func(b *testing.B) {
		b.SetBytes(int64(len(stream) / 256))
		b.ReportAllocs()
		r := frame.NewReader(bytes.NewReader(stream))
		n := 0
		for b.Loop() {
			if n%256 == 0 {
				r = frame.NewReader(bytes.NewReader(stream))
			}
			f, err := r.Read()
			if err != nil && err != io.EOF || f == nil {
				b.Fatalf("read: %v", err)
			}
			if _, ok := parsePayload(f.Body); !ok {
				b.Fatal("no payload")
			}
			n++
		}
	})
}
