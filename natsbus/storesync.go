package natsbus

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// storeSync makes what one embedded, unclustered JetStream server has
// written durable by fsyncing the stream's files from chatd, once per
// group commit, instead of having the server sync every write
// (sync_interval: always).
//
// Why: a one-replica stream whose server syncs every write stores about
// 4,000 single messages a second (one sync each), and an atomic batch,
// synced once, costs 3.5 ms before its first message because JetStream
// stages it in a synced store of its own (docs/benchmarks.md, Group
// commit). Unsynced single publishes cost 12-15 µs each; one fsync of the
// block they went to costs 0.3 ms. So with --durability fsync on one node,
// the server does not sync, group commit publishes a batch's messages
// unsynced, waits for JetStream's acknowledgements, and then syncs here.
//
// Why it is sound: a one-replica file store writes each message to its
// block file (a write(2), nats-server's "flush in place") before it
// acknowledges it; only replicated stores and async persist mode defer the
// write, and neither is used with this. fsync on any descriptor of a file
// makes every write to that file before it durable, and the block
// directory's fsync makes new block files durable. Blocks are numbered in
// the order they are created, so a write acknowledged before a sync
// starts is in the block synced last time or a newer one.
type storeSync struct {
	dir string // the JetStream store dir of the embedded server

	mu      sync.Mutex
	streams map[string]*streamSync

	// synced, when set (tests), hears of every fsync: the path and when the
	// fsync began.
	synced func(path string, began time.Time)
}

func newStoreSync(storeDir string) *storeSync {
	return &storeSync{dir: storeDir, streams: map[string]*streamSync{}}
}

// sync returns once every write JetStream acknowledged for the stream
// before the call is on disk.
func (s *storeSync) sync(ctx context.Context, stream string) error {
	s.mu.Lock()
	st := s.streams[stream]
	if st == nil {
		st = &streamSync{store: s, name: stream}
		s.streams[stream] = st
	}
	s.mu.Unlock()
	return st.sync(ctx)
}

// close releases the open block files.
func (s *storeSync) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.streams {
		st.close()
	}
}

// streamSync syncs one stream. Syncs are group commits of their own: one
// runs at a time, and the callers that come while it runs share the next.
type streamSync struct {
	store *storeSync
	name  string

	mu      sync.Mutex
	running *syncRound // the sync under way, nil when idle
	next    *syncRound // the sync that starts after it, for callers meanwhile

	// Owned by the goroutine running the rounds.
	msgs  string   // the stream's block directory, found on first use
	blk   *os.File // the newest block synced
	index uint64   // its number
}

type syncRound struct {
	done chan struct{}
	err  error
}

func (st *streamSync) sync(ctx context.Context) error {
	st.mu.Lock()
	var r *syncRound
	switch {
	case st.running == nil:
		r = &syncRound{done: make(chan struct{})}
		st.running = r
		go st.run(r)
	case st.next == nil:
		// The running round may have begun before the caller's write was
		// acknowledged: only one that starts after this call covers it.
		st.next = &syncRound{done: make(chan struct{})}
		r = st.next
	default:
		r = st.next
	}
	st.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("sync stream %s: %w", st.name, ctx.Err())
	}
}

// run performs r and then every round queued behind it.
func (st *streamSync) run(r *syncRound) {
	for r != nil {
		r.err = st.flush()
		close(r.done)
		st.mu.Lock()
		r, st.next = st.next, nil
		st.running = r
		st.mu.Unlock()
	}
}

func (st *streamSync) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.running == nil && st.blk != nil {
		_ = st.blk.Close()
		st.blk = nil
	}
}

// flush fsyncs the newest block, and when blocks have come or gone since
// the last flush, every block from the last one synced on and the block
// directory.
func (st *streamSync) flush() error {
	if st.msgs == "" {
		if err := st.locate(); err != nil {
			return err
		}
	}
	from := uint64(0)
	if st.blk != nil {
		if err := st.fsync(st.blk); err != nil {
			return err
		}
		cur, err := os.Stat(st.blk.Name())
		own, oerr := st.blk.Stat()
		if err == nil && oerr == nil && os.SameFile(cur, own) {
			if _, err := os.Stat(st.blockPath(st.index + 1)); errors.Is(err, fs.ErrNotExist) {
				return nil // still the newest block, and synced
			}
			from = st.index
		} else {
			// The block is gone: the stream was purged, or removed and
			// made anew. Start again, its metadata included.
			if err := st.locate(); err != nil {
				return err
			}
		}
	}
	return st.rescan(from)
}

// rescan syncs every block numbered from on (all of them the first time:
// writes of an earlier run may not have been synced) and then the
// directory, and keeps the newest block open.
func (st *streamSync) rescan(from uint64) error {
	entries, err := os.ReadDir(st.msgs)
	if err != nil {
		return fmt.Errorf("sync stream %s: %w", st.name, err)
	}
	var blocks []uint64
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".blk"); ok {
			if i, err := strconv.ParseUint(n, 10, 64); err == nil && i >= from {
				blocks = append(blocks, i)
			}
		}
	}
	slices.Sort(blocks)
	if st.blk != nil {
		_ = st.blk.Close()
		st.blk = nil
	}
	for k, i := range blocks {
		f, err := os.Open(st.blockPath(i))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile: its messages are gone
		}
		if err != nil {
			return fmt.Errorf("sync stream %s: %w", st.name, err)
		}
		if err := st.fsync(f); err != nil {
			_ = f.Close()
			return err
		}
		if k == len(blocks)-1 {
			st.blk, st.index = f, i
		} else {
			_ = f.Close()
		}
	}
	return st.syncPath(st.msgs)
}

// locate finds the stream's block directory and syncs what makes the
// stream itself survive: its metadata files and the directories above
// them, written when the stream was created.
func (st *streamSync) locate() error {
	matches, err := filepath.Glob(filepath.Join(st.store.dir, "*", "streams", st.name))
	if err != nil || len(matches) != 1 {
		return fmt.Errorf("sync stream %s: its directory in %s not found (%d matches)", st.name, st.store.dir, len(matches))
	}
	sdir := matches[0]
	entries, err := os.ReadDir(sdir)
	if err != nil {
		return fmt.Errorf("sync stream %s: %w", st.name, err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := st.syncPath(filepath.Join(sdir, e.Name())); err != nil {
				return err
			}
		}
	}
	for _, d := range []string{sdir, filepath.Dir(sdir), filepath.Dir(filepath.Dir(sdir))} {
		if err := st.syncPath(d); err != nil {
			return err
		}
	}
	st.msgs = filepath.Join(sdir, "msgs")
	return nil
}

func (st *streamSync) blockPath(i uint64) string {
	return filepath.Join(st.msgs, strconv.FormatUint(i, 10)+".blk")
}

func (st *streamSync) fsync(f *os.File) error {
	began := time.Now()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync stream %s: %w", st.name, err)
	}
	if st.store.synced != nil {
		st.store.synced(f.Name(), began)
	}
	return nil
}

func (st *streamSync) syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync stream %s: %w", st.name, err)
	}
	defer func() { _ = f.Close() }()
	return st.fsync(f)
}
