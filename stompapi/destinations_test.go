package stompapi

import (
	"strings"
	"testing"
)

func TestParseDestination(t *testing.T) {
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
		got, err := parseDestination(d)
		if err != nil || got != want {
			t.Errorf("parseDestination(%q) = %v, %v; want %v", d, got, err, want)
		}
	}
	bad := []string{
		"", "/topic/chat.", "/topic/chat.*", "/topic/chat.>", "/topic/chat.a.b", "/topic/chat.a.read.x",
		"/topic/chat.a.", "/topic/chat.a b", "/topic/x", "/queue/x", "/app/chat.a.b", "/app/chat.a.log.x",
		"/app/chat.", "/user/queue/", "/user/queue/a..b", "/user/queue/*", "/user/queue/>", "/user/bob/queue/x",
		"/topic/chat." + strings.Repeat("a", 65), "topic/chat.a", "/TOPIC/chat.a",
	}
	for _, d := range bad {
		if got, err := parseDestination(d); err == nil {
			t.Errorf("parseDestination(%q) = %v, want an error", d, got)
		}
	}
}
