package workingset

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// store is what a Loader reads: rooms by id, counting loads. gate, when
// set, holds each load until it is closed.
type store struct {
	mu    sync.Mutex
	rooms map[string]Snapshot
	loads atomic.Int64
	gate  chan struct{}
	fail  error
}

func newStore() *store { return &store{rooms: map[string]Snapshot{}} }

func (st *store) set(room string, sn Snapshot) {
	st.mu.Lock()
	st.rooms[room] = sn
	st.mu.Unlock()
}

func (st *store) load(ctx context.Context, room string) (Snapshot, error) {
	st.loads.Add(1)
	st.mu.Lock()
	gate, fail := st.gate, st.fail
	st.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return Snapshot{}, ctx.Err()
		}
	}
	if fail != nil {
		return Snapshot{}, fail
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rooms[room], nil
}

func newSet(t *testing.T, st *store, maxEntries int) *Set {
	t.Helper()
	return New(Config{Load: st.load, MaxEntries: maxEntries})
}

// leaves records the OnLeave callbacks.
func leaves(s *Set) func() [][2]string {
	var mu sync.Mutex
	var got [][2]string
	s.OnLeave(func(room, user string) {
		mu.Lock()
		got = append(got, [2]string{room, user})
		mu.Unlock()
	})
	return func() [][2]string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func memberOf(t *testing.T, s *Set, room, user string) (storage.Member, bool) {
	t.Helper()
	m, ok, err := s.Member(context.Background(), room, user)
	if err != nil {
		t.Fatal(err)
	}
	return m, ok
}

func members(t *testing.T, s *Set, room string) []string {
	t.Helper()
	ms, err := s.Members(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	return users(ms)
}

// TestRevisions: with revisions (a KV watcher's events, in any order), an
// older change never rolls back a newer one, and an ended membership
// keeps its revision so that its own late put cannot revive it.
func TestRevisions(t *testing.T) {
	s := newSet(t, newStore(), 0)
	got := leaves(s)
	memberOf(t, s, "r", "ann") // hold r and q, both empty
	memberOf(t, s, "q", "ann")
	s.PutMember("r", plain("ann"), 5)
	s.PutMember("r", storage.Member{User: "ann", Role: storage.RoleAdmin}, 3) // older: ignored
	if mem, _ := memberOf(t, s, "r", "ann"); mem.Role != storage.RoleMember {
		t.Fatalf("an older put replaced a newer one: %+v", mem)
	}
	s.DeleteMember("r", "ann", 7)
	s.PutMember("r", plain("ann"), 6) // the join's late echo
	if _, ok := memberOf(t, s, "r", "ann"); ok {
		t.Fatal("a late put revived a deleted membership")
	}
	s.DeleteMember("r", "ann", 7) // the delete's echo: ends nothing
	s.PutMember("r", plain("ann"), 8)
	if _, ok := memberOf(t, s, "r", "ann"); !ok {
		t.Fatal("a newer put after a delete was refused")
	}
	// A local delete (revision 0) keeps the entry's revision: the
	// watcher's delete, newer, still lands and ends nothing more.
	s.DeleteMember("r", "ann", 0)
	s.PutMember("r", plain("ann"), 8)
	if _, ok := memberOf(t, s, "r", "ann"); ok {
		t.Fatal("a put at the deleted revision revived it")
	}
	s.DeleteMember("r", "ann", 9)
	if want := [][2]string{{"r", "ann"}, {"r", "ann"}}; !slices.Equal(got(), want) {
		t.Fatalf("OnLeave heard %v, want %v", got(), want)
	}
	// A delete seen before its put keeps its revision too.
	s.DeleteMember("q", "bob", 4)
	s.PutMember("q", plain("bob"), 3)
	if _, ok := memberOf(t, s, "q", "bob"); ok {
		t.Fatal("a put older than a delete seen first was applied")
	}
}

// TestUnversioned: without revisions (the PostgreSQL change feed, in
// commit order) every change applies.
func TestUnversioned(t *testing.T) {
	st := newStore()
	st.set("r", Snapshot{Room: &storage.Room{ID: "r", Name: "R"}})
	s := newSet(t, st, 0)
	got := leaves(s)
	memberOf(t, s, "r", "x")
	memberOf(t, s, "s", "x")
	s.PutMember("r", plain("bob"), 0)
	s.PutMember("r", plain("ann"), 0)
	s.PutMember("s", plain("ann"), 0)
	if u := members(t, s, "r"); !slices.Equal(u, []string{"ann", "bob"}) {
		t.Fatalf("members %v", u)
	}
	s.DeleteMember("s", "ann", 0)
	if u := members(t, s, "s"); len(u) != 0 {
		t.Fatalf("members of s after ann left: %v", u)
	}
	s.DeleteRoom("r", 0)
	if _, ok, _ := s.Room(context.Background(), "r"); ok {
		t.Fatal("deleted room still there")
	}
	if len(members(t, s, "r")) != 2 {
		t.Fatal("deleting a room's record dropped its members")
	}
	if want := [][2]string{{"s", "ann"}}; !slices.Equal(got(), want) {
		t.Fatalf("OnLeave heard %v, want %v", got(), want)
	}
}

// TestChangesWhileLoading: changes that arrive while a room loads apply
// after its snapshot, in order, with or without revisions, and callers
// waiting for the load share it.
func TestChangesWhileLoading(t *testing.T) {
	st := newStore()
	st.set("r", Snapshot{Members: []Member{{Member: plain("ann")}, {Member: plain("bob")}}})
	st.gate = make(chan struct{})
	s := newSet(t, st, 0)
	got := leaves(s)
	var wg sync.WaitGroup
	answers := make([]bool, 8)
	for i := range answers {
		wg.Go(func() {
			_, ok, err := s.Member(context.Background(), "r", "cat")
			if err != nil {
				t.Error(err)
			}
			answers[i] = ok
		})
	}
	for s.Stats().Loads == 0 && st.loads.Load() == 0 {
		time.Sleep(time.Millisecond) // the load has begun: it waits at the gate
	}
	// Without revisions, in commit order: bob leaves, cat joins, ann
	// leaves and comes back.
	s.DeleteMember("r", "bob", 0)
	s.PutMember("r", plain("cat"), 0)
	s.DeleteMember("r", "ann", 0)
	s.PutMember("r", plain("ann"), 0)
	close(st.gate)
	wg.Wait()
	for i, ok := range answers {
		if !ok {
			t.Fatalf("caller %d: cat, who joined while the room loaded, is not a member", i)
		}
	}
	if u := members(t, s, "r"); !slices.Equal(u, []string{"ann", "cat"}) {
		t.Fatalf("members %v, want [ann cat]", u)
	}
	if n := st.loads.Load(); n != 1 {
		t.Fatalf("%d loads for 8 callers at once, want 1", n)
	}
	// The set cannot tell, while the room loads, whether a member left:
	// it tells every deletion.
	if want := [][2]string{{"r", "bob"}, {"r", "ann"}}; !slices.Equal(got(), want) {
		t.Fatalf("OnLeave heard %v, want %v", got(), want)
	}
}

// TestRoomsNotHeld: changes to a room the set does not hold are not kept
// (the next load reads them), but every deletion is told, for a
// subscriber there may have to end.
func TestRoomsNotHeld(t *testing.T) {
	st := newStore()
	s := newSet(t, st, 0)
	got := leaves(s)
	s.PutRoom(storage.Room{ID: "r"}, 1)
	s.PutMember("r", plain("ann"), 2)
	s.PutMark("r", "ann", 10, 3)
	if st := s.Stats(); st.Rooms != 0 || st.Entries != 0 {
		t.Fatalf("changes to a room not held were kept: %+v", st)
	}
	s.DeleteMember("r", "bob", 4)
	if want := [][2]string{{"r", "bob"}}; !slices.Equal(got(), want) {
		t.Fatalf("OnLeave heard %v, want %v", got(), want)
	}
	if pos, held := s.Mark("r", "ann"); held || pos != 0 {
		t.Fatalf("Mark of a room not held: %d %v", pos, held)
	}
	st.set("r", Snapshot{Members: []Member{{Member: plain("ann"), Rev: 2}}, Marks: []Mark{{User: "ann", Pos: 10, Rev: 3}}})
	if _, ok := memberOf(t, s, "r", "ann"); !ok {
		t.Fatal("the load missed ann")
	}
	if pos, held := s.Mark("r", "ann"); !held || pos != 10 {
		t.Fatalf("Mark of a held room: %d %v", pos, held)
	}
}

// TestEviction: beyond MaxEntries the least recently used rooms go, and
// a room dropped and loaded again gives the same answers.
func TestEviction(t *testing.T) {
	st := newStore()
	for i := range 10 {
		room := "r" + strconv.Itoa(i)
		var ms []Member
		var marks []Mark
		for u := range 9 {
			user := "u" + strconv.Itoa(u)
			ms = append(ms, Member{Member: plain(user), Rev: uint64(u + 1)})
			marks = append(marks, Mark{User: user, Pos: uint64(u), Rev: uint64(100 + u)})
		}
		st.set(room, Snapshot{Room: &storage.Room{ID: room, Name: "Room " + room}, Members: ms, Marks: marks})
	}
	// Each room weighs 19 entries (itself, 9 members, 9 positions): 60
	// hold three.
	s := newSet(t, st, 60)
	ctx := context.Background()
	refs := []storage.MessageRef{{ID: 5, Sender: "u0"}}
	first := map[string][]int{}
	for i := range 10 {
		room := "r" + strconv.Itoa(i)
		n, err := s.Unread(ctx, room, refs)
		if err != nil {
			t.Fatal(err)
		}
		first[room] = n
		if i == 2 {
			memberOf(t, s, "r0", "u1") // r0 used again: r1 is the oldest
		}
	}
	stats := s.Stats()
	if stats.Rooms != 3 || stats.Entries > 60 || stats.Evictions != 7 {
		t.Fatalf("after 10 rooms in a set of 60 entries: %+v, want 3 rooms and 7 evictions", stats)
	}
	loads := st.loads.Load()
	if _, ok := memberOf(t, s, "r9", "u3"); !ok || st.loads.Load() != loads {
		t.Fatal("the room used last was dropped")
	}
	for room, want := range first {
		got, err := s.Unread(ctx, room, refs)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s loaded again: unread %v %v, want %v", room, got, err, want)
		}
		if rm, ok, _ := s.Room(ctx, room); !ok || rm.Name != "Room "+room {
			t.Fatalf("%s loaded again: record %+v %v", room, rm, ok)
		}
	}
	if want := []int{4}; !slices.Equal(first["r4"], want) {
		t.Fatalf("unread %v, want %v (u1 to u4 below 5; u0 sent it)", first["r4"], want)
	}
}

// TestKeep: a room kept stays whatever the bound, and goes like any once
// released.
func TestKeep(t *testing.T) {
	st := newStore()
	for i := range 10 {
		var ms []Member
		for u := range 9 {
			ms = append(ms, Member{Member: plain("u" + strconv.Itoa(u))})
		}
		st.set("r"+strconv.Itoa(i), Snapshot{Members: ms})
	}
	s := newSet(t, st, 30) // three rooms of 10 entries
	release := s.Keep("r0")
	again := s.Keep("r0")
	for i := range 10 {
		memberOf(t, s, "r"+strconv.Itoa(i), "u1")
	}
	if _, held := s.Mark("r0", "u1"); !held {
		t.Fatal("a kept room was evicted")
	}
	release()
	release() // once only
	for i := 1; i < 10; i++ {
		memberOf(t, s, "r"+strconv.Itoa(i), "u1")
	}
	if _, held := s.Mark("r0", "u1"); !held {
		t.Fatal("a room kept twice, released once, was evicted")
	}
	again()
	memberOf(t, s, "r1", "u1") // a room not loaded: the next load evicts
	if _, held := s.Mark("r0", "u1"); held {
		t.Fatal("a room released, the least recently used, stays beyond the bound")
	}
	if st := s.Stats(); st.Entries > 30 {
		t.Fatalf("after the release: %+v, want within the bound", st)
	}
}

// TestOneLargeRoom: a room larger than the whole bound is still held
// while it is the one in use.
func TestOneLargeRoom(t *testing.T) {
	st := newStore()
	var ms []Member
	for u := range 2000 {
		ms = append(ms, Member{Member: plain("u" + strconv.Itoa(u))})
	}
	st.set("big", Snapshot{Members: ms})
	s := newSet(t, st, 1000)
	if n, err := s.Others(context.Background(), "big", "u1"); err != nil || n != 1999 {
		t.Fatalf("Others %d %v", n, err)
	}
	memberOf(t, s, "big", "u2")
	if n := st.loads.Load(); n != 1 {
		t.Fatalf("%d loads of the one room in use, want 1", n)
	}
}

// TestLoadFails: a failed load is told to its callers, and the next use
// tries again.
func TestLoadFails(t *testing.T) {
	st := newStore()
	st.fail = errors.New("store away")
	s := newSet(t, st, 0)
	if _, _, err := s.Member(context.Background(), "r", "ann"); err == nil || !errors.Is(err, st.fail) {
		t.Fatalf("Member with the store away: %v", err)
	}
	st.mu.Lock()
	st.fail = nil
	st.mu.Unlock()
	st.set("r", Snapshot{Members: []Member{{Member: plain("ann")}}})
	if _, ok := memberOf(t, s, "r", "ann"); !ok {
		t.Fatal("not loaded once the store is back")
	}
}

// TestRefresh: after a change feed's outage, the rooms held are read
// again; memberships that ended meanwhile are told, and changes that
// arrive during the reload are kept.
func TestRefresh(t *testing.T) {
	st := newStore()
	st.set("r", Snapshot{Members: []Member{{Member: plain("ann")}, {Member: plain("bob")}}})
	s := newSet(t, st, 0)
	got := leaves(s)
	memberOf(t, s, "r", "ann")
	// Meanwhile, with the feed down: ann leaves, cat joins.
	st.set("r", Snapshot{Members: []Member{{Member: plain("bob")}, {Member: plain("cat")}}})
	st.gate = make(chan struct{})
	done := make(chan error)
	go func() { done <- s.Refresh(context.Background()) }()
	for st.loads.Load() < 2 {
		time.Sleep(time.Millisecond) // the reload has begun: it waits at the gate
	}
	// While it reloads, the room still answers, and a change lands.
	if _, ok := memberOf(t, s, "r", "ann"); !ok {
		t.Fatal("the room stopped answering while it reloads")
	}
	s.PutMember("r", plain("dan"), 0)
	close(st.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if u := members(t, s, "r"); !slices.Equal(u, []string{"bob", "cat", "dan"}) {
		t.Fatalf("members after Refresh %v, want [bob cat dan]", u)
	}
	if want := [][2]string{{"r", "ann"}}; !slices.Equal(got(), want) {
		t.Fatalf("OnLeave heard %v, want %v", got(), want)
	}
	// A reload that fails keeps what the room held, and says so; the
	// next one tells what ended.
	st.set("r", Snapshot{Members: []Member{{Member: plain("cat")}}})
	st.mu.Lock()
	st.gate, st.fail = nil, errors.New("store away")
	st.mu.Unlock()
	if err := s.Refresh(context.Background()); !errors.Is(err, st.fail) {
		t.Fatalf("Refresh with the store away: %v", err)
	}
	if u := members(t, s, "r"); !slices.Equal(u, []string{"bob", "cat", "dan"}) {
		t.Fatalf("members after a failed Refresh %v, want them kept", u)
	}
	st.mu.Lock()
	st.fail = nil
	st.mu.Unlock()
	if err := s.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := [][2]string{{"r", "ann"}, {"r", "bob"}, {"r", "dan"}}; !slices.Equal(got(), want) {
		t.Fatalf("OnLeave heard %v, want %v", got(), want)
	}
}

// TestUnread counts, per message, the members other than its sender who
// have not read up to it.
func TestUnread(t *testing.T) {
	st := newStore()
	st.set("r", Snapshot{
		Members: []Member{{Member: plain("ann")}, {Member: plain("bob")}, {Member: plain("cat")}, {Member: plain("dan"), Deleted: true}},
		Marks:   []Mark{{User: "ann", Pos: 10}, {User: "bob", Pos: 5}},
	})
	s := newSet(t, st, 0)
	ctx := context.Background()
	got, err := s.Unread(ctx, "r", []storage.MessageRef{{ID: 5, Sender: "ann"}, {ID: 8, Sender: "cat"}, {ID: 11, Sender: "bob"}})
	if want := []int{1, 1, 2}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("unread %v %v, want %v", got, err, want)
	}
	s.PutMark("r", "cat", 20, 0)
	got, _ = s.Unread(ctx, "r", []storage.MessageRef{{ID: 11, Sender: "bob"}})
	if want := []int{1}; !slices.Equal(got, want) {
		t.Fatalf("unread after cat read on %v, want %v", got, want)
	}
	if got, _ := s.Unread(ctx, "none", []storage.MessageRef{{ID: 1}}); !slices.Equal(got, []int{0}) {
		t.Fatalf("unread in an empty room %v", got)
	}
}

// TestRaiseMarks: a room list's read positions, as a store's replica
// answered them, are raised to those the set holds (a position this node
// just wrote), never lowered, and rooms the set does not hold are left
// as read, and not loaded.
func TestRaiseMarks(t *testing.T) {
	st := newStore()
	st.set("held", Snapshot{Members: []Member{{Member: plain("ann")}}, Marks: []Mark{{User: "ann", Pos: 10}}})
	st.set("fresh", Snapshot{Members: []Member{{Member: plain("ann")}}})
	st.set("ahead", Snapshot{Members: []Member{{Member: plain("ann")}}, Marks: []Mark{{User: "ann", Pos: 3}}})
	st.set("away", Snapshot{Members: []Member{{Member: plain("ann")}}, Marks: []Mark{{User: "ann", Pos: 50}}})
	s := newSet(t, st, 0)
	ctx := context.Background()
	for _, r := range []string{"held", "fresh", "ahead"} {
		if _, err := s.Unread(ctx, r, nil); err != nil { // loads it
			t.Fatal(err)
		}
	}
	s.PutMark("fresh", "ann", 7, 0) // written on this node, not yet on the replica
	reads := map[string]uint64{"held": 4, "ahead": 9, "away": 20}
	s.RaiseMarks("ann", []string{"held", "fresh", "ahead", "away"}, reads)
	if want := map[string]uint64{"held": 10, "fresh": 7, "ahead": 9, "away": 20}; !maps.Equal(reads, want) {
		t.Fatalf("raised %v, want %v", reads, want)
	}
	if st := s.Stats(); st.Rooms != 3 {
		t.Fatalf("the set holds %d rooms after raising, want the 3 it had loaded", st.Rooms)
	}
}

// TestOthers: the count of a room's members besides a user follows puts
// (new and repeated), deletes with and without revisions, and late puts a
// tombstone refuses; it equals a walk of Members.
func TestOthers(t *testing.T) {
	s := newSet(t, newStore(), 0)
	check := func(step string) {
		t.Helper()
		for _, u := range []string{"ann", "bob", "cat", "dan", "eve"} {
			want := 0
			for _, mem := range members(t, s, "r") {
				if mem != u {
					want++
				}
			}
			if got, _ := s.Others(context.Background(), "r", u); got != want {
				t.Fatalf("%s: Others(r, %s) %d, want %d", step, u, got, want)
			}
		}
	}
	check("empty")
	s.PutMember("r", plain("ann"), 1)
	s.PutMember("r", plain("bob"), 2)
	s.PutMember("r", plain("bob"), 3) // the same member again
	s.PutMember("r", plain("cat"), 0)
	check("puts")
	s.DeleteMember("r", "bob", 4)
	s.PutMember("r", plain("bob"), 3) // older than the tombstone: refused
	check("delete with a revision")
	s.DeleteMember("r", "cat", 0)
	s.DeleteMember("r", "cat", 0)
	check("delete without")
	s.PutMember("r", plain("bob"), 5)
	check("back")
}

// BenchmarkSendCount: a new message's unread count in a room of 100,000
// members, as Others counts it and as a walk of the members (Unread).
func BenchmarkSendCount(b *testing.B) {
	st := newStore()
	var ms []Member
	for i := range 100_000 {
		ms = append(ms, Member{Member: plain("u" + strconv.Itoa(i))})
	}
	st.set("big", Snapshot{Members: ms})
	s := New(Config{Load: st.load})
	ctx := context.Background()
	b.Run("others", func(b *testing.B) {
		for b.Loop() {
			if n, _ := s.Others(ctx, "big", "u7"); n != 99_999 {
				b.Fatal("wrong count")
			}
		}
	})
	b.Run("walk", func(b *testing.B) {
		refs := []storage.MessageRef{{ID: 1 << 62, Sender: "u7"}}
		for b.Loop() {
			if n, _ := s.Unread(ctx, "big", refs); n[0] != 99_999 {
				b.Fatal("wrong count")
			}
		}
	})
}

// TestStress: loads, evictions, keeps and a feed's changes, all at once
// and racing, against a store with revisions (KV) and without (the
// PostgreSQL feed, in commit order). Once the feed has delivered every
// change, each room answers what the store holds, and the set's count of
// entries is the sum of its rooms'.
func TestStress(t *testing.T) {
	t.Run("revisions", func(t *testing.T) { stress(t, true) })
	t.Run("commit order", func(t *testing.T) { stress(t, false) })
}

func stress(t *testing.T, versioned bool) {
	const rooms, users, writes = 12, 15, 3000
	var mu sync.Mutex
	state := map[string]map[string]Member{} // room -> user -> latest
	var rev uint64
	load := func(ctx context.Context, room string) (Snapshot, error) {
		mu.Lock()
		var sn Snapshot
		for _, m := range state[room] {
			sn.Members = append(sn.Members, m)
		}
		mu.Unlock()
		// A reply on its way while changes go on: they queue behind the load.
		time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
		return sn, nil
	}
	s := New(Config{Load: load, MaxEntries: 40})
	events := make(chan func(), 64)
	done := make(chan struct{})
	go func() { // the watcher: changes in revision order
		defer close(done)
		for ev := range events {
			ev()
		}
	}()
	ctx := context.Background()
	var readers sync.WaitGroup
	stopReading := make(chan struct{})
	for range 3 {
		readers.Go(func() {
			for {
				select {
				case <-stopReading:
					return
				default:
				}
				room := "r" + strconv.Itoa(rand.IntN(rooms))
				switch rand.IntN(4) {
				case 0:
					release := s.Keep(room)
					_, _, _ = s.Member(ctx, room, "u1")
					release()
				case 1:
					_, _ = s.Members(ctx, room)
				case 2:
					_, _ = s.Others(ctx, room, "u2")
				default:
					_, _ = s.Unread(ctx, room, []storage.MessageRef{{ID: 1}})
				}
			}
		})
	}
	for range writes {
		room, user := "r"+strconv.Itoa(rand.IntN(rooms)), "u"+strconv.Itoa(rand.IntN(users))
		del := rand.IntN(3) == 0
		mu.Lock()
		rev++
		r := rev
		if !versioned {
			r = 0
		}
		if state[room] == nil {
			state[room] = map[string]Member{}
		}
		state[room][user] = Member{Member: plain(user), Rev: r, Deleted: del}
		if del && !versioned {
			delete(state[room], user) // a row deleted is gone, revision and all
		}
		// Sent under the store's lock, so that the feed is in commit order.
		if del {
			events <- func() { s.DeleteMember(room, user, r) }
		} else {
			events <- func() { s.PutMember(room, plain(user), r) }
		}
		mu.Unlock()
	}
	close(events)
	<-done
	close(stopReading)
	readers.Wait()
	for i := range rooms {
		room := "r" + strconv.Itoa(i)
		var want []string
		mu.Lock()
		for u, m := range state[room] {
			if !m.Deleted {
				want = append(want, u)
			}
		}
		mu.Unlock()
		slices.Sort(want)
		if got := members(t, s, room); !slices.Equal(got, want) {
			t.Fatalf("%s: members %v, the store holds %v", room, got, want)
		}
	}
	s.mu.Lock()
	sum := 0
	for e := s.lru.Front(); e != nil; e = e.Next() {
		sum += e.Value.(*room).weight()
	}
	size := s.size
	s.mu.Unlock()
	if sum != size {
		t.Fatalf("the set counts %d entries, its rooms hold %d", size, sum)
	}
}
