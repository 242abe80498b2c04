package chat

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
	"github.com/nats-io/nats.go"
)

// roomFeed carries one room's messages to this node's subscribers.
//
// The stream republishes every message on chat.live.<room> once it is
// stored, with its id and the id of the room's previous message. The feed
// holds that core NATS subscription only while the node has subscribers to
// the room, so a node never takes traffic for rooms nobody on it watches.
// Core NATS may drop a message (a slow connection, a leader change); the
// previous-id header shows the hole, and the feed fills it from the stream
// before going on, so subscribers see every id once and in order. A message
// lost at the very end of a burst has no successor to reveal it, so the feed
// also checks the room's newest id a moment after each burst (the probe).
type roomFeed struct {
	svc   *Service
	room  string
	dest  string
	sub   *nats.Subscription
	probe *time.Timer

	mu      sync.Mutex
	last    uint64 // newest id this feed has handed out
	members map[*stompws.Subscription]*roomSub
	stopped bool
}

// roomSub is one subscription's place in the feed.
type roomSub struct {
	ss *stompws.Subscription
	// last is the newest id delivered to this subscription.
	last uint64
	// While replaying, live messages wait in pending; if it overflows it is
	// dropped and the replay reads them from the stream instead.
	replaying bool
	pending   []liveItem
	overflow  bool
	// note goes on the subscription's first MESSAGE (history gap or reset).
	note []stompws.Header
}

type liveItem struct {
	id  uint64
	msg *stompws.Message
}

// maxPending bounds the live messages held for a subscription while it replays.
const maxPending = 1024

// inlineFanout is how many local subscribers a message may have for its
// deliverer to write each frame itself (stompws Deliver): that saves a
// goroutine wake-up per delivery, but the writes run one after another.
// A message to more goes through the sessions' writers
// (DeliverQueued), which run in parallel, so that one large room is not
// one goroutine's serial work. On two cores, at 100 msg/s per room, 10
// rooms of 100 subscribers did better inline, one room of 1,000 through
// the writers (p99 40-48 ms against 76-88; docs/benchmarks.md).
const inlineFanout = 256

// deliverTo delivers m to ss, inline unless the message goes to more
// than inlineFanout subscribers.
func deliverTo(ss *stompws.Subscription, many bool, m *stompws.Message, extra ...stompws.Header) bool {
	if many {
		return ss.DeliverQueued(m, extra...)
	}
	return ss.Deliver(m, extra...)
}

// joinFeed adds sub to the room's feed, starting the feed if needed. With
// replay set, it first delivers the room's messages after since.
func (s *Service) joinFeed(ctx context.Context, room string, sub *stompws.Subscription, since uint64, replay bool) (func(), error) {
	s.mu.Lock()
	f := s.feeds[room]
	if f == nil {
		f = &roomFeed{svc: s, room: room, dest: sub.Destination, members: map[*stompws.Subscription]*roomSub{}}
		if err := f.start(ctx); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.feeds[room] = f
	}
	rs := &roomSub{ss: sub, replaying: replay}
	f.mu.Lock()
	f.members[sub] = rs
	f.mu.Unlock()
	s.mu.Unlock()
	if replay {
		s.async(func() { f.replay(rs, since) })
	}
	return func() { s.leaveFeed(f, sub) }, nil
}

func (s *Service) leaveFeed(f *roomFeed, sub *stompws.Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.mu.Lock()
	delete(f.members, sub)
	empty := len(f.members) == 0
	f.mu.Unlock()
	if empty && s.feeds[f.room] == f {
		delete(s.feeds, f.room)
		f.stop()
	}
}

// start reads the room's newest id, then subscribes: anything stored in
// between shows up as a gap on the next message, or to the first probe.
func (f *roomFeed) start(ctx context.Context) error {
	last, err := f.svc.msgs.LastID(ctx, f.room)
	if err != nil {
		return err
	}
	f.last = last
	sub, err := f.svc.nc.Subscribe(natsbus.RoomLiveSubject(f.room), f.onLive)
	if err != nil {
		return fmt.Errorf("subscribe to room %s: %w", f.room, err)
	}
	// Republished messages may come in bursts; let NATS hold plenty before
	// it drops (a drop is repaired from the stream, but costs a read).
	_ = sub.SetPendingLimits(1<<16, 64<<20)
	f.sub = sub
	f.probe = time.AfterFunc(f.svc.cfg.ProbeDelay, f.runProbe)
	return nil
}

func (f *roomFeed) stop() {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	f.probe.Stop()
	_ = f.sub.Unsubscribe()
}

