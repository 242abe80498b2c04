package chat

import (
	"context"
	"sync"
	"time"

	"github.com/chatd/chatd/storage"
)

// roomFeed carries one room's messages to this node's subscribers.
//
// The bus brings each message once it is stored, with its id and the id of
// the room's previous message. The feed holds that watch only while the
// node has subscribers to the room, so a node never takes traffic for
// rooms nobody on it watches. The bus may drop a message (a slow
// connection, a leader change); the previous id shows the hole, and the
// feed fills it from the log before going on, so subscribers see every id
// once and in order. A message lost at the very end of a burst has no
// successor to reveal it, so the feed also checks the room's newest id a
// moment after each burst (the probe).
type roomFeed struct {
	svc   *Service
	room  string
	watch func() // ends the bus's watch
	probe *time.Timer
	// release lets the store drop the room from its working set again
	// (storage.Keeper); a no-op for a store without one.
	release func()

	mu   sync.Mutex
	last uint64 // newest id this feed has handed out
	// probeFails counts the probes in a row the log did not answer.
	probeFails int
	more       int // messages the bus held behind the latest one
	members    map[Subscriber]*roomSub
	stopped    bool
	// dirty holds the subscriptions given messages since the last flush,
	// burst how many messages that was; spare is dirty's other buffer.
	dirty []*roomSub
	spare []*roomSub
	burst int
	// flushed is when the feed last flushed; flushLater, armed while
	// waiting is set, flushes what a busy room gathers (Config.FlushWindow).
	flushed    time.Time
	flushLater *time.Timer
	waiting    bool

	// share holds what the room's replays on this node have read.
	share replayShare
}

// roomSub is one subscription's place in the feed.
type roomSub struct {
	sub Subscriber
	// last is the newest id delivered to this subscription.
	last uint64
	// While replaying, live messages wait in pending; if it overflows it is
	// dropped and the replay reads them from the log instead.
	replaying bool
	pending   []liveItem
	overflow  bool
	// note goes with the subscription's first message (history gap or reset).
	note Note
	// dirty: in the feed's dirty list, to be flushed.
	dirty bool
}

type liveItem struct {
	id  uint64
	pub *Publication
}

// maxPending bounds the live messages held for a subscription while it replays.
const maxPending = 1024

// flushChunk is how many subscribers one goroutine flushes: a room with
// more is flushed by several at once, so that its writes run on as many
// cores as there are rather than one after another.
const flushChunk = 256

// flushAll flushes every subscription in dirty, in chunks of flushChunk
// on goroutines of their own beyond the first, and returns when all are.
func flushAll(dirty []*roomSub) {
	var wg sync.WaitGroup
	for lo := flushChunk; lo < len(dirty); lo += flushChunk {
		chunk := dirty[lo:min(lo+flushChunk, len(dirty))]
		wg.Go(func() {
			for _, rs := range chunk {
				rs.sub.Flush()
			}
		})
	}
	for _, rs := range dirty[:min(flushChunk, len(dirty))] {
		rs.sub.Flush()
	}
	wg.Wait()
}

// maxBurst bounds how many messages a feed queues for its subscribers
// before it flushes them, while the bus has more waiting: enough that a
// busy room's subscribers get many messages per write, few enough that
// the first of them does not wait long for the last.
const maxBurst = 64

// maxProbeRetry bounds, in probe delays, how long a feed waits between
// probes the log does not answer.
const maxProbeRetry = 5

// feedStartWait bounds a feed's start: reading the room's newest id waits
// for the log's leader, which a cluster may be electing.
const feedStartWait = 30 * time.Second

// joinFeed adds sub to the room's feed, starting the feed if needed. With
// replay set, it first delivers the room's messages after since.
func (s *Service) joinFeed(ctx context.Context, room string, sub Subscriber, since uint64, replay bool) (func(), error) {
	f, release, err := s.feeds.acquire(ctx, room, func() (*roomFeed, error) {
		f := &roomFeed{svc: s, room: room, members: map[Subscriber]*roomSub{}}
		sctx, cancel := context.WithTimeout(context.Background(), feedStartWait)
		defer cancel()
		return f, f.start(sctx)
	}, (*roomFeed).stop)
	if err != nil {
		return nil, err
	}
	rs := &roomSub{sub: sub, replaying: replay}
	f.mu.Lock()
	f.members[sub] = rs
	f.mu.Unlock()
	if replay {
		s.async(func() { f.replay(ctx, rs, since) })
	}
	return func() {
		f.mu.Lock()
		delete(f.members, sub)
		f.mu.Unlock()
		release()
	}, nil
}

