package main

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/chatd/chatd/stompws/frame"
	gostompframe "github.com/go-stomp/stomp/v3/frame"
)

// benchStream is 256 MESSAGE frames as chatd sends them to a subscriber.
func benchStream(b *testing.B) []byte {
	b.Helper()
	var s []byte
	for i := range 256 {
		body := appendPayload([]byte(`{"id":1795320202978319,"roomId":"cbab12-3","userId":"cbab12-r3p0","message":"`),
			"ab12", 3, uint64(i+1), time.Now().UnixNano(), 0)
		body = append(body, `","unreadCount":99,"createdAt":"2026-11-22T04:03:26.851Z"}`...)
		s = frame.AppendFrame(s, frame.V12, "MESSAGE", []frame.Header{{Name: "subscription", Value: "0"},
			{Name: "message-id", Value: "12345"}, {Name: "destination", Value: "/topic/chat.cbab12-3"},
			{Name: "content-type", Value: "application/json"}}, body)
	}
	return s
}

// BenchmarkParseMessages compares the tool's in-place parsing (frame.Scan
// and the payload, as a subscriber does) with go-stomp's frame reader on
// the same bytes: the reason chatbench has its own client. One op is one
// frame.
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
			f, used, err := frame.Scan(rest)
			if err != nil || used == 0 {
				b.Fatalf("parse: %v", err)
			}
			if sub.onMessage(f.Body(), time.Now().UnixNano()) != 1 {
				b.Fatal("message not counted")
			}
			rest = rest[used:]
		}
	})
	b.Run("go-stomp", func(b *testing.B) {
		b.SetBytes(int64(len(stream) / 256))
		b.ReportAllocs()
		r := gostompframe.NewReader(bytes.NewReader(stream))
		n := 0
		for b.Loop() {
			if n%256 == 0 {
				r = gostompframe.NewReader(bytes.NewReader(stream))
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
