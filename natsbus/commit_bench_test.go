package natsbus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkBatchWrite is the choice group commit makes, measured: a batch
// of n messages written to the messages stream as one JetStream atomic
// batch, or as n single publishes sent at once (then awaited in order),
// on one server and on a cluster of three (R3), with the servers syncing
// every write (--durability fsync) or on their interval (replicated). One
// op is one batch, stored and acknowledged; msgs/s is n per op.
// Results: docs/benchmarks.md, Group commit.
func BenchmarkBatchWrite(b *testing.B) {
	for _, replicas := range []int{1, 3} {
		for _, d := range []Durability{DurabilityFsync, DurabilityReplicated} {
			b.Run(fmt.Sprintf("replicas=%d/durability=%s", replicas, d), func(b *testing.B) {
				l := benchCluster(b, replicas, d)
				c := l.NewCommitter(nil)
				b.Cleanup(func() { _ = c.Close(context.Background()) })
				for _, write := range []string{"atomic", "single"} {
					for _, n := range []int{1, 2, 4, 8, 16, 100, 500} {
						b.Run(fmt.Sprintf("write=%s/batch=%d", write, n), func(b *testing.B) { benchBatch(b, only(b, c), write, n) })
					}
				}
			})
		}
	}
}

func benchBatch(b *testing.B, c *committer, write string, n int) {
	var (
		failed error
		told   sync.WaitGroup // where chatd syncs, submitters hear later
	)
	batch := make([]*pending, n)
	for i := range batch {
		batch[i] = &pending{room: "r" + strconv.Itoa(i%8), data: []byte(benchMsg), deadline: time.Now().Add(time.Hour),
			done: func(_ uint64, err error) {
				if err != nil && failed == nil {
					failed = err
				}
				told.Done()
			}}
	}
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		told.Add(n)
		// Fresh msgIDs each time, as commit gives them where publishes
		// can go unanswered: a repeated one would be acknowledged as a
		// duplicate, not stored.
		for _, p := range batch {
			p.msgID = ""
		}
		if write == "atomic" {
			c.commitAtomic(ctx, batch)
		} else {
			c.stamp(batch)
			c.commitEach(ctx, batch)
		}
		told.Wait()
		cancel()
		if failed != nil {
			b.Fatal(failed)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// benchCluster opens the messages stream on one embedded server, or on
// the first of three routed to each other, syncing as d says.
func benchCluster(b *testing.B, size int, d Durability) *MessageLog {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := make([]Options, size)
	var routes []string
	for i := range opts {
		opts[i] = Options{DataDir: b.TempDir(), ServerName: "bench" + strconv.Itoa(i), Durability: d, Logger: quiet}
		if size > 1 {
			opts[i].ClusterName, opts[i].ClusterListen = "bench", loopbackAddr(b)
			routes = append(routes, "nats-route://"+opts[i].ClusterListen)
		}
	}
	buses := make([]*Bus, size)
	errs := make(chan error, size)
	for i := range opts {
		opts[i].Routes = routes
		go func() {
			var err error
			buses[i], err = Start(ctx, opts[i]) // a clustered node waits for its peers
			errs <- err
		}()
	}
	for range opts {
		if err := <-errs; err != nil {
			b.Fatalf("start embedded NATS: %v", err)
		}
	}
	for _, bus := range buses {
		b.Cleanup(func() { _ = bus.Close(context.Background()) })
	}
	l, err := buses[0].OpenMessageLog(ctx, LogConfig{Replicas: size, DuplicateWindow: 2 * time.Minute, Durability: d})
	if err != nil {
		b.Fatalf("open message log: %v", err)
	}
	return l
}

// loopbackAddr is a free loopback address for a server to bind later,
// below Linux's ephemeral ports (32768 and up) so that no outgoing
// connection takes it meanwhile.
func loopbackAddr(b *testing.B) string {
	b.Helper()
	for range 100 {
		addr := "127.0.0.1:" + strconv.Itoa(20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			_ = ln.Close()
			return addr
		}
	}
	b.Fatal("no free port in 20000-31999")
	return ""
}
