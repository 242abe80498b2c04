package natsbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go/jetstream"
)

// startTestBus is a real embedded NATS server with JetStream, syncing as
// durability d asks; the test's end stops it.
func startTestBus(t testing.TB, dir string, d Durability) *Bus {
	t.Helper()
	bus := startBusIn(t, dir, d)
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	return bus
}

func startBusIn(t testing.TB, dir string, d Durability) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := Start(ctx, Options{DataDir: dir, ServerName: "committest", Durability: d,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	return bus
}

func openTestLog(t *testing.T, bus *Bus, d Durability) *MessageLog {
	t.Helper()
	l, err := bus.OpenMessageLog(context.Background(), LogConfig{Replicas: 1, DuplicateWindow: time.Minute, MaxMsgSize: 1024, Durability: d})
	if err != nil {
		t.Fatalf("open message log: %v", err)
	}
	return l
}

// batchRecorder is CommitMetrics that remembers what it was told.
type batchRecorder struct {
	mu      sync.Mutex
	batches []int // sizes; negative for single-publish batches
	splits  int
}

func (r *batchRecorder) BatchCommitted(n int, atomic bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !atomic {
		n = -n
	}
	r.batches = append(r.batches, n)
}

func (r *batchRecorder) BatchSplit() {
	r.mu.Lock()
	r.splits++
	r.mu.Unlock()
}

func (r *batchRecorder) get() ([]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.batches...), r.splits
}

// outcome is what a pending message's done was told.
type outcome struct {
	seq   uint64
	err   error
	calls int
}

// testBatch makes n pending messages for room, numbered in their data.
func testBatch(room string, n int, outs []outcome) []*pending {
	batch := make([]*pending, n)
	for i := range batch {
		batch[i] = &pending{
			room: room, data: fmt.Appendf(nil, `{"n":%d}`, i), deadline: time.Now().Add(10 * time.Second),
			done: func(seq uint64, err error) { outs[i].seq, outs[i].err = seq, err; outs[i].calls++ },
		}
	}
	return batch
}

// commitWait commits the batch and waits until every submitter has heard:
// where chatd syncs, that is after the batch's sync, on another goroutine.
func commitWait(t *testing.T, c *Committer, batch []*pending) {
	t.Helper()
	toldWait(t, batch, func() { only(t, c).commit(batch) })
}

// only is the committer of a log of one partition.
func only(t testing.TB, c *Committer) *committer {
	t.Helper()
	if len(c.parts) != 1 {
		t.Fatalf("%d partitions, want 1", len(c.parts))
	}
	return c.parts[0]
}

// toldWait runs send and waits until every submitter of the batch has
// heard.
func toldWait(t *testing.T, batch []*pending, send func()) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(len(batch))
	for _, p := range batch {
		done := p.done
		p.done = func(seq uint64, err error) { done(seq, err); wg.Done() }
	}
	send()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("submitters not told within 30s")
	}
}

// roomData reads back the data of the room's stored messages, in order.
func roomData(t *testing.T, l *MessageLog, room string) []string {
	t.Helper()
	var out []string
	for after := uint64(0); ; {
		msgs, err := l.After(context.Background(), room, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			out = append(out, string(m.Data))
		}
		if len(msgs) < 1000 {
			return out
		}
		after = msgs[len(msgs)-1].ID
	}
}

// atomicTestLog is a log on one node whose committer writes atomic
// batches. chatd chooses them for replicated streams only (one Raft
// proposal per batch); what these tests check, JetStream's all-or-nothing
// batches and how the committer handles a refusal, is the same on one
// replica, without a cluster's start-up. chatd syncs here (fsync on one
// node), so the atomic path's sync is exercised too.
func atomicTestLog(t *testing.T) *MessageLog {
	t.Helper()
	l := openTestLog(t, startTestBus(t, t.TempDir(), DurabilityFsync), DurabilityFsync)
	if l.atomic || !l.syncs {
		t.Fatalf("one node with fsync: atomic %v, syncs %v; want single publishes that chatd syncs", l.atomic, l.syncs)
	}
	l.atomic = true
	return l
}