// start reads the room's newest id, then watches: anything stored in
// between shows up as a gap on the next message, or to the first probe.
//
// While the feed runs, the store keeps the room in its working set: the
// room's subscribers send to it, and their sends should never wait for a
// load.
func (f *roomFeed) start(ctx context.Context) error {
	last, err := f.svc.msgs.LastID(ctx, f.room)
	if err != nil {
		return err
	}
	// Set before the watch starts: its first message may come at once,
	// and onLive reads both.
	f.mu.Lock()
	f.last = last
	f.probe = time.AfterFunc(f.svc.cfg.ProbeDelay, f.runProbe)
	f.mu.Unlock()
	stop, err := f.svc.bus.WatchRoom(f.room, f.onLive)
	if err != nil {
		f.probe.Stop()
		return err
	}
	release := func() {}
	if k, ok := f.svc.store.(storage.Keeper); ok {
		release = k.Keep(f.room)
	}
	f.mu.Lock()
	f.watch, f.release = stop, release
	f.mu.Unlock()
	return nil
}

func (f *roomFeed) stop() {
	f.mu.Lock()
	done := f.stopped
	f.stopped = true
	f.mu.Unlock()
	if !done {
		f.probe.Stop()
		f.watch()
		f.release()
		f.replayDrop()
		f.mu.Lock()
		if f.flushLater != nil {
			f.flushLater.Stop()
		}
		f.flushUnlock() // whoever is still subscribed gets what was gathered
	}
}

// onLive takes the bus's next message. It flushes the subscribers once
// the bus has nothing more waiting, or maxBurst messages on.
func (f *roomFeed) onLive(m storage.Message, prev uint64, more int) {
	f.svc.cfg.Metrics.LiveReceived()
	f.mu.Lock()
	f.more = more
	if !f.stopped && m.ID > f.last {
		if prev > f.last {
			f.catchUpLocked(m.ID - 1)
		}
		if m.ID > f.last {
			f.publishLocked(m)
		}
		f.probe.Reset(f.svc.cfg.ProbeDelay)
	}
	if f.burst < maxBurst {
		if more > 0 || f.waiting {
			f.mu.Unlock()
			return
		}
		if wait := f.svc.cfg.FlushWindow - time.Since(f.flushed); wait > 0 {
			// Busy: gather until the window ends.
			f.waiting = true
			if f.flushLater == nil {
				f.flushLater = time.AfterFunc(wait, f.flushWaiting)
			} else {
				f.flushLater.Reset(wait)
			}
			f.mu.Unlock()
			return
		}
	}
	f.flushUnlock()
}

// flushWaiting ends a busy room's flush window.
func (f *roomFeed) flushWaiting() {
	f.mu.Lock()
	f.flushUnlock()
}

// flushUnlock flushes the subscriptions given messages since the last
// flush, after releasing f.mu (held by the caller): a flush writes to
// clients. Any goroutine that delivered calls it; each flush sends all
// that its sessions have queued, whoever queued it.
func (f *roomFeed) flushUnlock() {
	f.burst, f.waiting = 0, false
	f.flushed = time.Now()
	dirty := f.dirty
	if len(dirty) == 0 {
		f.mu.Unlock()
		return
	}
	f.dirty, f.spare = f.spare[:0], nil
	for _, rs := range dirty {
		rs.dirty = false
	}
	f.mu.Unlock()
	flushAll(dirty)
	clear(dirty)
	f.mu.Lock()
	if f.spare == nil {
		f.spare = dirty[:0]
	}
	f.mu.Unlock()
}

