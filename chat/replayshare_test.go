package chat_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/storage"
)

// countingLog counts the batches replays read from the log, each taking a
// moment, as a store's read does.
type countingLog struct {
	chat.MessageLog
	reads atomic.Int64
}

func (l *countingLog) AfterUpTo(ctx context.Context, room string, after, upTo uint64, n int) ([]storage.Message, error) {
	l.reads.Add(1)
	time.Sleep(time.Millisecond)
	return l.MessageLog.AfterUpTo(ctx, room, after, upTo, n)
}

// replayMetrics records what a Service says of replay reads.
type replayMetrics struct {
	mu     sync.Mutex
	reads  [2]int
	held   int64
	peaked int64
}

func (m *replayMetrics) ReplayRead(from chat.ReplaySource) {
	m.mu.Lock()
	m.reads[from]++
	m.mu.Unlock()
}

func (m *replayMetrics) ReplayShareChanged(delta int64) {
	m.mu.Lock()
	m.held += delta
	m.peaked = max(m.peaked, m.held)
	m.mu.Unlock()
}

func (m *replayMetrics) MessageStored(time.Duration)      {}
func (m *replayMetrics) PublishFailed()                   {}
func (m *replayMetrics) LiveReceived()                    {}
func (m *replayMetrics) Delivered(chat.DeliveryPath, int) {}
func (m *replayMetrics) Dropped(int)                      {}
func (m *replayMetrics) Replayed(chat.ReplayOutcome)      {}
func (m *replayMetrics) HistoryPage(chat.HistorySource)   {}
func (m *replayMetrics) snapshot() (reads [2]int, held, peak int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads, m.held, m.peaked
}

