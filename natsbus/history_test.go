package natsbus

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go/jetstream"
)

// fill stores one message per entry of rooms, in that order, and returns
// each room's ids as JetStream acknowledged them.
func fill(t *testing.T, l *MessageLog, rooms []string) map[string][]uint64 {
	t.Helper()
	futs := make([]jetstream.PubAckFuture, 0, len(rooms))
	for _, r := range rooms {
		f, err := l.publishAsync(r, []byte("m-"+r), "")
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	ids := map[string][]uint64{}
	for i, f := range futs {
		select {
		case ack := <-f.Ok():
			ids[rooms[i]] = append(ids[rooms[i]], ack.Sequence)
		case err := <-f.Err():
			t.Fatalf("publish: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no ack")
		}
	}
	return ids
}

// layout interleaves filler rooms with rooms of different shapes: sparse
// (one message in a hundred), dense (every other message), and a burst of
// consecutive messages between long stretches of other rooms' messages.
func layout() []string {
	var out []string
	filler := 0
	fillers := func(n int) {
		for range n {
			out = append(out, fmt.Sprintf("f-%d", filler%500))
			filler++
		}
	}
	for i := range 60 {
		out = append(out, "sparse")
		fillers(97)
		if i%10 == 0 {
			out = append(out, "burst")
			fillers(50)
		}
	}
	for range 300 {
		out = append(out, "burst")
	}
	for range 150 {
		out = append(out, "dense")
		fillers(1)
		out = append(out, "sparse")
	}
	fillers(3000)
	out = append(out, "burst")
	fillers(2000)
	return out
}

// wantBefore is Before by definition: the last limit ids below before.
func wantBefore(ids []uint64, before uint64, limit int) []uint64 {
	var below []uint64
	for _, id := range ids {
		if before == 0 || id < before {
			below = append(below, id)
		}
	}
	return below[max(0, len(below)-limit):]
}

func idsOf(msgs []storage.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func TestBeforeAcrossInterleavedRooms(t *testing.T) {
	l := openTestLog(t, startTestBus(t, t.TempDir(), DurabilityFsync), DurabilityFsync)
	ctx := context.Background()
	ids := fill(t, l, layout())
	for _, room := range []string{"sparse", "dense", "burst", "f-7"} {
		all := ids[room]
		// Messages spread over the room as the bound, and the ids either
		// side of them.
		var bounds []uint64
		for i := 0; i < len(all); i += 1 + len(all)/40 {
			bounds = append(bounds, all[i]-1, all[i], all[i]+1)
		}
		bounds = append(bounds, 0, 1, all[len(all)-1]+5000)
		for _, limit := range []int{1, 3, 20, 60} {
			for _, before := range bounds {
				got, err := l.Before(ctx, room, before, limit)
				if err != nil {
					t.Fatalf("%s before %d limit %d: %v", room, before, limit, err)
				}
				if want := wantBefore(all, before, limit); !slices.Equal(idsOf(got), want) {
					t.Fatalf("%s before %d limit %d: got %v, want %v", room, before, limit, idsOf(got), want)
				}
				for _, m := range got {
					if m.Room != room || string(m.Data) != "m-"+room {
						t.Fatalf("%s: message %d is %q of %q", room, m.ID, m.Data, m.Room)
					}
				}
			}
		}
		// Latest at or below a bound is the page of one before the next id.
		for _, upTo := range bounds {
			m, err := l.Latest(ctx, room, upTo)
			if err != nil {
				t.Fatal(err)
			}
			want := wantBefore(all, upTo+1, 1) // 0: the newest
			if upTo == 0 {
				want = all[len(all)-1:]
			}
			if len(want) == 0 && m != nil || len(want) == 1 && (m == nil || m.ID != want[0]) {
				t.Fatalf("%s: latest up to %d: got %v, want %v", room, upTo, m, want)
			}
		}
	}
	for _, room := range []string{"nobody", "f-999"} {
		if got, err := l.Before(ctx, room, 0, 20); err != nil || len(got) != 0 {
			t.Fatalf("room without messages %s: %v, %v", room, idsOf(got), err)
		}
	}
}

// TestSpan: Span gives the room's messages in (after, upTo], oldest
// first, up to max, and nothing of other rooms or beyond upTo.
func TestSpan(t *testing.T) {
	l := openTestLog(t, startTestBus(t, t.TempDir(), DurabilityFsync), DurabilityFsync)
	ctx := context.Background()
	ids := fill(t, l, layout())
	for _, room := range []string{"sparse", "dense", "burst"} {
		all := ids[room]
		for _, tc := range []struct {
			after, upTo uint64
			max         int
		}{
			{0, all[len(all)-1], 1000},
			{all[3], all[9], 1000},
			{all[3] - 1, all[9], 1000},
			{all[3] + 1, all[9], 4},
			{all[5], all[5], 10},
			{all[5], all[6], 10},
			{all[len(all)-2], all[len(all)-1], 10},
		} {
			var want []uint64
			for _, id := range all {
				if id > tc.after && id <= tc.upTo && len(want) < tc.max {
					want = append(want, id)
				}
			}
			got, err := l.Span(ctx, room, tc.after, tc.upTo, tc.max)
			if err != nil {
				t.Fatalf("%s (%d, %d] max %d: %v", room, tc.after, tc.upTo, tc.max, err)
			}
			if !slices.Equal(idsOf(got), want) {
				t.Fatalf("%s (%d, %d] max %d: got %v, want %v", room, tc.after, tc.upTo, tc.max, idsOf(got), want)
			}
		}
	}
}

func TestBeforeSkipsRemovedMessages(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityFsync)
	l, err := bus.OpenMessageLog(context.Background(), LogConfig{Replicas: 1, DuplicateWindow: time.Minute, MaxPerRoom: 40})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids := fill(t, l, layout())
	// The cap keeps the newest 40 of each room.
	for room, all := range ids {
		if len(all) > 40 {
			ids[room] = all[len(all)-40:]
		}
	}
	// Deleted: the burst's newest, one in its middle, and the dense
	// room's oldest kept.
	burst := ids["burst"]
	for _, d := range []struct {
		room string
		id   uint64
	}{{"burst", burst[len(burst)-1]}, {"burst", burst[20]}, {"dense", ids["dense"][0]}} {
		if err := l.part(d.room).stream.DeleteMsg(ctx, d.id); err != nil {
			t.Fatalf("delete %d: %v", d.id, err)
		}
	}
	ids["burst"] = slices.Concat(burst[:20], burst[21:len(burst)-1])
	ids["dense"] = ids["dense"][1:]
	for _, room := range []string{"sparse", "dense", "burst"} {
		all := ids[room]
		for _, before := range []uint64{0, all[0], all[0] + 1, all[5], all[len(all)-1], all[len(all)-1] + 1, burst[20] + 1, burst[len(burst)-1]} {
			for _, limit := range []int{1, 7, 20, 50} {
				got, err := l.Before(ctx, room, before, limit)
				if err != nil {
					t.Fatal(err)
				}
				if want := wantBefore(all, before, limit); !slices.Equal(idsOf(got), want) {
					t.Fatalf("%s before %d limit %d: got %v, want %v", room, before, limit, idsOf(got), want)
				}
			}
		}
	}
}

func TestRoomTailsMatchEachRoom(t *testing.T) {
	l := openTestLog(t, startTestBus(t, t.TempDir(), DurabilityFsync), DurabilityFsync)
	ctx := context.Background()
	rooms := layout()
	// More rooms with messages than one multi_last request may ask for.
	for i := range maxMultiLast + 100 {
		rooms = append(rooms, fmt.Sprintf("many-%d", i))
	}
	ids := fill(t, l, rooms)
	count := func(all []uint64, after uint64) uint64 {
		var n uint64
		for _, id := range all {
			if id > after {
				n++
			}
		}
		return n
	}
	var marks []storage.RoomMark
	for _, room := range []string{"sparse", "dense", "burst"} {
		all := ids[room]
		for _, read := range []uint64{0, 1, all[0] - 1, all[0], all[len(all)/2], all[len(all)-readCounted-1],
			all[len(all)-readCounted], all[len(all)-2], all[len(all)-1], all[len(all)-1] + 1000} {
			marks = append(marks, storage.RoomMark{Room: room, Read: read})
		}
	}
	marks = append(marks, storage.RoomMark{Room: "nobody"}, storage.RoomMark{Room: "nobody", Read: 7})
	for i := range maxMultiLast + 100 {
		room := fmt.Sprintf("many-%d", i)
		marks = append(marks, storage.RoomMark{Room: room, Read: uint64(i%2) * ids[room][0]})
	}
	tails, err := l.RoomTails(ctx, marks)
	if err != nil {
		t.Fatal(err)
	}
	if len(tails) != len(marks) {
		t.Fatalf("%d tails for %d marks", len(tails), len(marks))
	}
	for i, mk := range marks {
		all, tl := ids[mk.Room], tails[i]
		if want := count(all, mk.Read); tl.Unread != want {
			t.Errorf("%s read to %d: %d unread, want %d", mk.Room, mk.Read, tl.Unread, want)
		}
		switch {
		case len(all) == 0 && tl.Latest != nil:
			t.Errorf("%s: newest %d, want none", mk.Room, tl.Latest.ID)
		case len(all) > 0 && (tl.Latest == nil || tl.Latest.ID != all[len(all)-1] || tl.Latest.Room != mk.Room ||
			string(tl.Latest.Data) != "m-"+mk.Room):
			t.Errorf("%s: newest %+v, want %d", mk.Room, tl.Latest, all[len(all)-1])
		}
	}
	if tails, err := l.RoomTails(ctx, nil); err != nil || len(tails) != 0 {
		t.Fatalf("no rooms: %v, %v", tails, err)
	}
}

// A room list whose newest messages outgrow one reply (multiLastBytes) is
// answered whole, over more replies.
func TestRoomTailsOfLargeMessages(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityFsync)
	ctx := context.Background()
	l, err := bus.OpenMessageLog(ctx, LogConfig{Replicas: 1, DuplicateWindow: time.Minute, MaxMsgSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const rooms = 2 * multiLastBytes / (8 << 10)
	var futs []jetstream.PubAckFuture
	for i := range rooms {
		data := make([]byte, 8<<10)
		copy(data, fmt.Sprintf("big-%d", i))
		f, err := l.publishAsync(fmt.Sprintf("big-%d", i), data, "")
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	ids := make([]uint64, rooms)
	for i, f := range futs {
		select {
		case ack := <-f.Ok():
			ids[i] = ack.Sequence
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	marks := []storage.RoomMark{{Room: "empty"}}
	for i := range rooms {
		marks = append(marks, storage.RoomMark{Room: fmt.Sprintf("big-%d", i)})
	}
	tails, err := l.RoomTails(ctx, marks)
	if err != nil {
		t.Fatal(err)
	}
	if tails[0].Latest != nil || tails[0].Unread != 0 {
		t.Fatalf("empty room: %+v", tails[0])
	}
	for i, tl := range tails[1:] {
		if tl.Latest == nil || tl.Latest.ID != ids[i] || tl.Unread != 1 || !bytes.HasPrefix(tl.Latest.Data, fmt.Appendf(nil, "big-%d", i)) {
			t.Fatalf("big-%d: %+v, want id %d and 1 unread", i, tl, ids[i])
		}
	}
}
