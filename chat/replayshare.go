package chat

import (
	"context"
	"sort"
	"sync"
	"time"
)

// replayShare lets a room's replays on this node read each stretch of its
// history once. After a node restarts or a deploy, a room's clients
// reconnect together and replay the same messages; without it each of
// them reads and encodes every one from the store, which the room's
// writers share, once per client. A room's replays take turns at the
// store: while one reads, the others wait for what it brings rather than
// read the same. What they have read stays, within Config.ReplayShare
// bytes on the node, until Config.ReplayShareLinger after the last of
// them ended: a room's clients reconnect over seconds (each after its
// own back-off), and most replays end within milliseconds. A span never
// goes stale: it holds stored messages, which do not change, of one life
// of the log.
type replayShare struct {
	mu      sync.Mutex
	running int
	spans   []replaySpan
	size    int64
	// reading is closed when the store read in progress ends; nil: none.
	reading chan struct{}
	// idle drops the spans once no replay has run for the linger.
	idle *time.Timer
}

// replaySpan is one store read of a replay: every publication a replay
// gives after the cursor after up to last, in id order, in the log's life
// that began at epoch.
type replaySpan struct {
	epoch, after, last uint64
	pubs               []*Publication
	size               int64
}

// replayChunk is what a replay delivers next: pubs, then it goes on after
// next.
type replayChunk struct {
	pubs []*Publication
	next uint64
}

// findLocked returns the next chunk of a replay at cursor that reads up
// to upTo, from a span that covers cursor; ok is false if none does. A
// span holds one read, so a chunk is never longer than a read's batch.
// Called with sh.mu held.
func (sh *replayShare) findLocked(epoch, cursor, upTo uint64) (c replayChunk, ok bool) {
	for _, s := range sh.spans {
		if s.epoch != epoch || s.after > cursor || s.last <= cursor || upTo <= cursor {
			continue
		}
		i := sort.Search(len(s.pubs), func(i int) bool { return s.pubs[i].ID > cursor })
		j := sort.Search(len(s.pubs), func(j int) bool { return s.pubs[j].ID > upTo })
		// Every message of the room in (cursor, min(last, upTo)] is in the
		// span.
		return replayChunk{pubs: s.pubs[i:max(i, j)], next: min(s.last, upTo)}, true
	}
	return replayChunk{}, false
}

// replayJoin counts a replay in; replayLeave counts it out, and once the
// last has left for Config.ReplayShareLinger, replayDrop drops what the
// share holds.
func (f *roomFeed) replayJoin() {
	sh := &f.share
	sh.mu.Lock()
	sh.running++
	if sh.idle != nil {
		sh.idle.Stop()
	}
	sh.mu.Unlock()
}

func (f *roomFeed) replayLeave() {
	sh := &f.share
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.running--; sh.running > 0 || len(sh.spans) == 0 {
		return
	}
	if sh.idle == nil {
		sh.idle = time.AfterFunc(f.svc.cfg.ReplayShareLinger, f.replayDrop)
	} else {
		sh.idle.Reset(f.svc.cfg.ReplayShareLinger)
	}
}

// replayDrop drops what the share holds, unless a replay runs; the feed's
// stop calls it too.
func (f *roomFeed) replayDrop() {
	sh := &f.share
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.running > 0 || sh.size == 0 {
		return
	}
	f.svc.replayHeld.Add(-sh.size)
	f.svc.cfg.Metrics.ReplayShareChanged(-sh.size)
	sh.spans, sh.size = nil, 0
}

// replayNext returns a replay's next chunk after *cursor: shared, when
// another replay of the room on this node has read it, or read from the
// store (replayRead), and kept for the others. A partial replay (the log
// dropped some of what it asks for, and the archive does not fill it in)
// neither shares nor takes a share: its reads lack what others' may hold,
// and its note names the first id it gives. ok false: nothing to
// deliver, *cursor or *below moved. step names what failed.
func (f *roomFeed) replayNext(ctx context.Context, plan replayPlan, cursor, below *uint64, upTo uint64) (c replayChunk, ok bool, step string, err error) {
	if plan.partial {
		return f.readStore(ctx, cursor, below, plan.need, upTo)
	}
	sh := &f.share
	for {
		sh.mu.Lock()
		if c, ok := sh.findLocked(plan.epoch, *cursor, upTo); ok {
			sh.mu.Unlock()
			f.svc.cfg.Metrics.ReplayRead(ReplayShared)
			return c, true, "", nil
		}
		wait := sh.reading
		if wait == nil {
			break
		}
		sh.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return c, false, "", ctx.Err()
		}
	}
	done := make(chan struct{})
	sh.reading = done
	sh.mu.Unlock()
	defer func() {
		sh.mu.Lock()
		sh.reading = nil
		sh.mu.Unlock()
		close(done)
	}()
	from := *cursor
	if c, ok, step, err = f.readStore(ctx, cursor, below, plan.need, upTo); ok {
		f.keepSpan(replaySpan{epoch: plan.epoch, after: from, last: c.next, pubs: c.pubs})
	}
	return c, ok, step, err
}

// readStore reads a replay's next chunk from the store (replayRead), in
// its turn (Config.StoreReads).
func (f *roomFeed) readStore(ctx context.Context, cursor, below *uint64, need, upTo uint64) (c replayChunk, ok bool, step string, err error) {
	release, err := f.svc.admitRead(ctx)
	if err != nil {
		return c, false, "", err
	}
	batch, pubs, step, err := f.replayRead(ctx, cursor, below, need, upTo)
	release()
	if err != nil || batch == nil {
		return c, false, step, err
	}
	f.svc.cfg.Metrics.ReplayRead(ReplayFromStore)
	return replayChunk{pubs: pubs, next: batch[len(batch)-1].ID}, true, "", nil
}

// keepSpan keeps s for the room's other replays, if the node's bound
// (Config.ReplayShare) leaves room for it.
func (f *roomFeed) keepSpan(s replaySpan) {
	for _, p := range s.pubs {
		s.size += publicationSize(p)
	}
	if s.size == 0 || f.svc.cfg.ReplayShare <= 0 {
		return
	}
	sh := &f.share
	sh.mu.Lock()
	defer sh.mu.Unlock()
	held := f.svc.replayHeld.Add(s.size)
	if held > f.svc.cfg.ReplayShare {
		f.svc.replayHeld.Add(-s.size)
		return
	}
	sh.spans = append(sh.spans, s)
	sh.size += s.size
	f.svc.cfg.Metrics.ReplayShareChanged(s.size)
}

// publicationSize estimates the memory p holds: its body, its headers
// and, as an adapter encodes it once for all its subscribers, as much
// again for that.
func publicationSize(p *Publication) int64 {
	n := 2*len(p.Body) + 128
	for _, h := range p.Headers {
		n += 2 * (len(h[0]) + len(h[1]))
	}
	return int64(n)
}