// TestAtomicBatchStoresInOrder: a batch of atomicMin or more goes to
// JetStream as one atomic batch; its messages get consecutive ids in
// the order given.
func TestAtomicBatchStoresInOrder(t *testing.T) {
	l := atomicTestLog(t)
	rec := &batchRecorder{}
	c := l.NewCommitter(rec)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	outs := make([]outcome, 3*atomicMin)
	commitWait(t, c, testBatch("r", len(outs), outs))
	for i, o := range outs {
		if o.calls != 1 || o.err != nil || o.seq != outs[0].seq+uint64(i) {
			t.Fatalf("message %d: %+v (first id %d)", i, o, outs[0].seq)
		}
	}
	got := roomData(t, l, "r")
	for i, d := range got {
		if d != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("stored %d: %s", i, d)
		}
	}
	if batches, splits := rec.get(); len(batches) != 1 || batches[0] != len(outs) || splits != 0 || len(got) != len(outs) {
		t.Fatalf("batches %v, splits %d, stored %d", batches, splits, len(got))
	}
}

// TestRefusedBatchFailsOnlyTheCulprit: JetStream refuses a whole atomic
// batch when one message breaks a limit (here the stream's maximum message
// size); the committer sends the rest again (one by one, or in halves
// where order needs atomic batches), and only that message's sender hears
// of a failure.
func TestRefusedBatchFailsOnlyTheCulprit(t *testing.T) {
	inEachMode(t, func(t *testing.T, l *MessageLog, c *Committer, rec *batchRecorder) {
		for _, culprit := range []int{0, 7, 2*atomicMin - 1} { // first, middle, the committing message
			room := fmt.Sprintf("r%d", culprit)
			outs := make([]outcome, 2*atomicMin)
			batch := testBatch(room, len(outs), outs)
			batch[culprit].data = bytes.Repeat([]byte("x"), 2048) // over MaxMsgSize 1024
			commitWait(t, c, batch)
			var want []string
			for i, o := range outs {
				switch {
				case o.calls != 1:
					t.Fatalf("culprit %d: message %d told %d times", culprit, i, o.calls)
				case i == culprit && !errors.Is(o.err, jetstream.ErrStreamMessageExceedsMaximum):
					t.Fatalf("culprit %d: its error is %v, want message size exceeds maximum", culprit, o.err)
				case i != culprit && o.err != nil:
					t.Fatalf("culprit %d: message %d failed too: %v", culprit, i, o.err)
				case i != culprit:
					want = append(want, fmt.Sprintf(`{"n":%d}`, i))
				}
			}
			if got := roomData(t, l, room); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("culprit %d: stored %v\nwant %v", culprit, got, want)
			}
		}
		// Halved, a batch of 2*atomicMin with one culprit is refused at
		// each size down to two messages.
		want := 3
		if l.ordered {
			want *= bits.Len(2*atomicMin) - 1
		}
		if _, splits := rec.get(); splits != want {
			t.Fatalf("%d batches split, want %d", splits, want)
		}
	})
}

// inEachMode runs f on a log that writes atomic batches and its committer
// in each of the committer's modes: on one node; where publishes can go
// unanswered (MessageLog.failover), where a batch carries chatd's marker
// and a refused or unanswered one is resolved through it (commitAtomic);
// and as on replicated streams (MessageLog.ordered), where refused batches
// are halved.
func inEachMode(t *testing.T, f func(t *testing.T, l *MessageLog, c *Committer, rec *batchRecorder)) {
	for _, mode := range []struct {
		name              string
		failover, ordered bool
	}{{"one node", false, false}, {"failover", true, false}, {"replicated", true, true}} {
		t.Run(mode.name, func(t *testing.T) {
			l := atomicTestLog(t)
			l.failover, l.ordered = mode.failover, mode.ordered
			rec := &batchRecorder{}
			c := l.NewCommitter(rec)
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			f(t, l, c, rec)
		})
	}
}

// TestDuplicateInBatchIsAcknowledged: a client-msg-id already stored makes
// JetStream refuse an atomic batch; the repeat must still be acknowledged
// with the first copy's id (as a single publish would be), and the rest
// of the batch stored.
func TestDuplicateInBatchIsAcknowledged(t *testing.T) {
	inEachMode(t, func(t *testing.T, l *MessageLog, c *Committer, rec *batchRecorder) {
		first := make([]outcome, 1)
		b := testBatch("r", 1, first)
		b[0].msgID = "alice:m1"
		commitWait(t, c, b)
		if first[0].err != nil {
			t.Fatal(first[0].err)
		}
		outs := make([]outcome, atomicMin)
		batch := testBatch("r", len(outs), outs)
		batch[5].msgID = "alice:m1"
		batch[9].msgID = "alice:m2"
		commitWait(t, c, batch)
		for i, o := range outs {
			if o.calls != 1 || o.err != nil {
				t.Fatalf("message %d: %+v", i, o)
			}
		}
		if outs[5].seq != first[0].seq {
			t.Fatalf("repeat acknowledged with id %d, the first copy has %d", outs[5].seq, first[0].seq)
		}
		if got, want := roomData(t, l, "r"), atomicMin; len(got) != want {
			t.Fatalf("stored %d messages, want %d (the repeat not again)", len(got), want)
		}
		// Where order needs atomic batches the parts holding the repeat
		// are refused until it stands alone: the batch (its marker sent
		// alone, the rest halved), messages 1-7 (likewise), then 5-7.
		want := 1
		if l.ordered {
			want = 3
		}
		if _, splits := rec.get(); splits != want {
			t.Fatalf("%d batches split, want %d: JetStream refuses an atomic batch with a repeated msg id", splits, want)
		}
	})
}

