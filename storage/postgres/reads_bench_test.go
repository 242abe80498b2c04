package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage/kvstore"
)

// BenchmarkMarkRead: read receipts stored as fast as callers make them,
// each caller a user moving its position forward in rooms of its own,
// with latency percentiles and the callers in flight (the backlog):
// PostgreSQL's batched writes against JetStream KV's compare-and-set on
// one embedded server with --durability fsync, as chatd runs it (chatd
// syncs the bucket's files after the write; PostgreSQL syncs each commit).
func BenchmarkMarkRead(b *testing.B) {
	type marker func(ctx context.Context, room, user string, id uint64) (uint64, error)
	stores := []struct {
		name string
		// open returns the store's MarkRead and what to report after.
		open func(b *testing.B) (marker, func())
	}{
		{"postgres", func(b *testing.B) (marker, func()) {
			s := openStore(b, openDB(b, pgtest.NewDatabase(b)))
			return s.MarkRead, func() {
				if w, txns := s.ReadPositions(); txns > 0 {
					b.ReportMetric(float64(w)/float64(txns), "positions/txn")
				}
			}
		}},
		{"kv", func(b *testing.B) (marker, func()) {
			bus, err := natsbus.Start(context.Background(), natsbus.Options{DataDir: b.TempDir(), ServerName: "bench",
				Durability: natsbus.DurabilityFsync, Logger: testlog.New()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = bus.Close(context.Background()) })
			r, err := kvstore.OpenReadMarks(context.Background(), bus, kvstore.Config{Logger: testlog.New()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = r.Close() })
			return func(ctx context.Context, room, user string, id uint64) (uint64, error) {
				pos, _, err := r.MarkRead(ctx, room, user, id)
				return pos, err
			}, func() {}
		}},
	}
	for _, st := range stores {
		for _, callers := range []int{1, 16, 128} {
			b.Run(fmt.Sprintf("store=%s/callers=%d", st.name, callers), func(b *testing.B) {
				mark, report := st.open(b)
				ctx := context.Background()
				var next atomic.Int64
				lat := make([][]time.Duration, callers)
				b.ResetTimer()
				var wg sync.WaitGroup
				for c := range callers {
					user := "u" + strconv.Itoa(c)
					wg.Go(func() {
						for i := 0; next.Add(1) <= int64(b.N); i++ {
							room := "r" + strconv.Itoa(i%20)
							t0 := time.Now()
							if _, err := mark(ctx, room, user, uint64(i+1)); err != nil {
								b.Error(err)
								return
							}
							lat[c] = append(lat[c], time.Since(t0))
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				all := slices.Concat(lat...)
				slices.Sort(all)
				if len(all) > 0 {
					b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
					b.ReportMetric(float64(all[(len(all)*99)/100].Microseconds())/1000, "p99-ms")
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "marks/s")
				report()
			})
		}
	}
}