// runProbe delivers anything stored after the feed's newest id that never
// arrived live.
func (f *roomFeed) runProbe() {
	f.mu.Lock()
	more := f.more
	f.mu.Unlock()
	// Messages still queued for the feed will show any gap themselves; an
	// overloaded node must not add log reads for every busy room.
	if more > 0 {
		f.probe.Reset(f.svc.cfg.ProbeDelay)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	latest, err := f.svc.msgs.Latest(ctx, f.room, 0)
	f.mu.Lock()
	if err != nil {
		// Probe again until the log answers: a message lost while it
		// could not (a leader election, a lost hub) may have been the
		// room's last, which nothing else would reveal.
		f.probeFails++
		if f.probeFails == 1 {
			f.svc.log.Warn("room probe failed; retrying", "room", f.room, "err", err)
		}
		if !f.stopped {
			f.probe.Reset(min(f.svc.cfg.ProbeDelay<<min(f.probeFails, 8), maxProbeRetry*f.svc.cfg.ProbeDelay))
		}
		f.mu.Unlock()
		return
	}
	f.probeFails = 0
	if latest == nil {
		f.mu.Unlock()
		return
	}
	if !f.stopped && latest.ID > f.last {
		f.svc.log.Debug("room probe found missed messages", "room", f.room, "from", f.last, "to", latest.ID)
		f.catchUpLocked(latest.ID)
	}
	f.flushUnlock()
}

// catchUpLocked reads from the log what the feed missed, up to id.
func (f *roomFeed) catchUpLocked(upTo uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for f.last < upTo {
		batch, err := f.svc.msgs.AfterUpTo(ctx, f.room, f.last, upTo, replayBatch)
		if err != nil {
			f.svc.log.Warn("room catch-up failed", "room", f.room, "after", f.last, "err", err)
			return
		}
		if len(batch) == 0 {
			return
		}
		for _, sm := range batch {
			if sm.ID > upTo {
				return
			}
			f.publishLocked(sm)
		}
	}
}

// publishLocked hands one stored message to every subscriber, encoded once.
func (f *roomFeed) publishLocked(sm storage.Message) {
	f.last = sm.ID
	pub, err := f.svc.livePublication(sm)
	if err != nil {
		f.svc.log.Error("encode room message", "room", f.room, "id", sm.ID, "err", err)
		return
	}
	if pub == nil {
		return
	}
	f.burst++
	item := liveItem{id: sm.ID, pub: pub}
	sent, dropped := 0, 0
	for _, rs := range f.members {
		if rs.replaying {
			if rs.overflow {
				continue
			}
			if len(rs.pending) >= maxPending {
				rs.pending, rs.overflow = nil, true
				continue
			}
			rs.pending = append(rs.pending, item)
			continue
		}
		s, d := f.deliverLocked(rs, item)
		sent, dropped = sent+s, dropped+d
	}
	f.countLive(sent, dropped)
}

// countLive tells the metrics of one message's live deliveries, once for
// all subscribers rather than once each.
func (f *roomFeed) countLive(sent, dropped int) {
	if sent > 0 {
		f.svc.cfg.Metrics.Delivered(DeliveryLive, sent)
	}
	if dropped > 0 {
		f.svc.cfg.Metrics.Dropped(dropped)
	}
}

// deliverLocked hands it to rs unless rs already had it, marks rs for
// the next flush, and reports whether it was taken (sent) or refused
// (dropped).
func (f *roomFeed) deliverLocked(rs *roomSub, it liveItem) (sent, dropped int) {
	if it.id <= rs.last {
		return 0, 0
	}
	rs.last = it.id
	note := rs.note
	rs.note = Note{}
	if !rs.dirty {
		rs.dirty = true
		f.dirty = append(f.dirty, rs)
	}
	if rs.sub.Deliver(it.pub, note) {
		return 1, 0
	}
	return 0, 1
}

// livePublication makes a message's publication as it is broadcast: with
// the unreadCount its sending node fixed, so every node sends the same.
// (Messages a backend stored by hand carry none and get the current
// count.) nil: the message cannot be read, and is skipped.
func (s *Service) livePublication(sm storage.Message) (*Publication, error) {
	st, err := decodeStored(sm)
	if err != nil {
		s.log.Warn("skipping undecodable message", "err", err)
		return nil, nil
	}
	if st.Unread == nil {
		pubs, err := s.publications(context.Background(), sm.Room, []storage.Message{sm})
		if err != nil || len(pubs) == 0 {
			return nil, err
		}
		return pubs[0], nil
	}
	return publication(Message{
		ID: sm.ID, RoomID: sm.Room, UserID: st.UserID, Message: st.Message,
		UnreadCount: *st.Unread, CreatedAt: st.CreatedAt, Extra: st.Extra, fields: &s.cfg.Fields,
	}, st.Headers)
}

// publications makes stored messages into publications with their
// current unread counts.
func (s *Service) publications(ctx context.Context, room string, stored []storage.Message) ([]*Publication, error) {
	msgs, hdrs, err := s.chatMessages(ctx, room, stored)
	if err != nil {
		return nil, err
	}
	out := make([]*Publication, 0, len(msgs))
	for i, m := range msgs {
		p, err := publication(m, hdrs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