// TestMarkedBatchOfUnknownFate: where publishes can go unanswered, an
// atomic batch carries one msgID, on its first message. Sent again alone,
// that message tells whether the batch was stored: if it was, every
// submitter hears its message's first id and nothing is stored twice; if
// it was not, the batch is stored now, in order.
func TestMarkedBatchOfUnknownFate(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) { testMarkedBatchOfUnknownFate(t, ordered) })
	}
}

func testMarkedBatchOfUnknownFate(t *testing.T, ordered bool) {
	l := atomicTestLog(t)
	l.failover, l.ordered = true, ordered
	c := l.NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	const n = 2 * atomicMin
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stored := make([]outcome, n)
	batch := testBatch("before", n, stored)
	sent := slices.Clone(batch) // commit clears the batch's slots
	commitWait(t, c, batch)
	for i, p := range sent {
		if (i == 0) != (p.msgID != "") {
			t.Fatalf("message %d has msgID %q: only the first should", i, p.msgID)
		}
	}
	again := make([]outcome, n)
	repeat := testBatch("before", n, again)
	repeat[0].msgID = sent[0].msgID
	var before bool
	toldWait(t, repeat, func() { before = only(t, c).resolveMarked(ctx, repeat, errors.New("test: acknowledgement lost")) })
	if !before {
		t.Fatal("a stored batch was taken for one never stored")
	}
	for i := range again {
		if again[i].err != nil || again[i].seq != stored[i].seq {
			t.Fatalf("message %d: told %+v, first stored as %d", i, again[i], stored[i].seq)
		}
	}
	if got := roomData(t, l, "before"); len(got) != n {
		t.Fatalf("stored %d messages, want %d", len(got), n)
	}

	fresh := make([]outcome, n)
	never := testBatch("never", n, fresh)
	never[0].msgID = only(t, c).ids.Next()
	toldWait(t, never, func() { before = only(t, c).resolveMarked(ctx, never, errors.New("test: acknowledgement lost")) })
	if before {
		t.Fatal("a batch never stored was taken for one stored")
	}
	var want []string
	for i, o := range fresh {
		if o.err != nil || i > 0 && o.seq <= fresh[i-1].seq {
			t.Fatalf("message %d: told %+v after %+v", i, o, fresh[max(i-1, 0)])
		}
		want = append(want, fmt.Sprintf(`{"n":%d}`, i))
	}
	if got := roomData(t, l, "never"); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("stored %v\nwant %v", got, want)
	}
}

// TestReplicatedStreamsWriteSmallBatchesWhole: where order needs atomic
// batches (MessageLog.ordered) a batch with two messages of one sender is
// one, so that a change of leader cannot store the later before the
// earlier; messages of different senders, and every batch under atomicMin
// elsewhere, go as singles.
func TestReplicatedStreamsWriteSmallBatchesWhole(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			l := atomicTestLog(t)
			l.failover, l.ordered = true, ordered
			rec := &batchRecorder{}
			c := l.NewCommitter(rec)
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			var want []string
			for _, b := range []struct {
				n       int
				senders int // the batch's messages take turns among this many senders
			}{{2, 1}, {1, 1}, {3, 3}, {4, 3}, {atomicMin - 1, 1}, {atomicMin, atomicMin}} {
				outs := make([]outcome, b.n)
				batch := testBatch("r", b.n, outs)
				for i, p := range batch {
					p.sender = "u" + strconv.Itoa(i%b.senders)
				}
				commitWait(t, c, batch)
				for i, o := range outs {
					if o.calls != 1 || o.err != nil || i > 0 && o.seq != outs[i-1].seq+1 {
						t.Fatalf("batch of %d, message %d: %+v", b.n, i, o)
					}
					want = append(want, fmt.Sprintf(`{"n":%d}`, i))
				}
			}
			wantBatches := []int{-2, -1, -3, -4, -(atomicMin - 1), atomicMin}
			if ordered {
				wantBatches = []int{2, -1, -3, 4, atomicMin - 1, atomicMin}
			}
			if got, _ := rec.get(); !slices.Equal(got, wantBatches) {
				t.Fatalf("batches %v (negative: singles), want %v", got, wantBatches)
			}
			if got := roomData(t, l, "r"); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("stored %v\nwant %v", got, want)
			}
		})
	}
}

