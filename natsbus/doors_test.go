package natsbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/chatd/chatd/storage"
)

// submit stores data in room and returns its id.
func submit(t *testing.T, c *Committer, room, data string) uint64 {
	t.Helper()
	done := make(chan error, 1)
	var id uint64
	c.Submit(room, []byte(data), "", "", nil, func(seq uint64, err error) { id = seq; done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return id
}

// TestWatchRoom: a watch gets each message stored in its room from then
// on, with the room's previous id; other rooms' stay away; stop ends it.
func TestWatchRoom(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	c := openTestLog(t, bus, DurabilityReplicated).NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	before := submit(t, c, "r", "before the watch")
	type got struct {
		m    storage.Message
		prev uint64
	}
	ch := make(chan got, 16)
	stop, err := bus.WatchRoom("r", func(m storage.Message, prev uint64, _ int) { ch <- got{m, prev} })
	if err != nil {
		t.Fatal(err)
	}
	a := submit(t, c, "r", "a")
	submit(t, c, "other", "elsewhere")
	b := submit(t, c, "r", "b")
	for _, want := range []got{{storage.Message{ID: a, Room: "r", Data: []byte("a")}, before}, {storage.Message{ID: b, Room: "r", Data: []byte("b")}, a}} {
		select {
		case g := <-ch:
			if g.m.ID != want.m.ID || g.m.Room != "r" || string(g.m.Data) != string(want.m.Data) || g.prev != want.prev || g.m.Time.IsZero() {
				t.Fatalf("watch got %+v prev %d, want id %d %q prev %d", g.m, g.prev, want.m.ID, want.m.Data, want.prev)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no live message")
		}
	}
	stop()
	submit(t, c, "r", "after stop")
	select {
	case g := <-ch:
		t.Fatalf("stopped watch got %+v", g.m)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := bus.WatchRoom("a.>", func(storage.Message, uint64, int) {}); err == nil {
		t.Fatal("a watch on a wildcard room was made")
	}
}

// TestWatchRoomMore: more counts the messages waiting behind the one in
// hand, so the last of a burst has 0 (a feed flushes its subscribers and
// probes for losses then).
func TestWatchRoomMore(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	c := openTestLog(t, bus, DurabilityReplicated).NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	hold := make(chan struct{})
	mores := make(chan int, 16)
	stop, err := bus.WatchRoom("r", func(_ storage.Message, _ uint64, more int) {
		<-hold
		mores <- more
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	const n = 5
	// The first callback holds; the other four wait behind it. A second
	// watch on the same connection shows when all have arrived.
	seen := make(chan struct{}, n)
	stop2, err := bus.WatchRoom("r", func(storage.Message, uint64, int) { seen <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	for i := range n {
		submit(t, c, "r", strconv.Itoa(i))
	}
	for range n {
		select {
		case <-seen:
		case <-time.After(10 * time.Second):
			t.Fatal("the burst never arrived")
		}
	}
	time.Sleep(50 * time.Millisecond) // the held watch's copies come in the same reads
	close(hold)
	for i := range n {
		select {
		case got := <-mores:
			// The rest queued while the first was held (which may have
			// come alone or with some of them).
			want := n - 1 - i
			if i == 0 && got < want {
				want = got
			}
			if got != want {
				t.Fatalf("message %d of the burst: more %d, want %d", i, got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d never came", i)
		}
	}
}

// TestWatchUserAndReads: events reach the watchers of their user queue or
// room with their content type, and nobody else; names that are no
// subject tokens are refused.
func TestWatchUserAndReads(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	var mu sync.Mutex
	got := map[string][]string{}
	rec := func(who string) func([]byte, string) {
		return func(body []byte, ct string) {
			mu.Lock()
			got[who] = append(got[who], string(body)+" "+ct)
			mu.Unlock()
		}
	}
	for _, watch := range map[string]func() (func(), error){
		"ann":        func() (func(), error) { return bus.WatchUser("ann@example.com", "chat.log", rec("ann")) },
		"ann-other":  func() (func(), error) { return bus.WatchUser("ann@example.com", "inbox", rec("ann-other")) },
		"bob":        func() (func(), error) { return bus.WatchUser("bob", "chat.log", rec("bob")) },
		"reads-r":    func() (func(), error) { return bus.WatchReads("r", rec("reads-r")) },
		"reads-else": func() (func(), error) { return bus.WatchReads("s", rec("reads-else")) },
	} {
		stop, err := watch()
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	if err := bus.PublishUser("ann@example.com", "chat.log", "application/json", []byte("[]")); err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishReads("r", "application/json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := bus.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got["ann"]) + len(got["reads-r"])
		mu.Unlock()
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got["ann"], []string{"[] application/json"}) || !slices.Equal(got["reads-r"], []string{"{} application/json"}) ||
		len(got["ann-other"])+len(got["bob"])+len(got["reads-else"]) != 0 {
		t.Fatalf("events went %v", got)
	}
	for _, err := range []error{
		bus.PublishUser("ann", "a.*", "", nil),
		bus.PublishReads("r.>", "", nil),
		func() error { _, err := bus.WatchUser("ann", "", func([]byte, string) {}); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "not a subject") {
			t.Fatalf("a name that is no subject was taken: %v", err)
		}
	}
}

// TestBucket: create, update and delete with their conflicts; reads of
// one key, of many, and of every key under a prefix, deletions included;
// a watch that follows changes from its start; and a swapped index that
// JetStream keeps of the bucket.
func TestBucket(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := bus.OpenBucket(ctx, "TEST_BUCKET", "doors test", 1)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := k.Create(ctx, "r.a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Create(ctx, "r.a", []byte("2")); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := k.Update(ctx, "r.a", []byte("2"), rev+100); !errors.Is(err, ErrRevisionChanged) {
		t.Fatalf("update at a wrong revision: %v", err)
	}
	rev2, err := k.Update(ctx, "r.a", []byte("2"), rev)
	if err != nil || rev2 <= rev {
		t.Fatalf("update: %d %v", rev2, err)
	}
	if e, err := k.Get(ctx, "r.a"); err != nil || string(e.Value) != "2" || e.Revision != rev2 {
		t.Fatalf("get: %+v %v", e, err)
	}
	if _, err := k.Get(ctx, "none"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("get of a missing key: %v", err)
	}
	// The index, made while the bucket holds a key: it starts with it.
	idx, err := bus.OpenSwappedBucket(ctx, "TEST_INDEX", "doors test index", k, 1)
	if err != nil {
		t.Fatal(err)
	}
	if es, err := idx.Under(ctx, "a"); err != nil || len(es) != 1 || es[0].Key != "a.r" || string(es[0].Value) != "2" {
		t.Fatalf("the new index holds %+v %v, want a.r", es, err)
	}
	var mu sync.Mutex
	var seen []Entry
	stop, err := k.WatchUpdates(ctx, func(e Entry) {
		mu.Lock()
		seen = append(seen, e)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, key := range []string{"r.b", "q.a"} {
		if _, err := k.Create(ctx, key, []byte(key)); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Delete(ctx, "r.a", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx, "r.a"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	es, err := k.Under(ctx, "r")
	if err != nil || len(es) != 2 || es[0].Key != "r.b" || es[1].Key != "r.a" || !es[1].Deleted || es[0].Deleted {
		t.Fatalf("under r: %+v %v, want r.b, then r.a deleted", es, err)
	}
	es, err = k.GetMany(ctx, []string{"q.a", "r.a", "none.x"})
	if err != nil || len(es) != 2 {
		t.Fatalf("get many: %+v %v", es, err)
	}
	for _, e := range es {
		if e.Key == "r.a" != e.Deleted || e.Key == "q.a" && string(e.Value) != "q.a" {
			t.Fatalf("get many: %+v", es)
		}
	}
	wait.Until(t, "the watch sees the changes after its start", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != 3 || seen[0].Key != "r.b" || seen[1].Key != "q.a" || !seen[2].Deleted || seen[2].Key != "r.a" {
			return fmt.Errorf("watch saw %+v", seen)
		}
		return nil
	})
	// The index follows: r.a's deletion, and a.q.
	if err := idx.Indexed(ctx, "a.r", false); err != nil {
		t.Fatal(err)
	}
	if err := idx.Indexed(ctx, "a.q", true); err != nil {
		t.Fatal(err)
	}
	if es, err := idx.Under(ctx, "a"); err != nil || len(es) != 2 {
		t.Fatalf("index under a: %+v %v, want a.r deleted and a.q", es, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer wcancel()
	if err := idx.Indexed(wctx, "a.none", true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting for a key nobody writes: %v", err)
	}
}

// TestConsumer: a durable consumer hands out every message, from the
// first, with its id, room and time; its backlog counts what is not yet
// acknowledged.
func TestConsumer(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	log := openTestLog(t, bus, DurabilityReplicated)
	c := log.NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	var ids []uint64
	for _, room := range []string{"r", "s", "r"} {
		ids = append(ids, submit(t, c, room, "in "+room))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := log.Consumer(ctx, ConsumerConfig{Name: "doors-test", AckWait: 5 * time.Second, MaxAckPending: 100})
	if err != nil {
		t.Fatal(err)
	}
	if pending, oldest, err := cons.Backlog(ctx); err != nil || pending != 3 || oldest.IsZero() {
		t.Fatalf("backlog before: %d %v %v", pending, oldest, err)
	}
	var got []Delivery
	for len(got) < 3 && ctx.Err() == nil {
		batch, err := cons.Fetch(ctx, 10, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, batch...)
	}
	for i, d := range got {
		if d.ID != ids[i] || string(d.Data) != "in "+d.Room || d.Time.IsZero() {
			t.Fatalf("delivery %d: %+v", i, d.Message)
		}
		d.Ack()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pending, _, err := cons.Backlog(ctx)
		if err == nil && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog after acks: %d %v", pending, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
