package mirror

import (
	"slices"
	"strconv"
	"testing"

	"github.com/chatd/chatd/storage"
)

func plain(user string) storage.Member { return storage.Member{User: user, Role: storage.RoleMember} }

func users(ms []storage.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.User)
	}
	return out
}

// leaves records the OnLeave callbacks.
func leaves(m *Mirror) *[][2]string {
	var got [][2]string
	m.OnLeave(func(room, user string) { got = append(got, [2]string{room, user}) })
	return &got
}

// TestRevisions: with revisions (a KV watcher's events, in any order), an
// older change never rolls back a newer one, and an ended membership
// keeps its revision so that its own late put cannot revive it.
func TestRevisions(t *testing.T) {
	m := New()
	got := leaves(m)
	m.PutMember("r", plain("ann"), 5)
	m.PutMember("r", storage.Member{User: "ann", Role: storage.RoleAdmin}, 3) // older: ignored
	if mem, _ := m.Member("r", "ann"); mem.Role != storage.RoleMember {
		t.Fatalf("an older put replaced a newer one: %+v", mem)
	}
	if !m.DeleteMember("r", "ann", 7) {
		t.Fatal("delete of a member ended nothing")
	}
	m.PutMember("r", plain("ann"), 6) // the join's late echo
	if _, ok := m.Member("r", "ann"); ok {
		t.Fatal("a late put revived a deleted membership")
	}
	if m.DeleteMember("r", "ann", 7) {
		t.Fatal("the delete's echo ended the membership twice")
	}
	m.PutMember("r", plain("ann"), 8) // a new join
	if _, ok := m.Member("r", "ann"); !ok {
		t.Fatal("a newer put after a delete was refused")
	}
	// A local delete (revision 0) keeps the entry's revision: the
	// watcher's delete, newer, still lands and ends nothing more.
	if !m.DeleteMember("r", "ann", 0) {
		t.Fatal("local delete ended nothing")
	}
	m.PutMember("r", plain("ann"), 8)
	if _, ok := m.Member("r", "ann"); ok {
		t.Fatal("a put at the deleted revision revived it")
	}
	if m.DeleteMember("r", "ann", 9) {
		t.Fatal("the watcher's delete ended the membership again")
	}
	if want := [][2]string{{"r", "ann"}, {"r", "ann"}}; !slices.Equal(*got, want) {
		t.Fatalf("OnLeave heard %v, want %v", *got, want)
	}
	// A delete seen before its put keeps its revision too.
	m.DeleteMember("q", "bob", 4)
	m.PutMember("q", plain("bob"), 3)
	if _, ok := m.Member("q", "bob"); ok {
		t.Fatal("a put older than a delete seen first was applied")
	}
}

// TestUnversioned: without revisions (the PostgreSQL change feed, in
// commit order) every change applies, and ended memberships are forgotten.
func TestUnversioned(t *testing.T) {
	m := New()
	got := leaves(m)
	m.PutRoom(storage.Room{ID: "r", Name: "R"}, 0)
	m.PutMember("r", plain("bob"), 0)
	m.PutMember("r", plain("ann"), 0)
	m.PutMember("s", plain("ann"), 0)
	if u := users(m.Members("r")); !slices.Equal(u, []string{"ann", "bob"}) {
		t.Fatalf("members %v", u)
	}
	if rs := m.UserRooms("ann"); !slices.Equal(rs, []string{"r", "s"}) {
		t.Fatalf("ann's rooms %v", rs)
	}
	m.DeleteMember("s", "ann", 0)
	if rs := m.UserRooms("ann"); !slices.Equal(rs, []string{"r"}) {
		t.Fatalf("ann's rooms after leaving s: %v", rs)
	}
	if _, ok := m.rooms["s"]; ok {
		t.Fatal("a room with neither record nor members is kept")
	}
	m.DeleteRoom("r", 0)
	if _, ok := m.Room("r"); ok {
		t.Fatal("deleted room still there")
	}
	if len(m.Members("r")) != 2 {
		t.Fatal("deleting a room's record dropped its members")
	}
	if want := [][2]string{{"s", "ann"}}; !slices.Equal(*got, want) {
		t.Fatalf("OnLeave heard %v, want %v", *got, want)
	}
}

