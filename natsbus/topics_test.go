package natsbus

import (
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestTopicWatchesShareGoroutines: a thousand user-queue watches add a
// few goroutines, not one each (nats.go gives a callback subscription
// its own); each watch gets its own events, in order, and none after it
// stops.
func TestTopicWatchesShareGoroutines(t *testing.T) {
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
