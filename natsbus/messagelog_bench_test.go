package natsbus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/latency"
	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go/jetstream"
)

// benchLog opens chatd's message stream on a real embedded NATS server
// with JetStream in a temporary directory.
func benchLog(b *testing.B) *MessageLog { return benchLogOf(b, 1) }

// benchLogOf is benchLog with the messages spread over parts streams.
func benchLogOf(b *testing.B, parts int) *MessageLog {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := Start(ctx, Options{DataDir: b.TempDir(), ServerName: "bench", Partitions: parts,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatalf("start embedded NATS: %v", err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bus.Close(ctx)
	})
	log, err := bus.OpenMessageLog(ctx, LogConfig{Replicas: 1, DuplicateWindow: 2 * time.Minute})
	if err != nil {
		b.Fatalf("open message log: %v", err)
	}
	return log
}

// benchMsg is a stored chat message of typical size.
const benchMsg = `{"roomId":"bench","userId":"alice","message":"#cb1;run;0;1;1795320202978319000;hello there","createdAt":"2026-11-22T04:03:26.851Z"}`

func waitAck(b *testing.B, f jetstream.PubAckFuture) {
	select {
	case <-f.Ok():
	case err := <-f.Err():
		b.Fatalf("publish: %v", err)
	case <-time.After(10 * time.Second):
		b.Fatal("no ack within 10s")
	}
}

// BenchmarkPublishAck is one room message stored and acknowledged at a
// time: the latency a SEND's RECEIPT waits for on an idle node.
func BenchmarkPublishAck(b *testing.B) {
	log := benchLog(b)
	data := []byte(benchMsg)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		f, err := log.publishAsync("bench", data, "")
		if err != nil {
			b.Fatal(err)
		}
		waitAck(b, f)
	}
}

// BenchmarkPublishAckPipelined keeps up to window publishes awaiting their
// acks, as sessions do (stompws MaxInflight is 256 per session): the
// JetStream throughput a node's message path can reach.
func BenchmarkPublishAckPipelined(b *testing.B) {
	for _, window := range []int{16, 256} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			log := benchLog(b)
			data := []byte(benchMsg)
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			inflight := make([]jetstream.PubAckFuture, 0, window)
			rooms := [8]string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"}
			i := 0
			for b.Loop() {
				if len(inflight) == window {
					waitAck(b, inflight[0])
					inflight = append(inflight[:0], inflight[1:]...)
				}
				f, err := log.publishAsync(rooms[i%len(rooms)], data, "")
				if err != nil {
					b.Fatal(err)
				}
				inflight = append(inflight, f)
				i++
			}
			for _, f := range inflight {
				waitAck(b, f)
			}
		})
	}
}

// manyRooms is a message log holding scaleRooms rooms of a few messages
// each, interleaved, and hotRooms rooms of hotMsgs messages each spread
// evenly over the whole stream: what a history page or a room list reads
// once the stream is shared by many rooms. With parts partitions, each
// stream holds about a parts-th of them.
const (
	scaleRooms = 100_000
	scalePer   = 3
	hotRooms   = 8
	hotMsgs    = 400
)

func manyRooms(b *testing.B, parts int) *MessageLog {
	b.Helper()
	log := benchLogOf(b, parts)
	data := []byte(benchMsg)
	every := scaleRooms * scalePer / (hotRooms * hotMsgs)
	inflight := make([]jetstream.PubAckFuture, 0, 512)
	publish := func(room string) {
		if len(inflight) == cap(inflight) {
			for _, f := range inflight {
				waitAck(b, f)
			}
			inflight = inflight[:0]
		}
		f, err := log.publishAsync(room, data, "")
		if err != nil {
			b.Fatal(err)
		}
		inflight = append(inflight, f)
	}
	n, hot := 0, 0
	for r := range scalePer {
		for i := range scaleRooms {
			publish(fmt.Sprintf("room-%d", (i*7919+r)%scaleRooms))
			if n++; n%every == 0 && hot < hotRooms*hotMsgs {
				publish(fmt.Sprintf("hot-%d", hot%hotRooms))
				hot++
			}
		}
	}
	for _, f := range inflight {
		waitAck(b, f)
	}
	return log
}