func (f *roomFeed) onLive(m *nats.Msg) {
	f.svc.liveReceived.Add(1)
	lm, err := natsbus.ParseLive(m)
	if err != nil {
		f.svc.log.Warn("ignoring malformed republished message", "room", f.room, "err", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || lm.Seq <= f.last {
		return
	}
	if lm.PrevSeq > f.last {
		f.catchUpLocked(lm.Seq - 1)
	}
	if lm.Seq > f.last {
		f.publishLocked(lm.StoredMsg)
	}
	f.probe.Reset(f.svc.cfg.ProbeDelay)
}

// runProbe delivers anything stored after the feed's newest id that never
// arrived live.
func (f *roomFeed) runProbe() {
	// Messages still queued for the feed will show any gap themselves; an
	// overloaded node must not add stream reads for every busy room.
	if n, _, err := f.sub.Pending(); err == nil && n > 0 {
		f.probe.Reset(f.svc.cfg.ProbeDelay)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	latest, err := f.svc.msgs.Latest(ctx, f.room, 0)
	if err != nil {
		f.svc.log.Warn("room probe failed", "room", f.room, "err", err)
		return
	}
	if latest == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped && latest.Seq > f.last {
		f.svc.log.Debug("room probe found missed messages", "room", f.room, "from", f.last, "to", latest.Seq)
		f.catchUpLocked(latest.Seq)
	}
}

// catchUpLocked reads from the stream what the feed missed, up to id.
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
			if sm.Seq > upTo {
				return
			}
			f.publishLocked(sm)
		}
	}
}

