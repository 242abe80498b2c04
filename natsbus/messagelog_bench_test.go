package natsbus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// benchLog opens chatd's message stream on a real embedded NATS server
// with JetStream in a temporary directory.
func benchLog(b *testing.B) *MessageLog {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := Start(ctx, Options{DataDir: b.TempDir(), ServerName: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