// awaitReleased waits until the shares hold nothing, and says whether
// they came to.
func (m *replayMetrics) awaitReleased() bool {
	for range 500 {
		if _, held, _ := m.snapshot(); held == 0 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// stormRun is one replay storm: clients u0..un-1, members of room "r"
// holding stored messages, resubscribe at once, each from its own id,
// while more messages are posted.
type stormRun struct {
	log     *countingLog
	metrics *replayMetrics
	all     []uint64   // every id the room holds at the end
	got     [][]uint64 // what each client was given
	since   []uint64
}

// replayStorm stores 600 messages (three replay batches), then has 40
// clients replay the room at once: half of them everything, the others
// from ids spread over it, none aligned with another's batches; 30 more
// messages are posted meanwhile.
func replayStorm(t *testing.T, b backend, share int64) stormRun {
	t.Helper()
	run := stormRun{log: &countingLog{MessageLog: b.log}, metrics: &replayMetrics{}}
	b.log = run.log
	s := b.service(t, chat.Config{ReplayShare: share, ReplayShareLinger: 100 * time.Millisecond, Metrics: run.metrics, StoreReads: 8})
	const clients, stored, posted = 40, 600, 30
	users := []string{"poster"}
	for i := range clients {
		users = append(users, fmt.Sprintf("u%d", i))
	}
	b.join(t, "r", users...)
	for i := range stored {
		post(t, s, "poster", "r", fmt.Sprintf("m%d", i))
	}
	// The reference subscriber's live feed gives every id, and keeps the
	// room's feed up across the storm, as a room's other clients would.
	ref := subscribe(t, s, "poster", "r", nil)
	page, err := s.History(context.Background(), "poster", "r", 0, 1)
	if err != nil || len(page) != 1 {
		t.Fatalf("history: %d, %v", len(page), err)
	}
	newest := page[0].ID
	run.since = make([]uint64, clients)
	for i := range run.since {
		if i%2 == 1 {
			// Somewhere in the room's history: odd offsets, so that no two
			// clients' batches line up.
			run.since[i] = newest - uint64(stored-1) + uint64(i*13)
		}
	}
	run.log.reads.Store(0)
	run.got = make([][]uint64, clients)
	sinks := make([]*sink, clients)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range clients {
		sinks[i] = newSink()
		wg.Go(func() {
			<-start
			stop, err := s.SubscribeRoom(context.Background(), fmt.Sprintf("u%d", i), "r", &run.since[i], sinks[i])
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(stop)
		})
	}
	wg.Go(func() {
		<-start
		for i := range posted {
			post(t, s, "poster", "r", fmt.Sprintf("live%d", i))
		}
	})
	close(start)
	wg.Wait()
	ids, err := ref.awaitIDs(posted)
	if err != nil {
		t.Fatal(err)
	}
	last := ids[len(ids)-1]
	for i, k := range sinks {
		err := k.await(func() bool { return k.ended != nil || len(k.pubs) > 0 && k.pubs[len(k.pubs)-1].ID >= last })
		if err != nil || k.ended != nil {
			t.Fatalf("u%d's replay from %d: %v (ended: %v)", i, run.since[i], err, k.ended)
		}
		run.got[i] = k.ids()
	}
	full := run.got[0] // u0 replayed everything
	if len(full) != stored+posted || !ascending(full) || full[len(full)-1] != last {
		t.Fatalf("u0 got %d ids, want %d ascending up to %d", len(full), stored+posted, last)
	}
	run.all = full
	return run
}

// check says whether every client got every id after its since, once,
// in order.
func (run stormRun) check(t *testing.T) {
	t.Helper()
	for i, got := range run.got {
		i0, _ := slices.BinarySearch(run.all, run.since[i]+1)
		if want := run.all[i0:]; !slices.Equal(got, want) {
			t.Errorf("u%d from %d: got %d ids (%v...), want %d", i, run.since[i], len(got), got[:min(3, len(got))], len(want))
		}
	}
}

// TestReplaysOfARoomShareReads: clients replaying a room at once, each
// from its own id, read each stretch of it from the log about once
// between them, not once each; and each gets every message after its id
// once, in order, the live ones posted meanwhile too. With the sharing
// off, each reads its own.
func TestReplaysOfARoomShareReads(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend func(*testing.T) backend
	}{{"fake", fakeBackend}, {"jetstream", jetStreamBackend}} {
		t.Run(tc.name, func(t *testing.T) {
			shared := replayStorm(t, tc.backend(t), 0)
			shared.check(t)
			alone := replayStorm(t, tc.backend(t), -1)
			alone.check(t)
			sr, _, _ := shared.metrics.snapshot()
			ar, _, _ := alone.metrics.snapshot()
			t.Logf("log reads: %d shared (%d batches shared), %d alone", shared.log.reads.Load(), sr[chat.ReplayShared], alone.log.reads.Load())
			// Alone, each of the 40 reads two or three batches.
			if n := alone.log.reads.Load(); n < 80 || ar[chat.ReplayShared] != 0 {
				t.Fatalf("alone: %d log reads, %d shared: want each replay's own", n, ar[chat.ReplayShared])
			}
			if n := shared.log.reads.Load(); n > 20 || sr[chat.ReplayShared] < 60 {
				t.Fatalf("shared: %d log reads and %d shared batches: want the storm to read the room about once", n, sr[chat.ReplayShared])
			}
			if !shared.metrics.awaitReleased() {
				t.Fatal("the share still holds history after every replay ended and its linger passed")
			}
		})
	}
}

// TestReplayShareIsBounded: what replays hold for each other stays within
// Config.ReplayShare; beyond it they read for themselves, and every
// client still gets all it asked for.
func TestReplayShareIsBounded(t *testing.T) {
	const bound = 64 << 10 // about a batch of these messages
	run := replayStorm(t, fakeBackend(t), bound)
	run.check(t)
	reads, _, peak := run.metrics.snapshot()
	if peak == 0 || peak > bound || !run.metrics.awaitReleased() {
		t.Fatalf("held at most %d bytes (bound %d), released: %v", peak, bound, run.metrics.awaitReleased())
	}
	if reads[chat.ReplayShared] == 0 {
		t.Fatal("nothing shared within the bound")
	}
}

// TestReplaysInTurnShareReads: clients of a room coming back one after
// another, each replay done before the next begins (as a room's clients
// reconnect over seconds, each after its own back-off), read the room
// once between them while the share lingers; once the room's feed stops
// (its last subscriber gone), the share holds nothing.
func TestReplaysInTurnShareReads(t *testing.T) {
	b := fakeBackend(t)
	log := &countingLog{MessageLog: b.log}
	b.log = log
	m := &replayMetrics{}
	s := b.service(t, chat.Config{Metrics: m})
	users := []string{"poster", "u0", "u1", "u2", "u3", "u4", "u5"}
	b.join(t, "r", users...)
	for i := range 600 {
		post(t, s, "poster", "r", fmt.Sprintf("m%d", i))
	}
	subscribe(t, s, "poster", "r", nil) // keeps the room's feed up
	since := uint64(0)
	var want []uint64
	for i, u := range users[1:] {
		k := newSink()
		stop, err := s.SubscribeRoom(context.Background(), u, "r", &since, k)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := k.awaitIDs(600)
		stop()
		if err != nil || !ascending(ids) {
			t.Fatalf("%s: %d ids, %v", u, len(ids), err)
		}
		if i == 0 {
			want = ids
		} else if !slices.Equal(ids, want) {
			t.Fatalf("%s got other ids than u0", u)
		}
	}
	// u0 read three batches; the others took them from the share.
	if n := log.reads.Load(); n != 3 {
		t.Fatalf("%d log reads for six replays in turn: want u0's three", n)
	}
	if _, held, _ := m.snapshot(); held == 0 {
		t.Fatal("the share was dropped while the room's feed is up and its linger not over")
	}
	s.Close()
	if !m.awaitReleased() {
		t.Fatal("the share still holds history after the room's feed stopped")
	}
}

// TestGapReplayTakesNoShare: a replay that reports a gap or a reset
// where retention dropped what it asks for, with no archive to fill it
// in, reads the log itself: what an earlier replay read before the drop
// would give it messages below the first id its note names.
func TestGapReplayTakesNoShare(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{AutoJoin: true})
	for i := range 600 {
		post(t, s, "ann", "r", fmt.Sprintf("m%d", i))
	}
	subscribe(t, s, "ann", "r", nil) // keeps the room's feed, and its share, up
	since := uint64(0)
	before := subscribe(t, s, "ben", "r", &since)
	if _, err := before.awaitIDs(600); err != nil {
		t.Fatal(err)
	}
	b.w.trim(300) // retention drops the older half
	gap := subscribe(t, s, "cat", "r", &since)
	ids, err := gap.awaitIDs(300)
	if err != nil {
		t.Fatal(err)
	}
	first := gap.notes[0]
	if first.Kind != chat.NoteGap || ids[0] != first.FirstID || len(gap.ids()) != 300 {
		t.Fatalf("after the drop: note %+v, first id %d, %d ids: want a gap from the first id given, and the 300 held", first, ids[0], len(gap.ids()))
	}
	// An id of another life of the log: a reset, from the first id held.
	stale := ids[len(ids)-1] + 1000
	reset := subscribe(t, s, "dan", "r", &stale)
	if ids, err = reset.awaitIDs(300); err != nil {
		t.Fatal(err)
	}
	if first := reset.notes[0]; first.Kind != chat.NoteReset || ids[0] != first.FirstID || len(reset.ids()) != 300 {
		t.Fatalf("a reset after the drop: note %+v, first id %d, %d ids: want the 300 held, from the first id given", first, ids[0], len(reset.ids()))
	}
}
