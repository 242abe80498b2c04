package natsbus

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// syncLog records storeSync's fsyncs.
type syncLog struct {
	mu     sync.Mutex
	events []syncEvent
}

type syncEvent struct {
	path  string
	began time.Time
	size  int64 // the file's size when its fsync ended (-1 for directories)
}

func (l *syncLog) hook(path string, began time.Time) {
	size := int64(-1)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	l.mu.Lock()
	l.events = append(l.events, syncEvent{path, began, size})
	l.mu.Unlock()
}

// lastBlock is the last fsync of a block file whose path contains in.
func (l *syncLog) lastBlock(in string) syncEvent {
	var last syncEvent
	for _, e := range l.snapshot() {
		if strings.Contains(e.path, in) && strings.HasSuffix(e.path, ".blk") {
			last = e
		}
	}
	return last
}

func (l *syncLog) snapshot() []syncEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]syncEvent(nil), l.events...)
}

func blockFiles(t *testing.T, msgs string) []string {
	t.Helper()
	blocks, err := filepath.Glob(filepath.Join(msgs, "*.blk"))
	if err != nil {
		t.Fatal(err)
	}
	return blocks
}

// TestStoreSyncFollowsBlocks writes through group commit, with chatd
// syncing, until the stream has moved through several block files, and
// checks after every batch that each block holding messages was fsynced
// at its current size (so after the batch's writes), and that the block
// directory was fsynced after each block appeared in it.
func TestStoreSyncFollowsBlocks(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityFsync)
	if bus.storeSync == nil {
		t.Fatal("one embedded server with --durability fsync: chatd must sync, not the server")
	}
	var rec syncLog
	bus.storeSync.synced = rec.hook
	l := openTestLog(t, bus, DurabilityFsync)
	if l.atomic || !l.syncs {
		t.Fatalf("where chatd syncs, group commit must publish singles and sync: atomic=%v syncs=%v", l.atomic, l.syncs)
	}
	c := l.NewCommitter(nil)
	t.Cleanup(func() { _ = c.Close(context.Background()) })

	payload := []byte(strings.Repeat("x", 900))
	var msgs string
	for round := 0; ; round++ {
		if round == 60 {
			t.Fatalf("60 batches of 500 messages did not fill three blocks: %v", blockFiles(t, msgs))
		}
		var wg sync.WaitGroup
		errs := make(chan error, 500)
		for i := range 500 {
			wg.Add(1)
			c.Submit("room"+string(rune('a'+i%5)), payload, "", "", nil, func(_ uint64, err error) {
				if err != nil {
					errs <- err
				}
				wg.Done()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		if msgs == "" {
			matches, _ := filepath.Glob(filepath.Join(bus.srv.JetStreamConfig().StoreDir, "*", "streams", bus.names.MessagesStream(0), "msgs"))
			if len(matches) != 1 {
				t.Fatalf("messages stream's block directory: %v", matches)
			}
			msgs = matches[0]
		}
		events := rec.snapshot()
		blocks := blockFiles(t, msgs)
		for _, blk := range blocks {
			fi, err := os.Stat(blk)
			if err != nil {
				t.Fatal(err)
			}
			first, atSize, dirAfter := -1, false, false
			for k, e := range events {
				if e.path == blk {
					if first < 0 {
						first = k
					}
					atSize = atSize || e.size == fi.Size()
				}
				if e.path == msgs && first >= 0 && k > first {
					dirAfter = true
				}
			}
			if !atSize {
				t.Fatalf("round %d: block %s (%d bytes) was never fsynced at its current size", round, blk, fi.Size())
			}
			if !dirAfter {
				t.Fatalf("round %d: the block directory was not fsynced after block %s appeared", round, blk)
			}
		}
		if len(blocks) >= 3 {
			t.Logf("%d batches of 500 filled %d blocks; %d fsyncs", round+1, len(blocks), len(events))
			return
		}
	}
}

// TestStoreSyncSharedRounds calls Sync from many goroutines at once, each
// right after its own write was acknowledged: every call must return only
// after an fsync of the stream's newest block that began after the call.
// Syncs are shared, so there must be fewer fsyncs than calls.
func TestStoreSyncSharedRounds(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityFsync)
	var rec syncLog
	bus.storeSync.synced = rec.hook
	l := openTestLog(t, bus, DurabilityFsync)
	const workers, each = 16, 40
	type call struct {
		began, ended time.Time
	}
	calls := make(chan call, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for range each {
				fut, err := l.publishAsync("r"+string(rune('a'+w)), []byte("hello"), "")
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := l.await(ctx, fut, &pending{room: "r", data: []byte("hello")}, nil); err != nil {
					t.Error(err)
					return
				}
				began := time.Now()
				if err := bus.sync(ctx, bus.names.MessagesStream(0)); err != nil {
					t.Error(err)
					return
				}
				calls <- call{began, time.Now()}
			}
		}()
	}
	wg.Wait()
	close(calls)
	events := rec.snapshot()
	blockSyncs := 0
	for _, e := range events {
		if strings.HasSuffix(e.path, ".blk") {
			blockSyncs++
		}
	}
	n := 0
	for c := range calls {
		n++
		covered := false
		for _, e := range events {
			if strings.HasSuffix(e.path, ".blk") && !e.began.Before(c.began) && e.began.Before(c.ended) {
				covered = true
				break
			}
		}
		if !covered {
			t.Fatalf("a Sync called at %v returned at %v with no block fsync begun in between", c.began, c.ended)
		}
	}
	if n != workers*each {
		t.Fatalf("%d of %d calls finished", n, workers*each)
	}
	if blockSyncs >= n {
		t.Fatalf("%d calls made %d block fsyncs: concurrent calls do not share them", n, blockSyncs)
	}
	t.Logf("%d calls, %d block fsyncs", n, blockSyncs)
}