// hotIDs returns the ids of every hot room's messages.
func hotIDs(b *testing.B, log *MessageLog) [][]uint64 {
	b.Helper()
	ids := make([][]uint64, hotRooms)
	for i := range hotRooms {
		msgs, err := log.After(context.Background(), fmt.Sprintf("hot-%d", i), 0, hotMsgs)
		if err != nil || len(msgs) != hotMsgs {
			b.Fatalf("hot-%d: %d messages, %v", i, len(msgs), err)
		}
		for _, m := range msgs {
			ids[i] = append(ids[i], m.ID)
		}
	}
	return ids
}

// BenchmarkHistoryScale is a history page of 20 (MessageLog.Before) in a
// stream of 100k rooms, before a random message of a room whose messages
// are spread over the whole stream, alone and beside a writer that stores
// one message at a time into random rooms; and that writer's publish
// latency without and with a reader paging all the while. All of it with
// one partition and with four.
func BenchmarkHistoryScale(b *testing.B) {
	for _, parts := range []int{1, 4} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) { benchHistoryScale(b, parts) })
	}
}

func benchHistoryScale(b *testing.B, parts int) {
	log := manyRooms(b, parts)
	ids := hotIDs(b, log)
	ctx := context.Background()
	page := func(i int, lat *latency.Recorder) {
		room := i % hotRooms
		before := uint64(0)
		if k := (i * 131) % (hotMsgs + 1); k < hotMsgs {
			before = ids[room][k]
		}
		began := time.Now()
		msgs, err := log.Before(ctx, fmt.Sprintf("hot-%d", room), before, 20)
		lat.Add(time.Since(began))
		if err != nil || len(msgs) == 0 && before != ids[room][0] {
			b.Fatalf("page of hot-%d before %d: %d messages, %v", room, before, len(msgs), err)
		}
	}
	// writer stores one message at a time until stop closes.
	writer := func(stop <-chan struct{}, lat *latency.Recorder) {
		data := []byte(benchMsg)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			began := time.Now()
			f, err := log.publishAsync(fmt.Sprintf("room-%d", (i*104729)%scaleRooms), data, "")
			if err != nil {
				b.Error(err)
				return
			}
			waitAck(b, f)
			lat.Add(time.Since(began))
		}
	}
	b.Run("page", func(b *testing.B) { latency.Loop(b, "page", page, "", nil) })
	b.Run("page-beside-writer", func(b *testing.B) { latency.Loop(b, "page", page, "publish", writer) })
	b.Run("publish-alone", func(b *testing.B) { latency.Loop(b, "", nil, "publish", writer) })
}

// BenchmarkRoomListScale is the log's part of a room list (RoomTails) for a
// user in 500 rooms of a stream of 100k rooms: all read, each with one
// unread message, and each with 20 (more than RoomTails reads to count);
// with one partition and with four.
func BenchmarkRoomListScale(b *testing.B) {
	for _, parts := range []int{1, 4} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) { benchRoomListScale(b, parts) })
	}
}

func benchRoomListScale(b *testing.B, parts int) {
	log := manyRooms(b, parts)
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		unread int
		rooms  func(i int) string
	}{
		{"all-read", 0, func(i int) string { return fmt.Sprintf("room-%d", i*199) }},
		{"one-unread", 1, func(i int) string { return fmt.Sprintf("room-%d", i*199) }},
		{"hot-20-unread", 20, func(i int) string { return fmt.Sprintf("hot-%d", i%hotRooms) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			marks := make([]storage.RoomMark, 500)
			for i := range marks {
				marks[i].Room = c.rooms(i)
				msgs, err := log.Before(ctx, marks[i].Room, 0, c.unread+1)
				if err != nil || len(msgs) != c.unread+1 {
					b.Fatalf("%s: %d messages, %v", marks[i].Room, len(msgs), err)
				}
				marks[i].Read = msgs[0].ID
			}
			var lat latency.Recorder
			for b.Loop() {
				began := time.Now()
				tails, err := log.RoomTails(ctx, marks)
				lat.Add(time.Since(began))
				if err != nil || len(tails) != len(marks) || tails[0].Unread != uint64(c.unread) {
					b.Fatalf("room tails: %d, %v", len(tails), err)
				}
			}
			lat.Report(b, "list")
		})
	}
}