// TestReplace: a snapshot replaces everything, and the memberships it
// lacks are told to OnLeave.
func TestReplace(t *testing.T) {
	m := New()
	got := leaves(m)
	m.PutMember("r", plain("ann"), 0)
	m.PutMember("r", plain("bob"), 0)
	m.Replace([]storage.Room{{ID: "r", Name: "R"}}, []Membership{{Room: "r", Member: plain("bob")}, {Room: "t", Member: plain("cat")}})
	if u := users(m.Members("r")); !slices.Equal(u, []string{"bob"}) {
		t.Fatalf("members after Replace %v", u)
	}
	if rm, ok := m.Room("r"); !ok || rm.Name != "R" {
		t.Fatal("room record lost")
	}
	if rs := m.UserRooms("cat"); !slices.Equal(rs, []string{"t"}) {
		t.Fatalf("cat's rooms %v", rs)
	}
	if want := [][2]string{{"r", "ann"}}; !slices.Equal(*got, want) {
		t.Fatalf("OnLeave heard %v, want %v", *got, want)
	}
}

// TestUnread counts, per message, the members other than its sender who
// have not read up to it.
func TestUnread(t *testing.T) {
	m := New()
	for _, u := range []string{"ann", "bob", "cat"} {
		m.PutMember("r", plain(u), 0)
	}
	pos := map[string]uint64{"ann": 10, "bob": 5}
	got := m.Unread("r", []storage.MessageRef{{ID: 5, Sender: "ann"}, {ID: 8, Sender: "cat"}, {ID: 11, Sender: "bob"}}, func(u string) uint64 { return pos[u] })
	if want := []int{1, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("unread %v, want %v", got, want)
	}
	if got := m.Unread("none", []storage.MessageRef{{ID: 1}}, func(string) uint64 { return 0 }); !slices.Equal(got, []int{0}) {
		t.Fatalf("unread in an unknown room %v", got)
	}
}

// TestOthers: the count of a room's members besides a user follows puts
// (new and repeated), deletes with and without revisions, late puts a
// tombstone refuses, and Replace; it equals a walk of Members.
func TestOthers(t *testing.T) {
	m := New()
	check := func(step string) {
		t.Helper()
		for _, u := range []string{"ann", "bob", "cat", "dan", "eve"} {
			want := 0
			for _, mem := range m.Members("r") {
				if mem.User != u {
					want++
				}
			}
			if got := m.Others("r", u); got != want {
				t.Fatalf("%s: Others(r, %s) %d, want %d", step, u, got, want)
			}
		}
	}
	check("empty")
	m.PutMember("r", plain("ann"), 1)
	m.PutMember("r", plain("bob"), 2)
	m.PutMember("r", plain("bob"), 3) // the same member again
	m.PutMember("r", plain("cat"), 0)
	check("puts")
	m.DeleteMember("r", "bob", 4)
	m.PutMember("r", plain("bob"), 3) // older than the tombstone: refused
	check("delete with a revision")
	m.DeleteMember("r", "cat", 0)
	m.DeleteMember("r", "cat", 0)
	check("delete without")
	m.PutMember("r", plain("bob"), 5)
	check("back")
	m.Replace(nil, []Membership{{Room: "r", Member: plain("dan")}, {Room: "r", Member: plain("eve")}, {Room: "r", Member: plain("dan")}})
	check("replace")
	if got := m.Others("none", "ann"); got != 0 {
		t.Fatalf("Others in an unknown room %d", got)
	}
}

// BenchmarkSendCount: a new message's unread count in a room of 100,000
// members, as Others counts it and as a walk of the members (Unread).
func BenchmarkSendCount(b *testing.B) {
	m := New()
	for i := range 100_000 {
		m.PutMember("big", plain("u"+strconv.Itoa(i)), 0)
	}
	b.Run("others", func(b *testing.B) {
		for b.Loop() {
			if m.Others("big", "u7") != 99_999 {
				b.Fatal("wrong count")
			}
		}
	})
	b.Run("walk", func(b *testing.B) {
		refs := []storage.MessageRef{{ID: 1 << 62, Sender: "u7"}}
		for b.Loop() {
			if m.Unread("big", refs, func(string) uint64 { return 0 })[0] != 99_999 {
				b.Fatal("wrong count")
			}
		}
	})
}
