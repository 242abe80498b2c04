package natsbus

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/storage"
)

// TestUserWatchesShareGoroutines: a thousand user-queue watches add a
// few goroutines, not one each (nats.go gives a callback subscription
// its own); each watch gets its own events, in order, and none after it
// stops.
func TestUserWatchesShareGoroutines(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	const users, each = 1000, 20
	var mu sync.Mutex
	got := make([][]string, users)
	before := runtime.NumGoroutine()
	stops := make([]func(), users)
	for u := range users {
		stop, err := bus.WatchUser("u"+strconv.Itoa(u), "inbox", func(body []byte, _ string) {
			mu.Lock()
			got[u] = append(got[u], string(body))
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		stops[u] = stop
	}
	if grown := runtime.NumGoroutine() - before; grown > 50 {
		t.Fatalf("%d watches started %d goroutines", users, grown)
	}
	for i := range each {
		for u := range users {
			if err := bus.PublishUser("u"+strconv.Itoa(u), "inbox", "", []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := 0
		for _, g := range got {
			n += len(g)
		}
		mu.Unlock()
		if n == users*each {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events arrived", n, users*each)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	for u, g := range got {
		for i, body := range g {
			if body != strconv.Itoa(i) {
				t.Fatalf("user %d's event %d: %q", u, i, body)
			}
		}
	}
	mu.Unlock()

	stops[0]()
	if err := bus.PublishUser("u0", "inbox", "", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := bus.PublishUser("u1", "inbox", "", []byte("still")); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n1, n0 := len(got[1]), len(got[0])
		mu.Unlock()
		if n0 != each {
			t.Fatalf("a stopped watch got %d events", n0-each)
		}
		if n1 == each+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch still running got nothing more")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRoomWatchesHoldNoGoroutine: idle room watches hold no goroutine of
// their own, and a room whose watcher blocks (a feed reading a gap from
// the stream, or writing to a slow client) holds up no other room, though
// rooms share lanes; once it returns, its messages follow in order.
func TestRoomWatchesHoldNoGoroutine(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	c := openTestLog(t, bus, DurabilityReplicated).NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	const rooms = 1000
	before := runtime.NumGoroutine()
	arrived := make(chan string, rooms)
	for r := range rooms {
		stop, err := bus.WatchRoom("r"+strconv.Itoa(r), func(m storage.Message, _ uint64, _ int) {
			arrived <- m.Room
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	if grown := runtime.NumGoroutine() - before; grown > 50 {
		t.Fatalf("%d room watches started %d goroutines", rooms, grown)
	}

	hold := make(chan struct{})
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(hold) }) }) // a failed test must not leave the watcher blocked
	type got struct {
		data string
		more int
	}
	held := make(chan got, 16)
	stop, err := bus.WatchRoom("held", func(m storage.Message, _ uint64, more int) {
		<-hold
		held <- got{string(m.Data), more}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	const n = 5
	for i := range n {
		submit(t, c, "held", strconv.Itoa(i))
	}
	for r := range rooms {
		submit(t, c, "r"+strconv.Itoa(r), "x")
	}
	seen := map[string]bool{}
	for len(seen) < rooms {
		select {
		case room := <-arrived:
			seen[room] = true
		case <-time.After(20 * time.Second):
			t.Fatalf("with one room's watcher blocked, %d of %d other rooms got their message", len(seen), rooms)
		}
	}
	release.Do(func() { close(hold) })
	for i := range n {
		select {
		case g := <-held:
			if g.data != strconv.Itoa(i) {
				t.Fatalf("the held room's message %d is %q", i, g.data)
			}
			if i > 0 && g.more != n-1-i {
				t.Fatalf("the held room's message %d: more %d, want %d", i, g.more, n-1-i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the held room's message %d never came", i)
		}
	}
	// The runners end with their rooms' work.
	deadline := time.Now().Add(10 * time.Second)
	for grown := runtime.NumGoroutine() - before; grown > 50; grown = runtime.NumGoroutine() - before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines more than before the watches, with every room idle", grown)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkIdleRoomWatches reports what an idle room watch holds: heap
// bytes and goroutines per watch (issue #18 measured ~1.1 KB and one
// goroutine each with nats.go's callback subscriptions).
func BenchmarkIdleRoomWatches(b *testing.B) {
	bus := startTestBus(b, b.TempDir(), DurabilityReplicated)
	const watches = 10000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		stops := make([]func(), 0, watches)
		for r := range watches {
			stop, err := bus.WatchRoom("r"+strconv.Itoa(r), func(storage.Message, uint64, int) {})
			if err != nil {
				b.Fatal(err)
			}
			stops = append(stops, stop)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/watches, "heap-B/watch")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/watches, "goroutines/watch")
		for _, stop := range stops {
			stop()
		}
	}
}
