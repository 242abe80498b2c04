package kvstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/storetest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func startBus(t testing.TB) *natsbus.Bus {
	bus, _ := startBusAt(t)
	return bus
}

// startBusAt is startBus with a client port, for a test that looks at
// the server with a NATS client of its own; it returns the server's URL.
func startBusAt(t testing.TB) (*natsbus.Bus, string) {
	return startPartitioned(t, 1)
}

// startPartitioned is startBusAt with the messages and read positions
// spread over parts partitions.
func startPartitioned(t testing.TB, parts int) (*natsbus.Bus, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := "127.0.0.1:" + strconv.Itoa(port.Free(t))
	bus, err := natsbus.Start(ctx, natsbus.Options{DataDir: t.TempDir(), ServerName: "kvtest", ClientListen: addr, Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	return bus, "nats://" + addr
}

func open(t *testing.T, bus *natsbus.Bus) *Store {
	t.Helper()
	s, err := Open(context.Background(), bus, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestConformance runs the behaviour every backend must show.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store { return open(t, startBus(t)) })
}

// TestConformancePartitioned: with read positions in the buckets of four
// partitions, the store keeps every promise it keeps with one.
func TestConformancePartitioned(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store {
		bus, _ := startPartitioned(t, 4)
		return open(t, bus)
	})
}

// Two stores on one NATS stand for two nodes: each sees the other's
// writes through its watcher, and concurrent read marks only move forward.
func TestTwoNodesConverge(t *testing.T) {
	ctx := context.Background()
	bus := startBus(t)
	a, b := open(t, bus), open(t, bus)
	if _, err := a.Join(ctx, "r", "alice", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	if err := a.CreateRoom(ctx, storage.Room{ID: "made", Name: "Made on a", CreatedBy: "carol", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := uint64(1); i <= 50; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); _, _ = a.MarkRead(ctx, "r", "alice", i) }()
		go func() { defer wg.Done(); _, _ = b.MarkRead(ctx, "r", "alice", 100-i) }()
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pa, _ := a.ReadMark(ctx, "r", "alice")
		pb, _ := b.ReadMark(ctx, "r", "alice")
		ok, _ := b.IsMember(ctx, "r", "alice")
		rm, rerr := b.Room(ctx, "made")
		owner, _, _ := b.Membership(ctx, "made", "carol")
		rooms, _ := b.UserRooms(ctx, "carol")
		if pa == 99 && pb == 99 && ok && rerr == nil && rm.Name == "Made on a" && owner.Role == storage.RoleOwner && len(rooms) == 1 && rooms[0].ID == "made" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("positions %d and %d (want 99), member on b: %v; room on b %+v %v, owner %+v, carol's rooms %v",
				pa, pb, ok, rm, rerr, owner, rooms)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A store opened later loads what exists.
	c := open(t, bus)
	if pos, _ := c.ReadMark(ctx, "r", "alice"); pos != 99 {
		t.Fatalf("new store loaded position %d", pos)
	}
}

// TestOnLeave shows removals are reported once, on the node that made them
// and, through the watcher, on another.
func TestOnLeave(t *testing.T) {
	ctx := context.Background()
	bus := startBus(t)
	here, there := open(t, bus), open(t, bus)
	type ev struct{ room, user string }
	hereC, thereC := make(chan ev, 4), make(chan ev, 4)
	here.OnLeave(func(r, u string) { hereC <- ev{r, u} })
	there.OnLeave(func(r, u string) { thereC <- ev{r, u} })
	if _, err := here.Join(ctx, "r", "alice@example.com", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	// there must have seen the join, or the delete ends nothing it knows.
	deadline := time.Now().Add(10 * time.Second)
	for ok, _ := there.IsMember(ctx, "r", "alice@example.com"); !ok; ok, _ = there.IsMember(ctx, "r", "alice@example.com") {
		if time.Now().After(deadline) {
			t.Fatal("the other store never saw the join")
		}
		time.Sleep(5 * time.Millisecond) // polling the condition itself
	}
	if err := here.Leave(ctx, "r", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	want := ev{"r", "alice@example.com"}
	for name, c := range map[string]chan ev{"here": hereC, "there": thereC} {
		select {
		case got := <-c:
			if got != want {
				t.Fatalf("%s: OnLeave %v, want %v", name, got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no OnLeave", name)
		}
	}
	// Leaving again, and the watcher's echo of the first delete, end nothing.
	if err := here.Leave(ctx, "r", "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := here.Join(ctx, "r", "bob", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	if err := here.Leave(ctx, "r", "bob"); err != nil {
		t.Fatal(err)
	}
	if got := <-hereC; got != (ev{"r", "bob"}) {
		t.Fatalf("here: OnLeave %v, want bob's only", got)
	}
}

// TestReadMarksAlone: the read positions bucket on its own, with no rooms
// or members buckets made.
func TestReadMarksAlone(t *testing.T) {
	ctx := context.Background()
	bus, url := startBusAt(t)
	a, err := OpenReadMarks(ctx, bus, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	pos, rev, err := a.MarkRead(ctx, "r", "alice@example.com", 7)
	if err != nil || pos != 7 || rev == 0 {
		t.Fatalf("MarkRead %d at revision %d: %v", pos, rev, err)
	}
	if pos, again, _ := a.MarkRead(ctx, "r", "alice@example.com", 3); pos != 7 || again != rev {
		t.Fatalf("position moved back to %d (revision %d, was %d)", pos, again, rev)
	}
	b, err := OpenReadMarks(ctx, bus, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if pos, _ := b.ReadMark(ctx, "r", "alice@example.com"); pos != 7 {
		t.Fatalf("another node loaded position %d", pos)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, bucket := range []string{bus.Names().Bucket(RoomsBucket), bus.Names().Bucket(MembersBucket)} {
		if _, err := js.KeyValue(ctx, bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
			t.Fatalf("bucket %s made for read marks alone (lookup: %v)", bucket, err)
		}
	}
}

// TestWorkingSet: a store opened on a deployment reads none of it; a room
// is loaded when first used, kept current by the watches, dropped beyond
// the bound, and loaded again with the same answers, the changes made
// while it was away included.
func TestWorkingSet(t *testing.T) {
	ctx := context.Background()
	bus := startBus(t)
	seed, err := OpenSeeder(ctx, bus, Config{})
	if err != nil {
		t.Fatal(err)
	}
	const rooms, size = 40, 30
	for r := range rooms {
		for u := range size {
			room, user := "room"+strconv.Itoa(r), "user"+strconv.Itoa(r+u)
			if err := seed.Member(ctx, room, user, storage.RoleMember, time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := seed.ReadMark(ctx, room, user, uint64(u)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// 1000 entries hold about 16 of these rooms (61 entries each).
	s, err := Open(ctx, bus, Config{WorkingSet: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if st := s.WorkingSet(); st.Rooms != 0 || st.Entries != 0 || st.Loads != 0 {
		t.Fatalf("a store just opened holds %+v, want nothing", st)
	}
	other := open(t, bus) // another node, writing
	refs := []storage.MessageRef{{ID: 10, Sender: "nobody"}}
	unread := func(r int) int {
		t.Helper()
		n, err := s.Unread(ctx, "room"+strconv.Itoa(r), refs)
		if err != nil {
			t.Fatal(err)
		}
		return n[0]
	}
	// Positions 0..29: 10 members have read below 10.
	if n := unread(0); n != 10 {
		t.Fatalf("unread in room0: %d, want 10", n)
	}
	if st := s.WorkingSet(); st.Rooms != 1 || st.Entries != 2*size {
		t.Fatalf("after one room: %+v, want 1 room of %d entries", st, 2*size)
	}
	// Held: another node's changes reach it.
	if _, err := other.MarkRead(ctx, "room0", "user0", 50); err != nil {
		t.Fatal(err)
	}
	if err := other.Leave(ctx, "room0", "user1"); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "room0 follows the other node", func() error {
		if n := unread(0); n != 8 {
			return fmt.Errorf("unread %d, want 8", n)
		}
		return nil
	})
	for r := range rooms {
		unread(r)
	}
	st := s.WorkingSet()
	if st.Entries > 1000 || st.Evictions == 0 || st.Rooms >= rooms {
		t.Fatalf("after %d rooms: %+v, want at most 1000 entries", rooms, st)
	}
	// A removal from a room dropped from the working set is still told:
	// a subscriber there must end.
	if _, held := s.set.Mark("room0", "user5"); held {
		t.Fatal("room0, used first, is still held")
	}
	left := make(chan [2]string, 4)
	s.OnLeave(func(room, user string) { left <- [2]string{room, user} })
	if err := other.Leave(ctx, "room0", "user5"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-left:
		if got != [2]string{"room0", "user5"} {
			t.Fatalf("OnLeave %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OnLeave for a removal from a room not held")
	}
	// room0 was dropped; changes made meanwhile are read with it.
	if _, err := other.MarkRead(ctx, "room0", "user2", 50); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Join(ctx, "room0", "late", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	loads := s.WorkingSet().Loads
	if n := unread(0); n != 7 {
		t.Fatalf("room0 loaded again: unread %d, want 7 (user2 read on, user5 left, late joined)", n)
	}
	if s.WorkingSet().Loads != loads+1 {
		t.Fatal("room0 was not loaded again")
	}
	ms, err := s.Members(ctx, "room0")
	if err != nil || len(ms) != size-1 {
		t.Fatalf("room0's members %d %v, want %d", len(ms), err, size-1)
	}
	if rooms, err := s.UserRooms(ctx, "late"); err != nil || len(rooms) != 1 || rooms[0].ID != "room0" {
		t.Fatalf("late's rooms %+v %v", rooms, err)
	}
}

// TestLargeRoomLoads: a room of more members than one multi_last read
// answers for is read in pages.
func TestLargeRoomLoads(t *testing.T) {
	ctx := context.Background()
	bus := startBus(t)
	seed, err := OpenSeeder(ctx, bus, Config{})
	if err != nil {
		t.Fatal(err)
	}
	const size = 2500
	for u := range size {
		if err := seed.Member(ctx, "big", "user"+strconv.Itoa(u), storage.RoleMember, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, bus)
	if n, err := s.Others(ctx, "big", "user7"); err != nil || n != size-1 {
		t.Fatalf("Others in a room of %d: %d %v", size, n, err)
	}
}
