package chat

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/chatd/chatd/storage"
)

func TestParseDraft(t *testing.T) {
	f := Fields{Text: "messageText", ID: "id", Room: "chatroomId", User: "sender", Unread: "unread", Created: "sendAt"}
	d, err := f.parseDraft([]byte(` {"roomId":1,"messageText":"hi \u2713","sendAt":"x","sender":"mallory","n":7.50,"o":{"b":[1,"2"]},"type":"TALK","chatroomId":"9"} `), true)
	if err != nil {
		t.Fatal(err)
	}
	if d.text != "hi ✓" {
		t.Fatalf("text %q", d.text)
	}
	// The client's own fields, in their order and as written; chatd's
	// fields (sendAt, sender, chatroomId here) never.
	if want := `{"roomId":1,"n":7.50,"o":{"b":[1,"2"]},"type":"TALK"}`; string(d.extra) != want {
		t.Fatalf("extra %s, want %s", d.extra, want)
	}
	if d, _ := f.parseDraft([]byte(`{"messageText":"hi","type":"TALK"}`), false); d.extra != nil {
		t.Fatalf("kept %s with keep off", d.extra)
	}
	for _, bad := range []string{``, `"hi"`, `[]`, `{"message":"hi"}`, `{"messageText":""}`, `{"messageText":7}`,
		`{"messageText":"hi"`, `{"messageText":"hi"} {}`, `{"messageText":"hi",}`, `null`} {
		_, err := f.parseDraft([]byte(bad), true)
		if KindOf(err) != Invalid {
			t.Errorf("body %q: %v, want an Invalid error", bad, err)
			continue
		}
		if e := err.(*Error); !strings.Contains(e.Msg, `"messageText"`) {
			t.Errorf("body %q: %q does not name the field", bad, e.Msg)
		}
	}
}

func TestMessageJSON(t *testing.T) {
	m := Message{ID: 42, RoomID: "r", UserID: "bob", Message: `<b>"hi"</b>`, UnreadCount: 3, CreatedAt: "2026-12-03T10:00:00.000Z",
		Extra: json.RawMessage(`{"type":"TALK","n":7,"userId":"stale","roomId":"x"}`)}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	// chatd's names by default; a kept field named as one of chatd's
	// (stored under another configuration) never wins.
	want := `{"id":42,"roomId":"r","userId":"bob","message":"\u003cb\u003e\"hi\"\u003c/b\u003e","unreadCount":3,"createdAt":"2026-12-03T10:00:00.000Z","type":"TALK","n":7}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	m.fields = &Fields{Text: "messageText", ID: "id", Room: "chatroomId", User: "sender", Unread: "unread", Created: "sendAt"}
	b, _ = json.Marshal(m)
	want = `{"id":42,"chatroomId":"r","sender":"bob","messageText":"\u003cb\u003e\"hi\"\u003c/b\u003e","unread":3,"sendAt":"2026-12-03T10:00:00.000Z","type":"TALK","n":7,"userId":"stale","roomId":"x"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var back Message
	if err := json.Unmarshal([]byte(`{"id":1,"roomId":"r","userId":"u","message":"m","unreadCount":0,"createdAt":"t"}`), &back); err != nil || back.Message != "m" {
		t.Fatalf("chatd's names read back: %+v %v", back, err)
	}
	ev, _ := json.Marshal(ReadEvent{RoomID: "r", UserID: "bob", LastReadID: 9, fields: m.fields})
	if string(ev) != `{"chatroomId":"r","sender":"bob","lastReadId":9}` {
		t.Fatalf("read event %s", ev)
	}
}

// A message a backend published with an extra that is not an object is
// given without it, not dropped.
func TestStoredExtraNotAnObject(t *testing.T) {
	for _, extra := range []string{`5`, `"x"`, `[1,2]`, `null`, `{"type":"ENTER"}`} {
		st, err := decodeStored(storage.Message{ID: 7, Room: "r", Data: []byte(`{"userId":"u","message":"m","createdAt":"2026-01-01T00:00:00.000Z","extra":` + extra + `}`)})
		if err != nil {
			t.Fatalf("extra %s: %v", extra, err)
		}
		b, err := json.Marshal(Message{ID: 7, RoomID: "r", UserID: st.UserID, Message: st.Message, CreatedAt: st.CreatedAt, Extra: st.Extra})
		if err != nil {
			t.Fatalf("extra %s: %v", extra, err)
		}
		want := `{"id":7,"roomId":"r","userId":"u","message":"m","unreadCount":0,"createdAt":"2026-01-01T00:00:00.000Z"`
		if extra[0] == '{' {
			want += `,"type":"ENTER"`
		}
		if string(b) != want+"}" {
			t.Errorf("extra %s: %s, want %s}", extra, b, want)
		}
	}
}

// TestAppendStringAsEncodingJSON: the copy-through path writes exactly
// what encoding/json writes, for text that needs no escape (ASCII,
// Korean, emoji) and text that does.
func TestAppendStringAsEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "hello", "안녕하세요, 반갑습니다", "emoji 🎉 ok", "quote \" and \\ back",
		"<b>&amp;</b>", "tab\tnewline\n", "\x00\x1f", "bad \xff utf-8", "sep \u2028 \u2029",
		"mixed 한글 <tag>", strings.Repeat("가", 300),
	} {
		want, _ := json.Marshal(s)
		if got := appendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got[1:], want)
		}
	}
}
