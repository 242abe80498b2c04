package kvstore

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/storetest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func startBus(t *testing.T) *natsbus.Bus {
	bus, _ := startBusAt(t)
	return bus
}

// startBusAt is startBus with a client port, for a test that looks at
// the server with a NATS client of its own; it returns the server's URL.
func startBusAt(t *testing.T) (*natsbus.Bus, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := "127.0.0.1:" + strconv.Itoa(port.Free(t))
	bus, err := natsbus.Start(ctx, natsbus.Options{DataDir: t.TempDir(), ServerName: "kvtest", ClientListen: addr})
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
		if pa == 99 && pb == 99 && ok && rerr == nil && rm.Name == "Made on a" && owner.Role == storage.RoleOwner && slices.Equal(rooms, []string{"made"}) {
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

// TestReadMarksAlone: the read positions bucket on its own, mirrored like
// the whole store's, with no rooms or members buckets made.
func TestReadMarksAlone(t *testing.T) {
	ctx := context.Background()
	bus, url := startBusAt(t)
	a, err := OpenReadMarks(ctx, bus, Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	if pos, err := a.MarkRead(ctx, "r", "alice@example.com", 7); err != nil || pos != 7 {
		t.Fatalf("MarkRead %d %v", pos, err)
	}
	if pos, _ := a.MarkRead(ctx, "r", "alice@example.com", 3); pos != 7 {
		t.Fatalf("position moved back to %d", pos)
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