// TestStoreSyncOnlyUnclustered: chatd syncs for one embedded server in
// fsync mode only; with the other modes the bus leaves syncing alone.
func TestStoreSyncOnlyUnclustered(t *testing.T) {
	for _, d := range []Durability{DurabilityReplicated, DurabilityFast} {
		bus := startTestBus(t, t.TempDir(), d)
		if bus.storeSync != nil {
			t.Fatalf("--durability %s: chatd must not sync", d)
		}
		if err := bus.sync(context.Background(), bus.names.MessagesStream(0)); err != nil {
			t.Fatalf("--durability %s: Sync: %v", d, err)
		}
	}
}

// TestSyncBucketSyncsItsStream: a KV bucket's writes are synced like the
// messages stream's: each write fsyncs the block of the bucket's stream
// (KV_<bucket>) before it returns.
func TestSyncBucketSyncsItsStream(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityFsync)
	var rec syncLog
	bus.storeSync.synced = rec.hook
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const bucket = "SYNCED"
	kv, err := bus.OpenBucket(ctx, bucket, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	var rev uint64
	for i := range 3 {
		if i == 0 {
			rev, err = kv.Create(ctx, "room.alice", []byte(strconv.Itoa(i)))
		} else {
			rev, err = kv.Update(ctx, "room.alice", []byte(strconv.Itoa(i)), rev)
		}
		if err != nil {
			t.Fatal(err)
		}
		last := rec.lastBlock("") // of any stream
		want := string(filepath.Separator) + filepath.Join("streams", "KV_"+kv.Name(), "msgs") + string(filepath.Separator)
		if !strings.Contains(last.path, want) || !strings.HasSuffix(last.path, ".blk") {
			t.Fatalf("put %d: last fsync %s, want a block of KV_%s", i, last.path, kv.Name())
		}
		if fi, err := os.Stat(last.path); err != nil || fi.Size() != last.size {
			t.Fatalf("put %d: block fsynced at %d bytes, now %v (%v)", i, last.size, fi.Size(), err)
		}
	}
}

// TestStoreSyncAfterStreamRemade: a stream removed and made anew (as
// chatd does when someone deletes CHAT_MESSAGES by hand) starts its
// blocks from 1 again in a new directory; Sync must follow it there.
func TestStoreSyncAfterStreamRemade(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityFsync)
	var rec syncLog
	bus.storeSync.synced = rec.hook
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// MaxBytes makes JetStream's smallest blocks (32 KB), so that the first
	// life ends beyond block 1 and the second starts below it.
	cfg := jetstream.StreamConfig{Name: "REMADE", Subjects: []string{"remade.>"}, MaxBytes: 100_000}
	put := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := bus.js.Publish(ctx, "remade.x", []byte(strings.Repeat("y", 100+i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := bus.sync(ctx, "REMADE"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bus.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	put(400)
	before := rec.lastBlock("/streams/REMADE/msgs/")
	if strings.HasSuffix(before.path, "/1.blk") {
		t.Fatalf("the first life did not get past block 1: %s", before.path)
	}
	if err := bus.js.DeleteStream(ctx, "REMADE"); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	put(3)
	after := rec.lastBlock("/streams/REMADE/msgs/")
	fi, err := os.Stat(after.path)
	if err != nil {
		t.Fatalf("last block fsynced, %s: %v", after.path, err)
	}
	if !after.began.After(before.began) || fi.Size() != after.size {
		t.Fatalf("after the stream was made anew: last block fsync %s at %d bytes (now %d), before it %s at %v",
			after.path, after.size, fi.Size(), before.path, before.began)
	}
}