// publishLocked hands one stored message to every subscriber, encoded once.
func (f *roomFeed) publishLocked(sm natsbus.StoredMsg) {
	f.last = sm.Seq
	msg, err := f.svc.encodeLive(f.room, f.dest, sm)
	if err != nil {
		f.svc.log.Error("encode room message", "room", f.room, "id", sm.Seq, "err", err)
		return
	}
	if msg == nil {
		return
	}
	item := liveItem{id: sm.Seq, msg: msg}
	many := len(f.members) > inlineFanout
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
		s, d := rs.deliver(item, many)
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

// deliver queues it unless the subscription already had it, and reports
// whether it was queued (sent) or refused (dropped).
func (rs *roomSub) deliver(it liveItem, many bool) (sent, dropped int) {
	if it.id <= rs.last {
		return 0, 0
	}
	rs.last = it.id
	var ok bool
	if rs.note != nil {
		ok = deliverTo(rs.ss, many, it.msg, rs.note...)
		rs.note = nil
	} else {
		ok = deliverTo(rs.ss, many, it.msg)
	}
	if ok {
		return 1, 0
	}
	return 0, 1
}

// encode turns stored messages into MESSAGE frames with unread counts.
func (s *Service) encode(ctx context.Context, room, dest string, stored []natsbus.StoredMsg) ([]*stompws.Message, error) {
	msgs, hdrs, err := s.chatMessages(ctx, room, stored)
	if err != nil {
		return nil, err
	}
	out := make([]*stompws.Message, 0, len(msgs))
	for i, m := range msgs {
		sm, err := stompMessage(dest, m, hdrs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, sm)
	}
	return out, nil
}

// encodeLive encodes a message as it is broadcast: with the unreadCount
// its sending node fixed, so every node sends the same. (Messages posted
// straight to NATS carry none and get the current count.)
func (s *Service) encodeLive(room, dest string, sm natsbus.StoredMsg) (*stompws.Message, error) {
	st, err := decodeStored(sm)
	if err != nil {
		s.log.Warn("skipping undecodable message", "err", err)
		return nil, nil
	}
	if st.Unread == nil {
		msgs, err := s.encode(context.Background(), room, dest, []natsbus.StoredMsg{sm})
		if err != nil || len(msgs) == 0 {
			return nil, err
		}
		return msgs[0], nil
	}
	return stompMessage(dest, Message{
		ID: sm.Seq, RoomID: room, UserID: st.UserID, Message: st.Message,
		UnreadCount: *st.Unread, CreatedAt: st.CreatedAt,
	}, st.Headers)
}

// replay delivers the room's stored messages after since, then switches the
// subscription to live delivery with no gap and no duplicate: live messages
// that arrive meanwhile wait in pending, and whatever of them the replay
// already delivered is skipped by id.
func (f *roomFeed) replay(rs *roomSub, since uint64) {
	ctx := rs.ss.Session().Context()
	log := rs.ss.Session().Logger() // carries the session id and user
	metrics := f.svc.cfg.Metrics
	cursor, note, below, err := f.replayStart(ctx, since)
	if err != nil {
		metrics.Replayed(ReplayFailed)
		log.Warn("replay failed", "room", f.room, "since", since, "err", err)
		rs.ss.Session().Close(&stompws.Error{Message: "history unavailable, resubscribe"})
		return
	}
	switch {
	case note == nil:
		metrics.Replayed(ReplayComplete)
	case note[0].Value == historyGap:
		metrics.Replayed(ReplayGap)
	default:
		metrics.Replayed(ReplayReset)
	}
	f.mu.Lock()
	rs.note = note
	f.mu.Unlock()
	fail := func(what string, err error) {
		if ctx.Err() == nil {
			log.Warn("replay failed", "room", f.room, "step", what, "after", cursor, "err", err)
			rs.ss.Session().Close(&stompws.Error{Message: "history unavailable, resubscribe"})
		}
	}
	for {
		// Everything up to the leader's newest id is stored; read it all,
		// even from a replica that is a moment behind.
		upTo, err := f.svc.msgs.LastID(ctx, f.room)
		if err != nil {
			fail("newest id", err)
			return
		}
		// Ids below below that the stream no longer holds come from the
		// archive (replayStart).
		for cursor < upTo || below > cursor+1 {
			var batch []natsbus.StoredMsg
			if below > cursor+1 {
				if batch, err = f.svc.cfg.Archive.Between(ctx, f.room, cursor, below, replayBatch); err != nil {
					fail("archive", err)
					return
				}
				if len(batch) == 0 {
					cursor = below - 1 // the room has no message in between
					continue
				}
			} else {
				if batch, err = f.svc.msgs.AfterUpTo(ctx, f.room, cursor, upTo, replayBatch); err != nil {
					fail("read", err)
					return
				}
				if cursor < below && len(batch) > 0 && batch[0].Seq > below {
					// More left the stream while the archive was read:
					// they are archived too.
					below = batch[0].Seq
					continue
				}
			}
			msgs, err := f.svc.encode(ctx, f.room, f.dest, batch)
			if err != nil {
				fail("encode", err)
				return
			}
			for i, m := range msgs {
				f.mu.Lock()
				extra := rs.note
				rs.note = nil
				f.mu.Unlock()
				if err := rs.ss.DeliverWait(ctx, m, extra...); err != nil {
					metrics.Delivered(DeliveryReplay, i)
					return // the subscription or session ended
				}
			}
			metrics.Delivered(DeliveryReplay, len(msgs))
			cursor = batch[len(batch)-1].Seq
		}
		// Caught up: switch to live under the feed's lock. Anything stored
		// after upTo was handed to the feed after this subscription joined
		// it, so it is in pending or still to come live.
		f.mu.Lock()
		if _, still := f.members[rs.ss]; !still {
			f.mu.Unlock()
			return
		}
		if rs.overflow {
			rs.pending, rs.overflow = nil, false
			f.mu.Unlock()
			continue
		}
		rs.last = cursor
		sent, dropped := 0, 0
		for _, it := range rs.pending {
			s, d := rs.deliver(it, false)
			sent, dropped = sent+s, dropped+d
		}
		f.countLive(sent, dropped)
		rs.pending, rs.replaying = nil, false
		f.mu.Unlock()
		return
	}
}

// History headers on a subscription's first MESSAGE (docs/protocol.md).
const (
	historyHeader        = "history"
	historyFirstIDHeader = "history-first-id"
	historyGap           = "gap"   // messages after since-id are no longer held
	historyReset         = "reset" // since-id is from an earlier life of the stream
)

// replayStart decides where a replay begins, whether the client must be
// told that the history it asks for is incomplete, and, with an archive,
// below which id the replay reads from the archive: where the stream may
// have dropped messages after the cursor, the archive has them.
func (f *roomFeed) replayStart(ctx context.Context, since uint64) (cursor uint64, note []stompws.Header, below uint64, err error) {
	st, err := f.svc.msgs.State(ctx)
	if err != nil {
		return 0, nil, 0, err
	}
	first, err := f.svc.msgs.After(ctx, f.room, 0, 1)
	if err != nil {
		return 0, nil, 0, err
	}
	firstID := st.First
	if len(first) > 0 {
		firstID = first[0].Seq
	}
	kind := ""
	cursor = since
	if since > st.Last || since != 0 && since+1 < st.Epoch {
		// Ids from another life of the stream name nothing here: everything
		// the room holds is new to this client.
		kind, cursor = historyReset, 0
	}
	dropped := cursor+1 < st.First && st.First > st.Epoch
	if max := f.svc.msgs.Config().MaxPerRoom; !dropped && max > 0 && len(first) > 0 && first[0].Seq > cursor+1 {
		n, err := f.svc.msgs.RoomCount(ctx, f.room)
		if err != nil {
			return 0, nil, 0, err
		}
		dropped = int64(n) >= max // the per-room cap removed older messages
	}
	if dropped && f.svc.cfg.Archive != nil {
		below = firstID
		if len(first) == 0 {
			below = st.Last + 1 // the stream holds nothing of the room
		}
		oldest, err := f.svc.cfg.Archive.Between(ctx, f.room, cursor, below, 1)
		switch {
		case err != nil:
			// Chat goes on without the archive: say what is missing.
			f.svc.log.Warn("archive unavailable: replay reports a gap", "room", f.room, "since", since, "err", err)
			below = 0
		case len(oldest) > 0:
			firstID = oldest[0].Seq
		}
	}
	if dropped && below == 0 && kind == "" {
		kind = historyGap
	}
	if kind != "" {
		note = []stompws.Header{{Name: historyHeader, Value: kind}, {Name: historyFirstIDHeader, Value: strconv.FormatUint(firstID, 10)}}
	}
	return cursor, note, below, nil
}