// TestSubmitKeepsEachSubmittersOrder: many submitters at once; each one's
// messages are stored in the order it submitted them, every submitter
// hears of every message, and batches of more than one message formed.
func TestSubmitKeepsEachSubmittersOrder(t *testing.T) {
	for _, d := range []Durability{DurabilityFsync, DurabilityReplicated} {
		t.Run(string(d), func(t *testing.T) {
			l := openTestLog(t, startTestBus(t, t.TempDir(), d), d)
			rec := &batchRecorder{}
			c := l.NewCommitter(rec)
			const submitters, each = 8, 200
			seqs := make([][]uint64, submitters)
			var wg sync.WaitGroup
			var mu sync.Mutex
			for s := range submitters {
				wg.Add(each)
				go func() {
					for i := range each {
						c.Submit(fmt.Sprintf("room%d", s%3), fmt.Appendf(nil, `{"s":%d,"i":%d}`, s, i), "", "", nil, func(seq uint64, err error) {
							defer wg.Done()
							if err != nil {
								t.Errorf("submitter %d message %d: %v", s, i, err)
							}
							mu.Lock()
							seqs[s] = append(seqs[s], seq)
							mu.Unlock()
						})
					}
				}()
			}
			wg.Wait()
			if err := c.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			for s, got := range seqs {
				for i := 1; i < len(got); i++ {
					if got[i] <= got[i-1] {
						t.Fatalf("submitter %d: message %d stored as %d after %d", s, i, got[i], got[i-1])
					}
				}
			}
			batches, _ := rec.get()
			largest, total := 0, 0
			for _, n := range batches {
				largest, total = max(largest, n, -n), total+max(n, -n)
			}
			if total != submitters*each || largest < 2 {
				t.Fatalf("%d messages in %d batches, the largest %d: no group commit", total, len(batches), largest)
			}
			t.Logf("%d messages in %d batches, the largest %d", total, len(batches), largest)
		})
	}
}

// TestCloseStoresWhatWasSubmitted: Close waits for what was submitted;
// later submissions fail at once.
func TestCloseStoresWhatWasSubmitted(t *testing.T) {
	l := openTestLog(t, startTestBus(t, t.TempDir(), DurabilityFsync), DurabilityFsync)
	c := l.NewCommitter(nil)
	outs := make([]outcome, 100)
	for _, p := range testBatch("r", len(outs), outs) {
		c.Submit(p.room, p.data, "", "", nil, p.done)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, o := range outs {
		if o.calls != 1 || o.err != nil {
			t.Fatalf("message %d after Close: %+v", i, o)
		}
	}
	var late error
	c.Submit("r", []byte(`{}`), "", "", nil, func(_ uint64, err error) { late = err })
	if !errors.Is(late, ErrCommitterClosed) {
		t.Fatalf("submit after Close: %v", late)
	}
}

// TestDurabilityChangesOnAnExistingStream: fsync and replicated share a
// stream configuration; fast needs a persist mode JetStream cannot change
// later, and a mismatch stops chatd with an error naming it.
func TestDurabilityChangesOnAnExistingStream(t *testing.T) {
	dir := t.TempDir()
	reopen := func(d Durability) (*MessageLog, error) {
		bus := startBusIn(t, dir, d)
		defer func() { _ = bus.Close(context.Background()) }()
		return bus.OpenMessageLog(context.Background(), LogConfig{Replicas: 1, Durability: d})
	}
	for _, step := range []struct {
		d       Durability
		wantErr string
	}{
		{DurabilityFsync, ""},
		{DurabilityReplicated, ""},
		{DurabilityFast, "persist_mode default, --durability fast needs async"},
		{DurabilityFsync, ""},
	} {
		l, err := reopen(step.d)
		switch {
		case step.wantErr == "" && err != nil:
			t.Fatalf("%s: %v", step.d, err)
		case step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)):
			t.Fatalf("%s: error %v, want one naming %q", step.d, err, step.wantErr)
		case err == nil && (l.atomic || l.syncs != (step.d == DurabilityFsync)):
			t.Fatalf("%s on one node: atomic batches %v, chatd syncs %v", step.d, l.atomic, l.syncs)
		}
	}

	dir = t.TempDir()
	if _, err := reopen(DurabilityFast); err != nil {
		t.Fatal(err)
	}
	if _, err := reopen(DurabilityFsync); err == nil || !strings.Contains(err.Error(), "persist_mode async, --durability fsync needs default") {
		t.Fatalf("fsync on a fast stream: %v", err)
	}
}

