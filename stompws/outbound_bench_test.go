package stompws

import (
	"strconv"
	"testing"

	"github.com/chatd/chatd/stompws/frame"
)

// benchChatBody is a room message body as chatd sends it.
const benchChatBody = `{"id":1795320202978319,"roomId":"lobby","userId":"alice","message":"#cb1;run;0;17;1795320202978319000;","unreadCount":4,"createdAt":"2026-11-22T04:03:26.851Z"}`

func benchMessage() *Message {
	return NewMessage("/topic/chat.lobby", []frame.Header{{Name: "content-type", Value: "application/json"}}, []byte(benchChatBody))
}

// BenchmarkAppendMessage is the per-delivery cost of a MESSAGE in the
// writer: the shared part is encoded once per message (cached after the
// first delivery), then each delivery adds its subscription, message-id and
// the shared bytes.
func BenchmarkAppendMessage(b *testing.B) {
	for _, mode := range []struct {
		name string
		ack  AckMode
	}{{"auto", AckAuto}, {"client", AckClient}} {
		b.Run(mode.name, func(b *testing.B) {
			s := &Session{version: frame.V12}
			sub := newSubscription(s, "sub-0", "/topic/chat.lobby", mode.ack, nil)
			it := outItem{sub: sub, msg: benchMessage(), id: 1}
			buf := s.appendMessage(nil, &it)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				it.id++
				buf = s.appendMessage(buf[:0], &it)
			}
		})
	}
}

// BenchmarkMessageEncode is the once-per-message part: NewMessage and the
// first encoding for a protocol version, which every later delivery of the
// message shares.
func BenchmarkMessageEncode(b *testing.B) {
	body := []byte(benchChatBody)
	hdr := []frame.Header{{Name: "content-type", Value: "application/json"}, {Name: "x-trace", Value: "abc"}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m := NewMessage("/topic/chat.lobby", hdr, body)
		if len(m.encoded(frame.V12)) == 0 {
			b.Fatal("empty encoding")
		}
	}
}

// BenchmarkDecodeChatSend decodes a SEND as chatbench publishes it, with a
// receipt.
func BenchmarkDecodeChatSend(b *testing.B) {
	body := `{"message":"#cb1;run;0;17;1795320202978319000;"}`
	wire := []byte("SEND\ndestination:/app/chat.lobby\ncontent-type:application/json\nreceipt:17\ncontent-length:" +
		strconv.Itoa(len(body)) + "\n\n" + body + "\x00")
	d := frame.Decoder{Limits: DefaultConfig().Limits, Version: frame.V12}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		f, n, err := d.Decode(wire)
		if err != nil || f == nil || n != len(wire) {
			b.Fatalf("decode: %v %d", err, n)
		}
	}
}
