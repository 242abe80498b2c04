package natsbus

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go/jetstream"
)

func startPartitioned(t *testing.T, dir string, parts int, d Durability) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := Start(ctx, Options{DataDir: dir, ServerName: "parttest", Durability: d, Partitions: parts, Logger: testlog.New()})
	if err != nil {
		t.Fatalf("start with %d partitions: %v", parts, err)
	}
	return bus
}

func openLog(bus *Bus, d Durability) (*MessageLog, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return bus.OpenMessageLog(ctx, LogConfig{Replicas: 1, DuplicateWindow: time.Minute, MaxMsgSize: 1024, Durability: d})
}

// submitAll stores n messages in each room, all submitted at once, and
// returns each room's ids in the order its messages were submitted.
func submitAll(t *testing.T, c *Committer, rooms []string, n int) map[string][]uint64 {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	ids := map[string][]uint64{}
	for i := range n {
		for _, room := range rooms {
			wg.Add(1)
			c.Submit(room, fmt.Appendf(nil, `{"n":%d}`, i), "", "", nil, func(id uint64, err error) {
				defer wg.Done()
				if err != nil {
					t.Errorf("room %s message %d: %v", room, i, err)
					return
				}
				mu.Lock()
				ids[room] = append(ids[room], id)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return ids
}

// TestPartitions: with four partitions every room's messages are in the
// stream its partition names, as a NATS subject mapping's partition()
// computes it, and every read of the log (history, newest, bounds,
// counts, room lists, live watches, the archive's consumer) finds them
// there, per room.
func TestPartitions(t *testing.T) {
	for _, d := range []Durability{DurabilityFsync, DurabilityReplicated} {
		t.Run(string(d), func(t *testing.T) { testPartitions(t, d) })
	}
}

func testPartitions(t *testing.T, d Durability) {
	const parts, perRoom = 4, 3
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus := startPartitioned(t, t.TempDir(), parts, d)
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	l, err := openLog(bus, d)
	if err != nil {
		t.Fatal(err)
	}
	c := l.NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	var rooms []string
	used := map[int]bool{}
	for i := range 40 {
		room := fmt.Sprintf("room-%d", i)
		rooms = append(rooms, room)
		used[bus.names.Partition(room)] = true
	}
	if len(used) != parts {
		t.Fatalf("40 rooms fell in partitions %v: want all %d used", used, parts)
	}

	// Watches see each room's messages with the room's previous id.
	type seen struct {
		m    storage.Message
		prev uint64
	}
	live := make(chan seen, 1000)
	for _, room := range rooms[:8] {
		stop, err := bus.WatchRoom(room, func(m storage.Message, prev uint64, _ int) { live <- seen{m, prev} })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}

	ids := submitAll(t, c, rooms, perRoom)
	for _, room := range rooms {
		got := ids[room]
		if len(got) != perRoom || !slices.IsSorted(got) {
			t.Fatalf("room %s: ids %v, want %d rising", room, got, perRoom)
		}
		p := bus.names.Partition(room)
		info, err := l.parts[p].stream.Info(ctx, jetstream.WithSubjectFilter(bus.names.Room(room)))
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Subjects[bus.names.Room(room)]; n != perRoom {
			t.Fatalf("room %s: stream %s holds %d of its messages, want %d", room, l.parts[p].name, n, perRoom)
		}
		msgs, err := l.After(ctx, room, 0, 10)
		if err != nil || len(msgs) != perRoom {
			t.Fatalf("room %s: After: %d messages, %v", room, len(msgs), err)
		}
		for i, m := range msgs {
			if m.ID != got[i] || m.Room != room {
				t.Fatalf("room %s: After gave %d of %s, stored %d", room, m.ID, m.Room, got[i])
			}
		}
		last, err := l.LastID(ctx, room)
		if err != nil || last != got[perRoom-1] {
			t.Fatalf("room %s: LastID %d %v, want %d", room, last, err, got[perRoom-1])
		}
		page, err := l.Page(ctx, room, 0, 2)
		if err != nil || len(page) != 2 || page[0].ID != got[1] || page[1].ID != got[2] {
			t.Fatalf("room %s: newest page %+v %v", room, page, err)
		}
		st, err := l.State(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		if st.Epoch != l.parts[p].epoch || st.First > got[0] || st.Last < got[perRoom-1] {
			t.Fatalf("room %s: state %+v, ids %v, partition epoch %d", room, st, got, l.parts[p].epoch)
		}
		if n, err := l.RoomCount(ctx, room); err != nil || n != perRoom {
			t.Fatalf("room %s: RoomCount %d %v", room, n, err)
		}
	}
	marks := make([]storage.RoomMark, len(rooms))
	for i, room := range rooms {
		marks[i] = storage.RoomMark{Room: room, Read: ids[room][0]}
	}
	tails, err := l.RoomTails(ctx, marks)
	if err != nil {
		t.Fatal(err)
	}
	for i, tl := range tails {
		if tl.Latest == nil || tl.Latest.Room != rooms[i] || tl.Latest.ID != ids[rooms[i]][perRoom-1] || tl.Unread != perRoom-1 {
			t.Fatalf("room %s: tail %+v, want newest %d and %d unread", rooms[i], tl, ids[rooms[i]][perRoom-1], perRoom-1)
		}
	}
	prevs := map[string]uint64{}
	for range 8 * perRoom {
		var s seen
		select {
		case s = <-live:
		case <-ctx.Done():
			t.Fatal("live messages missing")
		}
		if s.prev != prevs[s.m.Room] {
			t.Fatalf("room %s: message %d came with prev %d, want %d", s.m.Room, s.m.ID, s.prev, prevs[s.m.Room])
		}
		prevs[s.m.Room] = s.m.ID
	}

	// A backend publishing to chat.msg.<room>, as with one partition,
	// reaches the partition chatd computes, through the server's mapping.
	for _, room := range rooms {
		ack, err := bus.js.Publish(ctx, bus.names.prefix+".msg."+room, []byte(`{"backend":true}`))
		if err != nil {
			t.Fatalf("backend publish to %s: %v", room, err)
		}
		if want := bus.names.MessagesStream(bus.names.Partition(room)); ack.Stream != want {
			t.Fatalf("room %s: the mapping stored it in %s, chatd reads it from %s", room, ack.Stream, want)
		}
	}

	// The archive's consumer gets every message of every partition once.
	cons, err := l.Consumer(ctx, ConsumerConfig{Name: "parttest", AckWait: 10 * time.Second, MaxAckPending: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := len(rooms) * (perRoom + 1)
	if pending, _, err := cons.Backlog(ctx); err != nil || pending != uint64(want) {
		t.Fatalf("backlog %d %v, want %d", pending, err, want)
	}
	type key struct {
		room string
		id   uint64
	}
	got := map[key]bool{}
	for len(got) < want {
		batch, err := cons.Fetch(ctx, 50, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			t.Fatalf("fetched %d of %d messages, then none", len(got), want)
		}
		for _, dl := range batch {
			k := key{dl.Room, dl.ID}
			if got[k] || dl.Room == "" {
				t.Fatalf("delivered twice or without a room: %+v", k)
			}
			got[k] = true
			dl.Ack()
		}
	}
	waitUntil(t, "the acknowledgements", func() bool {
		pending, _, err := cons.Backlog(ctx)
		return err == nil && pending == 0
	})
	// Each partition's ack floor is its newest message, and a room's
	// state is its partition's.
	states, err := cons.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, st := range states.All() {
		info, err := l.parts[p].stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Stream != l.parts[p].name || !st.Acked || st.AckFloor != info.State.LastSeq {
			t.Fatalf("partition %d: %+v, want %s acknowledged up to %d", p, st, l.parts[p].name, info.State.LastSeq)
		}
	}
	for _, r := range rooms {
		st := states.Of(r)
		if got, want := st.Stream, l.parts[bus.names.Partition(r)].name; got != want {
			t.Fatalf("room %s: state of %s, want %s", r, got, want)
		}
		// The message at the floor is its partition's newest.
		m, err := cons.FloorMessage(ctx, st)
		if err != nil || m == nil || m.ID != st.AckFloor || bus.names.Partition(m.Room) != bus.names.Partition(r) {
			t.Fatalf("room %s: message at the floor %d: %+v %v", r, st.AckFloor, m, err)
		}
	}
	// Made again, a partition's consumer has acknowledged nothing (no
	// message at its floor), and delivers its stream from the first
	// message; the others are as they were.
	remade := bus.names.Partition(rooms[1])
	if err := cons.Remake(ctx, l.parts[remade].name); err != nil {
		t.Fatal(err)
	}
	after, err := cons.States(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for p, st := range after.All() {
		was := states.All()[p]
		if p == remade {
			if m, err := cons.FloorMessage(ctx, st); st.Acked || st.AckFloor >= was.AckFloor || m != nil || err != nil {
				t.Fatalf("remade partition %d: %+v (floor message %v, %v), was %+v", p, st, m, err, was)
			}
		} else if st != was {
			t.Fatalf("partition %d changed with another remade: %+v, was %+v", p, st, was)
		}
	}
	redelivered, err := cons.Fetch(ctx, 1000, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	inPart := 0
	for _, r := range rooms {
		if bus.names.Partition(r) == remade {
			inPart++
		}
	}
	if len(redelivered) != inPart*(perRoom+1) {
		t.Fatalf("the remade consumer gave %d messages, want its partition's %d", len(redelivered), inPart*(perRoom+1))
	}
	for _, dl := range redelivered {
		if bus.names.Partition(dl.Room) != remade {
			t.Fatalf("a message of %s from another partition's consumer", dl.Room)
		}
		dl.Ack()
	}
	if err := cons.Remake(ctx, "NO_SUCH_STREAM"); err == nil {
		t.Fatal("remade the consumer of a stream that is not the log's")
	}

	// One partition's consumer gone: the others' messages still come,
	// with an error naming it, and Ensure makes it again.
	lost := bus.names.Partition(rooms[0])
	if err := bus.js.DeleteConsumer(ctx, l.parts[lost].name, "parttest"); err != nil {
		t.Fatal(err)
	}
	submitAll(t, c, rooms, 1)
	batch, err := cons.Fetch(ctx, 100, time.Second)
	if err == nil || !strings.Contains(err.Error(), l.parts[lost].name) {
		t.Fatalf("fetch with %s's consumer gone: %v", l.parts[lost].name, err)
	}
	others := 0
	for _, r := range rooms {
		if bus.names.Partition(r) != lost {
			others++
		}
	}
	if len(batch) != others {
		t.Fatalf("fetch with a partition's consumer gone gave %d messages, want the other partitions' %d", len(batch), others)
	}
	for _, dl := range batch {
		if bus.names.Partition(dl.Room) == lost {
			t.Fatalf("a message of %s from a consumer that is gone", dl.Room)
		}
		dl.Ack()
	}
	if err := cons.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	// Made again, it starts from its stream's first message.
	again, err := cons.Fetch(ctx, 1000, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := (len(rooms) - others) * (perRoom + 2); len(again) != want {
		t.Fatalf("the consumer made again gave %d messages, want its partition's %d", len(again), want)
	}
}

// TestPartitionCountIsFixed: a node started with another partition count
// than the deployment's streams refuses to open the log, naming the
// setting and the count it needs; the right count opens it with its
// history.
func TestPartitionCountIsFixed(t *testing.T) {
	d := DurabilityReplicated
	for _, tc := range []struct{ made, then int }{{4, 2}, {4, 1}, {1, 4}} {
		t.Run(fmt.Sprintf("%d-then-%d", tc.made, tc.then), func(t *testing.T) {
			dir := t.TempDir()
			bus := startPartitioned(t, dir, tc.made, d)
			l, err := openLog(bus, d)
			if err != nil {
				t.Fatal(err)
			}
			c := l.NewCommitter(nil)
			id := submit(t, c, "lobby", `{"n":1}`)
			_ = c.Close(context.Background())
			_ = bus.Close(context.Background())

			bus = startPartitioned(t, dir, tc.then, d)
			_, err = openLog(bus, d)
			_ = bus.Close(context.Background())
			if err == nil {
				t.Fatalf("opened a log of %d partitions with %d", tc.made, tc.then)
			}
			for _, s := range []string{fmt.Sprintf("--partitions %d", tc.then), fmt.Sprintf("in %d partition", tc.made)} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}

			bus = startPartitioned(t, dir, tc.made, d)
			defer func() { _ = bus.Close(context.Background()) }()
			l, err = openLog(bus, d)
			if err != nil {
				t.Fatalf("reopen with %d partitions: %v", tc.made, err)
			}
			if last, err := l.LastID(context.Background(), "lobby"); err != nil || last != id {
				t.Fatalf("history after the refused start: newest %d %v, want %d", last, err, id)
			}
		})
	}
}
