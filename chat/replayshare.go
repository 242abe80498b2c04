package chat

import (
	"context"
	"slices"
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
// own back-off), and most replays end within milliseconds. Stored
// messages do not change, and spans of another life of the log are
// dropped, so what the share holds does not go stale.
type replayShare struct {
	mu      sync.Mutex
	running int
	// spans are disjoint, in id order, of the log's life that began at
	// epoch; each holds every publication a replay gives in (after, last].
	epoch uint64
	spans []replaySpan
	size  int64
	// reading is closed when the store read in progress ends; nil: none.
	reading chan struct{}
	// idle drops the spans once no replay has run for the linger.
	idle *time.Timer
}

// replaySpan is what replays read of a stretch of the room: every
// publication a replay gives after the id after up to last, in id order.
type replaySpan struct {
	after, last uint64
	pubs        []*Publication
	size        int64
}

// replayChunk is what a replay delivers next: pubs, then it goes on after
// next.
type replayChunk struct {
	pubs []*Publication
	next uint64
}

// findLocked returns the next chunk, at most a read's batch, of a replay
// at cursor that reads up to upTo, from the span that covers cursor; ok
// is false if none does. Called with sh.mu held.
func (sh *replayShare) findLocked(epoch, cursor, upTo uint64) (c replayChunk, ok bool) {
	if epoch != sh.epoch || upTo <= cursor {
		return c, false
	}
	k := sort.Search(len(sh.spans), func(k int) bool { return sh.spans[k].after > cursor }) - 1
	if k < 0 || sh.spans[k].last <= cursor {
		return c, false
	}
	s := sh.spans[k]
	i := sort.Search(len(s.pubs), func(i int) bool { return s.pubs[i].ID > cursor })
	j := max(i, sort.Search(len(s.pubs), func(j int) bool { return s.pubs[j].ID > upTo }))
	if j-i > replayBatch {
		j = i + replayBatch
		return replayChunk{pubs: s.pubs[i:j], next: s.pubs[j-1].ID}, true
	}
	// Every message of the room in (cursor, min(last, upTo)] is in the span.
	return replayChunk{pubs: s.pubs[i:j], next: min(s.last, upTo)}, true
}

// addLocked adds a read of the epoch's (after, last], merged with the
// spans it overlaps or touches, and returns by how many bytes the share
// grew (negative where it dropped another epoch's spans). Called with
// sh.mu held.
func (sh *replayShare) addLocked(epoch, after, last uint64, pubs []*Publication) (grown int64) {
	if epoch != sh.epoch {
		grown = -sh.size
		sh.epoch, sh.spans, sh.size = epoch, nil, 0
	}
	lo := sort.Search(len(sh.spans), func(k int) bool { return sh.spans[k].last >= after })
	hi := sort.Search(len(sh.spans), func(k int) bool { return sh.spans[k].after > last })
	m := replaySpan{after: after, last: last}
	var old int64
	switch {
	case lo == hi: // touches none
		m.pubs = pubs
		for _, p := range pubs {
			m.size += publicationSize(p)
		}
	case hi-lo == 1 && sh.spans[lo].last == after: // follows on from one, as a replay reads
		m = sh.spans[lo]
		old = m.size
		m.last = last
		for _, p := range pubs {
			m.pubs = append(m.pubs, p)
			m.size += publicationSize(p)
		}
	default:
		m.after, m.last = min(after, sh.spans[lo].after), max(last, sh.spans[hi-1].last)
		var held []*Publication
		for _, s := range sh.spans[lo:hi] {
			held = append(held, s.pubs...)
			old += s.size
		}
		for i, j := 0, 0; i < len(held) || j < len(pubs); {
			var p *Publication
			switch {
			case j == len(pubs) || i < len(held) && held[i].ID < pubs[j].ID:
				p, i = held[i], i+1
			case i == len(held) || pubs[j].ID < held[i].ID:
				p, j = pubs[j], j+1
			default: // the same message, read twice
				p, i, j = held[i], i+1, j+1
			}
			m.pubs = append(m.pubs, p)
			m.size += publicationSize(p)
		}
	}
	sh.spans = slices.Replace(sh.spans, lo, hi, m)
	sh.size += m.size - old
	return grown + m.size - old
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
		f.keepRead(plan.epoch, from, c.next, c.pubs)
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

// keepRead keeps a read of (after, last] for the room's other replays,
// if the node's bound (Config.ReplayShare) leaves room for it.
func (f *roomFeed) keepRead(epoch, after, last uint64, pubs []*Publication) {
	var size int64
	for _, p := range pubs {
		size += publicationSize(p)
	}
	if size == 0 || f.svc.cfg.ReplayShare <= 0 {
		return
	}
	// Reserved before it is added, so that rooms adding at once stay
	// within the bound together; what merging saved is given back.
	if f.svc.replayHeld.Add(size) > f.svc.cfg.ReplayShare {
		f.svc.replayHeld.Add(-size)
		return
	}
	sh := &f.share
	sh.mu.Lock()
	defer sh.mu.Unlock()
	grown := sh.addLocked(epoch, after, last, pubs)
	f.svc.replayHeld.Add(grown - size)
	f.svc.cfg.Metrics.ReplayShareChanged(grown)
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
