package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
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

// sockjsMessages splits stream (whole STOMP frames) into SockJS frames as
// chatd sends them through sockjs-go: perMessage STOMP frames in one
// message, json.Marshal'ed into a["..."].
func sockjsMessages(b *testing.B, stream []byte, perMessage int) [][]byte {
	b.Helper()
	var msgs [][]byte
	for len(stream) > 0 {
		end := 0
		for range perMessage {
			_, n, err := frame.Scan(stream[end:])
			if err != nil || n == 0 {
				break
			}
			end += n
		}
		q, err := json.Marshal(string(stream[:end]))
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, append(append([]byte("a["), q...), ']'))
		stream = stream[end:]
	}
	return msgs
}

// BenchmarkSockJSUnwrap: the SockJS frames chatd sends, with 1 and 8 STOMP
// frames each, made into STOMP bytes in the read buffer: unwrapSockJS in
// place against encoding/json (a []string per message, then copied into
// the buffer). Each op copies a message into the buffer first, as the
// socket read does.
func BenchmarkSockJSUnwrap(b *testing.B) {
	stream := benchStream(b)
	for _, per := range []int{1, 8} {
		msgs := sockjsMessages(b, stream, per)
		buf := make([]byte, 0, 64<<10)
		b.Run(fmt.Sprintf("frames=%d/in-place", per), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				m := msgs[i%len(msgs)]
				i++
				buf = append(buf[:0], m...)
				n, kind, err := unwrapSockJS(buf)
				if err != nil || kind != 'a' || n == 0 {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/frame")
		})
		b.Run(fmt.Sprintf("frames=%d/encoding-json", per), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			var strs []string
			for b.Loop() {
				m := msgs[i%len(msgs)]
				i++
				strs = strs[:0]
				if err := json.Unmarshal(m[1:], &strs); err != nil || len(strs) != 1 {
					b.Fatal(err)
				}
				buf = buf[:0]
				for _, s := range strs {
					buf = append(buf, s...)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/frame")
		})
	}
}

// BenchmarkParseMessagesSockJS is BenchmarkParseMessages/chatbench over
// SockJS (one STOMP frame per SockJS message, as chatd sends them at the
// fan-out scenario's rate): copy, unwrap, frame.Scan, payload and
// accounting. One op is one frame.
func BenchmarkParseMessagesSockJS(b *testing.B) {
	msgs := sockjsMessages(b, benchStream(b), 1)
	sub := &subscriber{run: "ab12", base: 3, trackers: make([]seqTracker, 1)}
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(msgs) == 0 {
			sub.trackers[0] = seqTracker{}
		}
		buf = append(buf[:0], msgs[i%len(msgs)]...)
		i++
		n, _, err := unwrapSockJS(buf)
		if err != nil {
			b.Fatal(err)
		}
		f, used, err := frame.Scan(buf[:n])
		if err != nil || used != n {
			b.Fatalf("parse: %v", err)
		}
		if sub.onMessage(f.Body(), time.Now().UnixNano()) != 1 {
			b.Fatal("message not counted")
		}
	}
}

// BenchmarkAppendSockJSMessage: a SEND as a publisher writes it, wrapped
// for SockJS, against json.Marshal of a []string (what a client using
// encoding/json would do).
func BenchmarkAppendSockJSMessage(b *testing.B) {
	body := appendPayload([]byte(`{"message":"`), "ab12", 3, 12345, time.Now().UnixNano(), 0)
	body = append(body, `"}`...)
	send := frame.AppendFrame(nil, frame.V12, "SEND", []frame.Header{{Name: "destination", Value: "/app/chat.cbab12-3"},
		{Name: "content-type", Value: "application/json"}, {Name: "content-length", Value: strconv.Itoa(len(body))}}, body)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		var out []byte
		for b.Loop() {
			out = appendSockJSMessage(out[:0], send)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal([]string{string(send)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
