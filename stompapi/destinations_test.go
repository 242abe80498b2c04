package stompapi

import (
	"strings"
	"testing"

	"github.com/chatd/chatd/stompapi/dest"
)

func TestRouteDefaults(t *testing.T) {
	h := New(nil, nil, DefaultDestinations(), nil)
	good := map[string]destination{
		"/topic/chat.r1":                         {destRoom, "r1"},
		"/topic/chat.r1.read":                    {destRoomReads, "r1"},
		"/app/chat.r1":                           {destPost, "r1"},
		"/app/chat.r1.log":                       {destLog, "r1"},
		"/app/chat.r1.read":                      {destMarkRead, "r1"},
		"/user/queue/chat.log":                   {destUserQueue, "chat.log"},
		"/user/queue/notices":                    {destUserQueue, "notices"},
		"/topic/chat." + strings.Repeat("a", 64): {destRoom, strings.Repeat("a", 64)},
	}
	for d, want := range good {
		got, err := h.route(d)
		if err != nil || got != want {
			t.Errorf("route(%q) = %v, %v; want %v", d, got, err, want)
		}
	}
	bad := []string{
		"", "/topic/chat.", "/topic/chat.*", "/topic/chat.>", "/topic/chat.a.b", "/topic/chat.a.read.x",
		"/topic/chat.a.", "/topic/chat.a b", "/topic/x", "/queue/x", "/app/chat.a.b", "/app/chat.a.log.x",
		"/app/chat.", "/user/queue/", "/user/queue/a..b", "/user/queue/*", "/user/queue/>", "/user/bob/queue/x",
		"/topic/chat." + strings.Repeat("a", 65), "topic/chat.a", "/TOPIC/chat.a",
	}
	for _, d := range bad {
		if got, err := h.route(d); err == nil {
			t.Errorf("route(%q) = %v, want an error", d, got)
		}
	}
}

// TestRouteSpring: the conventions of Spring apps, with "/" separators
// and numeric room ids.
func TestRouteSpring(t *testing.T) {
	p := func(s string) dest.Template {
		tp, err := dest.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	q, _ := dest.Queue("/user")
	h := New(nil, nil, dest.Set{
		Send: p("/pub/chat/send/{room}"), History: p("/pub/chat/log/{room}"), Read: p("/pub/chat/read/{room}"),
		Room: p("/sub/chat/{room}"), ReadEvents: p("/sub/chat/{room}/read"), Queue: q, HistoryReply: "history",
	}, nil)
	for d, want := range map[string]destination{
		"/pub/chat/send/7":    {destPost, "7"},
		"/sub/chat/7":         {destRoom, "7"},
		"/sub/chat/7/read":    {destRoomReads, "7"},
		"/pub/chat/log/room1": {destLog, "room1"},
	} {
		if got, err := h.route(d); err != nil || got != want {
			t.Errorf("route(%q) = %v, %v; want %v", d, got, err, want)
		}
	}
	for _, d := range []string{"/pub/chat/send/7/x", "/sub/chat/7/8", "/sub/chat/*", "/app/chat.7", "/topic/chat.7"} {
		if got, err := h.route(d); err == nil {
			t.Errorf("route(%q) = %v, want an error", d, got)
		} else if !strings.Contains(err.Detail, "/pub/chat/send/{room}") {
			t.Errorf("route(%q): the ERROR does not say what is served: %q", d, err.Detail)
		}
	}
}