// TestStreamJetStreamWillNotUpdateIsNamed: a CHAT_MESSAGES stream made by
// hand with settings JetStream cannot change (here memory storage) stops
// chatd with an error that lists how it differs, not a bare refusal.
func TestStreamJetStreamWillNotUpdateIsNamed(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityFsync)
	ctx := context.Background()
	if _, err := bus.js.CreateStream(ctx, jetstream.StreamConfig{Name: bus.names.MessagesStream(0), Subjects: []string{bus.names.Room("*")},
		Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	_, err := bus.OpenMessageLog(ctx, LogConfig{Replicas: 1, Durability: DurabilityFsync})
	if err == nil || !strings.Contains(err.Error(), "storage: Memory → File") || !strings.Contains(err.Error(), "allow_atomic: false → true") {
		t.Fatalf("open over a memory stream: %v", err)
	}
}

// TestFailureAbandonsWhatFollows: a message that cannot be stored (here
// the stream is gone, so no server answers, as while a cluster has lost
// its majority) is told before any later message is written, and those
// its submitter then abandons are not written, even though the store is
// back by the time their turn comes: a sender's order survives an outage
// (chat.Sequence). Without the abandon, the later messages would be stored
// ahead of the failed one's resend.
func TestFailureAbandonsWhatFollows(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	l := openTestLog(t, bus, DurabilityReplicated)
	c := l.NewCommitter(nil)
	only(t, c).timeout = time.Second
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx := context.Background()
	if err := bus.js.DeleteStream(ctx, bus.names.MessagesStream(0)); err != nil {
		t.Fatal(err)
	}

	var failed atomic.Pointer[error]
	abandon := func() error {
		if p := failed.Load(); p != nil {
			return fmt.Errorf("after an earlier failure: %w", *p)
		}
		return nil
	}
	firstDone := make(chan error, 1)
	var reopened atomic.Pointer[MessageLog]
	c.Submit("r", []byte(`{"n":1}`), "", "", abandon, func(_ uint64, err error) {
		if err != nil {
			failed.Store(&err)
			// The store comes back at once, well before the later
			// messages' own deadlines.
			nl, oerr := bus.OpenMessageLog(ctx, LogConfig{Replicas: 1, DuplicateWindow: time.Minute, MaxMsgSize: 1024, Durability: DurabilityReplicated})
			if oerr != nil {
				t.Error(oerr)
			}
			reopened.Store(nl)
		}
		firstDone <- err
	})
	// The first is taken and being retried: the rest queue behind it.
	waitUntil(t, "the committer to take the first message", func() bool {
		pc := only(t, c)
		pc.mu.Lock()
		defer pc.mu.Unlock()
		return len(pc.queue) == 0
	})
	later := make(chan error, 2)
	for n := 2; n <= 3; n++ {
		c.Submit("r", fmt.Appendf(nil, `{"n":%d}`, n), "", "", abandon, func(_ uint64, err error) { later <- err })
	}
	if err := <-firstDone; !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("the first message: %v, want it unavailable", err)
	}
	for range 2 {
		if err := <-later; err == nil || !strings.Contains(err.Error(), "after an earlier failure") {
			t.Fatalf("a later message: %v, want it abandoned", err)
		}
	}
	nl := reopened.Load()
	if nl == nil {
		t.Fatal("the stream was not recreated")
	}
	// The store takes writes again, and holds none of the abandoned ones.
	stored := make(chan error, 1)
	c.Submit("r", []byte(`{"n":4}`), "", "", nil, func(_ uint64, err error) { stored <- err })
	if err := <-stored; err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if got := roomData(t, nl, "r"); len(got) != 1 || got[0] != `{"n":4}` {
		t.Fatalf("stored %q, want only the message sent after the outage", got)
	}
}
