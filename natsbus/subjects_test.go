package natsbus

import (
	"strings"
	"testing"
)

func TestValidTokens(t *testing.T) {
	good := []string{"a", "room-1", "R_2", strings.Repeat("x", 64)}
	bad := []string{"", "a.b", "*", ">", "a b", "a\tb", "é", strings.Repeat("x", 65), "a/b"}
	for _, s := range good {
		if !validToken(s) {
			t.Errorf("validToken(%q) = false", s)
		}
	}
	for _, s := range bad {
		if validToken(s) {
			t.Errorf("validToken(%q) = true", s)
		}
	}
	if !validQueue("chat.log") || validQueue("chat..log") || validQueue(".x") || validQueue("x.") ||
		validQueue("a.*") || validQueue(strings.Repeat("a.", 32)+"b") {
		t.Error("validQueue")
	}
}

func TestUserTokenIsOneSafeTokenAndReversible(t *testing.T) {
	for _, u := range []string{"alice", "alice@example.com", "a.b", "*", ">", "=x", "用户", "a b"} {
		tok := UserToken(u)
		if strings.ContainsAny(tok, ".*> \t") {
			t.Errorf("UserToken(%q) = %q is not one safe subject token", u, tok)
		}
		back, ok := UserFromToken(tok)
		if !ok || back != u {
			t.Errorf("UserFromToken(%q) = %q, %v; want %q", tok, back, ok, u)
		}
	}
	if UserToken("alice@example.com") != "=YWxpY2VAZXhhbXBsZS5jb20" {
		t.Errorf("documented example changed: %s", UserToken("alice@example.com"))
	}
	if UserToken("=x") == "=x" {
		t.Error("an id that looks encoded must be encoded itself")
	}
	if s := DefaultNames().User("alice", "chat.log"); s != "chat.user.alice.chat.log" {
		t.Error(s)
	}
	for _, u := range []string{"alice", "a.b", "用户"} {
		k := RoomUserKey("lobby", u)
		if room, user, ok := SplitRoomUserKey(k); !ok || room != "lobby" || user != u {
			t.Errorf("SplitRoomUserKey(%q) = %q, %q, %v", k, room, user, ok)
		}
	}
	if _, _, ok := SplitRoomUserKey("a*b.alice"); ok {
		t.Error("SplitRoomUserKey accepted a room that is no token")
	}
}
