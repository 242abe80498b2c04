package dest

import "testing"

func mustParse(t *testing.T, s string) Template {
	t.Helper()
	tp, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestParse(t *testing.T) {
	for _, bad := range []string{"", "app/chat.{room}", "/app/chat", "/app/{room}.{room}", "/a/{roomId}", "/a/{room} b", "/a/*.{room}", "/a/{x}{room}"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	tp := mustParse(t, "/pub/chat/send/{room}")
	if name, ok := tp.Match("/pub/chat/send/7"); !ok || name != "7" {
		t.Fatalf("Match: %q %v", name, ok)
	}
	for _, d := range []string{"/pub/chat/send/", "/pub/chat/send/a.b", "/pub/chat/send/a/b", "/pub/chat/send/*", "/pub/chat/sendx"} {
		if name, ok := tp.Match(d); ok {
			t.Errorf("Match(%q) = %q", d, name)
		}
	}
	if d := tp.Expand("r1"); d != "/pub/chat/send/r1" {
		t.Fatal(d)
	}
	q, err := Queue("/user")
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := q.Match("/user/queue/chat.log"); !ok || name != "chat.log" {
		t.Fatalf("queue Match: %q %v", name, ok)
	}
	for _, bad := range []string{"", "/", "user", "/user/", "/u ser", "/{room}"} {
		if _, err := Queue(bad); err == nil {
			t.Errorf("Queue(%q) accepted", bad)
		}
	}
}

func TestOverlap(t *testing.T) {
	q, _ := Queue("/user")
	for _, tc := range []struct {
		a, b    string
		overlap bool
	}{
		// chatd's defaults: a room id holds no dot, so none of these meet.
		{"/app/chat.{room}", "/app/chat.{room}.log", false},
		{"/app/chat.{room}.log", "/app/chat.{room}.read", false},
		{"/topic/chat.{room}", "/topic/chat.{room}.read", false},
		{"/app/chat.{room}", "/topic/chat.{room}", false},
		// Spring conventions.
		{"/pub/chat/send/{room}", "/sub/chat/{room}", false},
		{"/app/chat/{room}", "/app/chat/{room}/log", false},
		// Clashes.
		{"/app/chat.{room}", "/app/chat.{room}", true},
		{"/app/chat{room}", "/app/chat.{room}", false},
		{"/app/chat{room}", "/app/chatx{room}", true},
		{"/app/{room}", "/app/chat-{room}", true},
		{"/a/{room}x", "/a/x{room}", true},
	} {
		ex, got := Overlap(mustParse(t, tc.a), mustParse(t, tc.b))
		if got != tc.overlap {
			t.Errorf("Overlap(%s, %s) = %v (%q), want %v", tc.a, tc.b, got, ex, tc.overlap)
			continue
		}
		if got {
			ta, tb := mustParse(t, tc.a), mustParse(t, tc.b)
			if _, ok := ta.Match(ex); !ok {
				t.Errorf("example %q does not match %s", ex, tc.a)
			}
			if _, ok := tb.Match(ex); !ok {
				t.Errorf("example %q does not match %s", ex, tc.b)
			}
		}
	}
	if ex, ok := Overlap(mustParse(t, "/user/queue/{room}"), q); !ok {
		t.Error("a room template under the user queues did not overlap them")
	} else if _, m := q.Match(ex); !m {
		t.Errorf("example %q", ex)
	}
	if _, ok := Overlap(mustParse(t, "/user/queue/{room}.log"), q); !ok {
		t.Error("queue names hold dots: /user/queue/x.log is both")
	}
	if _, ok := Overlap(mustParse(t, "/app/chat.{room}"), q); ok {
		t.Error("/app and /user overlap")
	}
}
