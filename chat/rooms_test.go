package chat_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/storage"
)

// TestUserIDRule: the domain holds every membership it makes to the login
// rule (chat.ValidUserID), whichever adapter asks: adding and removing a
// member, creating a room (its owner), joining on first use in dev mode.
// A refused id is Invalid, the error names the rule, and nothing is stored.
func TestUserIDRule(t *testing.T) {
	for name, open := range map[string]func(*testing.T) backend{"fakes": fakeBackend, "jetstream": jetStreamBackend} {
		t.Run(name, func(t *testing.T) {
			b := open(t)
			s := b.service(t, chat.Config{AutoJoin: true})
			ctx := context.Background()
			if _, err := s.CreateRoom(ctx, "alice", "team", ""); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"", " ", "a b", "a\nb", "a\x00b", "a\u202eb", "a\xffb", strings.Repeat("u", chat.MaxUserIDLen+1)} {
				refused := func(what string, err error) {
					t.Helper()
					if chat.KindOf(err) != chat.Invalid || !strings.Contains(err.Error(), chat.UserIDRule) {
						t.Fatalf("%s for %q: %v, want invalid naming the rule", what, id, err)
					}
				}
				_, err := s.AddMember(ctx, "alice", "team", id, storage.RoleMember)
				refused("AddMember", err)
				refused("RemoveMember", s.RemoveMember(ctx, "alice", "team", id))
				_, err = s.CreateRoom(ctx, id, "new", "")
				refused("CreateRoom", err)
				_, err = s.History(ctx, id, "lobby", 0, 10)
				refused("joining on first use", err)
				if rooms, err := b.store.UserRooms(ctx, id); err != nil || len(rooms) != 0 {
					t.Fatalf("%q is in rooms %v (%v)", id, rooms, err)
				}
			}
			for _, room := range []string{"new", "lobby"} {
				if _, err := b.store.Room(ctx, room); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("room %s made for a refused user: %v", room, err)
				}
			}
			members, err := b.store.Members(ctx, "team")
			if err != nil || len(members) != 1 || members[0].User != "alice" {
				t.Fatalf("members of team: %+v (%v), want alice alone", members, err)
			}
			// Ids the rule takes are taken everywhere.
			if _, err := s.AddMember(ctx, "alice", "team", "zoë", ""); err != nil {
				t.Fatal(err)
			}
			if _, err := s.History(ctx, "x/y?z", "lobby", 0, 10); err != nil {
				t.Fatal(err)
			}
		})
	}
}
