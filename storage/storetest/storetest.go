// Package storetest is the behaviour every storage.Store backend must
// show, run by each backend's own tests against a real instance.
package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/storage"
)

// Open returns a fresh, empty store; the test's cleanup closes it.
type Open func(t *testing.T) storage.Store

// Run runs the conformance tests as subtests of t.
func Run(t *testing.T, open Open) {
	t.Run("Rooms", func(t *testing.T) { testRooms(t, open(t)) })
	t.Run("Memberships", func(t *testing.T) { testMemberships(t, open(t)) })
	t.Run("ReadMarks", func(t *testing.T) { testReadMarks(t, open(t)) })
	t.Run("ConcurrentReadMarks", func(t *testing.T) { testConcurrentReadMarks(t, open(t)) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func users(ms []storage.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.User
	}
	return out
}

func ids(urs []storage.UserRoom) []string {
	out := make([]string, len(urs))
	for i, ur := range urs {
		out[i] = ur.ID
	}
	return out
}

func testRooms(t *testing.T, s storage.Store) {
	c := ctx(t)
	if _, err := s.Room(c, "lobby"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Room of a missing room: %v, want ErrNotFound", err)
	}
	at := time.Date(2026, 11, 22, 10, 0, 0, 123e6, time.UTC)
	if err := s.CreateRoom(c, storage.Room{ID: "lobby", Name: "The Lobby ☕", CreatedBy: "alice@example.com", CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	err := s.CreateRoom(c, storage.Room{ID: "lobby", Name: "again", CreatedBy: "bob", CreatedAt: at})
	if !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second CreateRoom: %v, want ErrExists", err)
	}
	rm, err := s.Room(c, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if rm.ID != "lobby" || rm.Name != "The Lobby ☕" || rm.CreatedBy != "alice@example.com" || !rm.CreatedAt.Equal(at) {
		t.Fatalf("room %+v", rm)
	}
	m, ok, err := s.Membership(c, "lobby", "alice@example.com")
	if err != nil || !ok || m.Role != storage.RoleOwner || m.User != "alice@example.com" {
		t.Fatalf("creator's membership %+v %v %v, want owner", m, ok, err)
	}
	if _, ok, _ := s.Membership(c, "lobby", "bob"); ok {
		t.Fatal("the failed second CreateRoom made bob a member")
	}
	want := []storage.UserRoom{{ID: "lobby", Name: "The Lobby ☕", Role: storage.RoleOwner}}
	if rooms, err := s.UserRooms(c, "alice@example.com"); err != nil || !slices.Equal(rooms, want) {
		t.Fatalf("UserRooms %+v %v, want %+v", rooms, err, want)
	}
}

func testMemberships(t *testing.T, s storage.Store) {
	c := ctx(t)
	for _, u := range []string{"bob", "alice", "alice@example.com"} {
		if added, err := s.Join(c, "r", u, storage.RoleMember); err != nil || !added {
			t.Fatalf("Join %s: %v %v", u, added, err)
		}
	}
	if added, err := s.Join(c, "r", "alice", storage.RoleAdmin); err != nil || added {
		t.Fatalf("second Join: %v %v, want not new", added, err)
	}
	if m, _, _ := s.Membership(c, "r", "alice"); m.Role != storage.RoleMember {
		t.Fatalf("a second Join changed the role to %s", m.Role)
	}
	if added, err := s.Join(c, "r", "dave", storage.RoleAdmin); err != nil || !added {
		t.Fatalf("Join admin: %v %v", added, err)
	}
	ms, err := s.Members(c, "r")
	if err != nil {
		t.Fatal(err)
	}
	if got := users(ms); !slices.Equal(got, []string{"alice", "alice@example.com", "bob", "dave"}) {
		t.Fatalf("members %v", got)
	}
	if ms[3].Role != storage.RoleAdmin || ms[0].JoinedAt.IsZero() {
		t.Fatalf("member record %+v", ms)
	}
	if _, err := s.Join(c, "other", "bob", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	if rooms, _ := s.UserRooms(c, "bob"); !slices.Equal(ids(rooms), []string{"other", "r"}) {
		t.Fatalf("UserRooms(bob) %v", rooms)
	}
	if err := s.Leave(c, "r", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.IsMember(c, "r", "alice@example.com"); ok {
		t.Fatal("still a member after Leave")
	}
	if _, ok, _ := s.Membership(c, "r", "alice@example.com"); ok {
		t.Fatal("Membership after Leave")
	}
	if rooms, _ := s.UserRooms(c, "alice@example.com"); len(rooms) != 0 {
		t.Fatalf("UserRooms after Leave %v", rooms)
	}
	if err := s.Leave(c, "r", "alice@example.com"); err != nil {
		t.Fatalf("leaving twice: %v", err)
	}
	if ok, _ := s.IsMember(c, "nowhere", "bob"); ok {
		t.Fatal("member of a room nobody joined")
	}
	if ms, err := s.Members(c, "nowhere"); err != nil || len(ms) != 0 {
		t.Fatalf("members of nowhere %v %v", ms, err)
	}
}

func testReadMarks(t *testing.T, s storage.Store) {
	c := ctx(t)
	for _, u := range []string{"bob", "alice", "alice@example.com"} {
		if _, err := s.Join(c, "r", u, storage.RoleMember); err != nil {
			t.Fatal(err)
		}
	}
	if pos, err := s.ReadMark(c, "r", "bob"); err != nil || pos != 0 {
		t.Fatalf("fresh ReadMark %d %v", pos, err)
	}
	if pos, err := s.MarkRead(c, "r", "bob", 10); err != nil || pos != 10 {
		t.Fatalf("MarkRead: %d %v", pos, err)
	}
	if pos, _ := s.MarkRead(c, "r", "bob", 5); pos != 10 {
		t.Fatalf("read position moved back to %d", pos)
	}
	if pos, _ := s.ReadMark(c, "r", "bob"); pos != 10 {
		t.Fatalf("ReadMark %d", pos)
	}
	// A room list carries the user's role and read position, and a room
	// without a record (made by joining it) has no name.
	if _, err := s.Join(c, "q", "bob", storage.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	want := []storage.UserRoom{{ID: "q", Role: storage.RoleAdmin}, {ID: "r", Role: storage.RoleMember, Read: 10}}
	if rooms, err := s.UserRooms(c, "bob"); err != nil || !slices.Equal(rooms, want) {
		t.Fatalf("UserRooms(bob) %+v %v, want %+v", rooms, err, want)
	}
	got, err := s.Unread(c, "r", []storage.MessageRef{{ID: 10, Sender: "alice"}, {ID: 11, Sender: "alice"}, {ID: 11, Sender: "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	// id 10: unread by alice@example.com (bob read it, alice sent it); id 11:
	// bob and alice@example.com; id 11 from a non-member: all three.
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("unread %v, want [1 2 3]", got)
	}
	// A new message's unread count, as Others counts it: the same as
	// Unread's for an id above every read position.
	for _, u := range []string{"alice", "bob", "alice@example.com", "carol"} {
		want, _ := s.Unread(c, "r", []storage.MessageRef{{ID: 1 << 62, Sender: u}})
		if n, err := s.Others(c, "r", u); err != nil || n != want[0] {
			t.Fatalf("Others(%s) %d %v, want %d", u, n, err, want[0])
		}
	}
}

// testConcurrentReadMarks: racing marks settle on the highest.
func testConcurrentReadMarks(t *testing.T, s storage.Store) {
	c := ctx(t)
	if _, err := s.Join(c, "r", "alice", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := uint64(1); i <= 50; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := s.MarkRead(c, "r", "alice", i); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := s.MarkRead(c, "r", "alice", 100-i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if pos, _ := s.ReadMark(c, "r", "alice"); pos != 99 {
		t.Fatalf("position %d after racing marks, want 99", pos)
	}
}
