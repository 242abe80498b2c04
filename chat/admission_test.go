package chat_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/storage"
)

// slowLog is a message log whose reads each take a while, counting how
// many are under way at once, as a store under a replay storm would.
type slowLog struct {
	chat.MessageLog
	now, most atomic.Int64
}

func (l *slowLog) read() func() {
	n := l.now.Add(1)
	for {
		m := l.most.Load()
		if n <= m || l.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(2 * time.Millisecond)
	return func() { l.now.Add(-1) }
}

func (l *slowLog) AfterUpTo(ctx context.Context, room string, after, upTo uint64, n int) ([]storage.Message, error) {
	defer l.read()()
	return l.MessageLog.AfterUpTo(ctx, room, after, upTo, n)
}

func (l *slowLog) LastID(ctx context.Context, room string) (uint64, error) {
	defer l.read()()
	return l.MessageLog.LastID(ctx, room)
}

func (l *slowLog) Page(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error) {
	defer l.read()()
	return l.MessageLog.Page(ctx, room, before, limit)
}

// TestStoreReadsTakeTurns: a storm of full replays and history requests
// reads the store at most Config.StoreReads at a time (with a turn for
// everyone, dozens read at once here); the rest wait
// their turn, and every replay completes and every history request is
// answered, none failed for the wait.
func TestStoreReadsTakeTurns(t *testing.T) {
	b := fakeBackend(t)
	slow := &slowLog{MessageLog: b.log}
	b.log = slow
	s := b.service(t, chat.Config{StoreReads: 3})
	const clients, stored = 60, 600 // three batches each
	users := make([]string, clients)
	for i := range users {
		users[i] = fmt.Sprintf("u%d", i)
	}
	b.join(t, "storm", users...)
	for i := range stored {
		post(t, s, "u0", "storm", fmt.Sprintf("m%d", i))
	}
	var wg sync.WaitGroup
	since := uint64(0)
	for i, u := range users {
		wg.Go(func() {
			if i%4 == 0 {
				msgs, err := s.History(context.Background(), u, "storm", 0, chat.MaxLogLimit)
				if err != nil || len(msgs) != chat.MaxLogLimit {
					t.Errorf("%s's history: %d messages, %v", u, len(msgs), err)
				}
				return
			}
			k := newSink()
			stop, err := s.SubscribeRoom(context.Background(), u, "storm", &since, k)
			if err != nil {
				t.Error(err)
				return
			}
			defer stop()
			if ids, err := k.awaitIDs(stored); err != nil || len(ids) != stored || !ascending(ids) {
				t.Errorf("%s's replay: %d of %d, %v (ended: %v)", u, len(ids), stored, err, k.ended)
			}
		})
	}
	wg.Wait()
	// The room's feed reads on its own too (its newest id when it starts,
	// and its probe after live messages): one read at a time, outside the
	// turns, as it serves every subscriber of the room at once.
	if most := slow.most.Load(); most > 3+1 {
		t.Fatalf("%d store reads at once, want at most 3 and the feed's own", most)
	}
	if slow.most.Load() < 2 {
		t.Fatalf("at most %d store read at once: the test did not load the store", slow.most.Load())
	}
}
