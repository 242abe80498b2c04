package chat

import (
	"context"

	"github.com/chatd/chatd/storage"
)

// replayBatch is how many stored messages one read returns in a replay.
const replayBatch = 256

// errHistoryUnavailable ends a session whose replay could not be read.
var errHistoryUnavailable = &Error{Kind: Unavailable, Msg: "history unavailable, resubscribe"}

// replay delivers the room's stored messages after since, then switches the
// subscription to live delivery with no gap and no duplicate: live messages
// that arrive meanwhile wait in pending, and whatever of them the replay
// already delivered is skipped by id. ctx is the subscriber's: it ends
// with the subscription's session.
func (f *roomFeed) replay(ctx context.Context, rs *roomSub, since uint64) {
	log := rs.sub.Logger()
	metrics := f.svc.cfg.Metrics
	f.replayJoin()
	defer f.replayLeave()
	release, err := f.svc.admitRead(ctx)
	if err != nil {
		return // the subscription or session ended while it waited
	}
	plan, err := f.replayStart(ctx, since)
	release()
	if err != nil {
		metrics.Replayed(ReplayFailed)
		log.Warn("replay failed", "room", f.room, "since", since, "err", err)
		rs.sub.End(errHistoryUnavailable)
		return
	}
	switch plan.note.Kind {
	case NoteNone:
		metrics.Replayed(ReplayComplete)
	case NoteGap:
		metrics.Replayed(ReplayGap)
	default:
		metrics.Replayed(ReplayReset)
	}
	f.mu.Lock()
	rs.note = plan.note
	f.mu.Unlock()
	cursor, below := plan.cursor, plan.below
	fail := func(what string, err error) {
		if ctx.Err() == nil {
			log.Warn("replay failed", "room", f.room, "step", what, "after", cursor, "err", err)
			rs.sub.End(errHistoryUnavailable)
		}
	}
	for {
		// Everything up to the leader's newest id is stored; read it all,
		// even from a replica that is a moment behind. Each read waits
		// its turn (admitRead); none holds one while it delivers.
		release, err := f.svc.admitRead(ctx)
		if err != nil {
			return
		}
		upTo, err := f.svc.msgs.LastID(ctx, f.room)
		release()
		if err != nil {
			fail("newest id", err)
			return
		}
		// Ids below below that the log no longer holds come from the
		// archive (replayStart).
		for cursor < upTo || below > cursor+1 {
			c, ok, step, err := f.replayNext(ctx, plan, &cursor, &below, upTo)
			if err != nil {
				fail(step, err)
				return
			}
			if !ok {
				continue // the cursor or the archive's bound moved
			}
			for i, p := range c.pubs {
				f.mu.Lock()
				n := rs.note
				rs.note = Note{}
				f.mu.Unlock()
				if err := rs.sub.DeliverWait(ctx, p, n); err != nil {
					metrics.Delivered(DeliveryReplay, i)
					return // the subscription or session ended
				}
			}
			metrics.Delivered(DeliveryReplay, len(c.pubs))
			cursor = c.next
		}
		// Caught up: switch to live under the feed's lock. Anything stored
		// after upTo was handed to the feed after this subscription joined
		// it, so it is in pending or still to come live.
		f.mu.Lock()
		if f.members[rs.sub] != rs {
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
			s, d := f.deliverLocked(rs, it)
			sent, dropped = sent+s, dropped+d
		}
		f.countLive(sent, dropped)
		rs.pending, rs.replaying = nil, false
		f.flushUnlock()
		return
	}
}

// replayRead reads a replay's next batch after *cursor: from the archive
// below *below, else from the log up to upTo; and makes its
// publications. Where the archive does not answer, the log reads what it
// still holds (from need on). A nil batch with no error has nothing to
// deliver: *cursor or *below moved. step names what failed.
func (f *roomFeed) replayRead(ctx context.Context, cursor, below *uint64, need, upTo uint64) ([]storage.Message, []*Publication, string, error) {
	var batch []storage.Message
	var err error
	if *below > *cursor+1 {
		if batch, err = f.svc.cfg.Archive.Between(ctx, f.room, *cursor, *below, replayBatch); err != nil {
			if *cursor+1 >= need {
				f.svc.log.Warn("archive unavailable: replay reads the log", "room", f.room, "after", *cursor, "err", err)
				*below = 0
				return nil, nil, "", nil
			}
			return nil, nil, "archive", err
		}
		if len(batch) == 0 {
			*cursor = *below - 1 // the room has no message in between
			return nil, nil, "", nil
		}
	} else {
		if batch, err = f.svc.msgs.AfterUpTo(ctx, f.room, *cursor, upTo, replayBatch); err != nil {
			return nil, nil, "read", err
		}
		if len(batch) == 0 {
			*cursor = upTo // what was there left the log meanwhile (its age limit)
			return nil, nil, "", nil
		}
		if *cursor < *below && batch[0].ID > *below {
			// More left the log while the archive was read: they are
			// archived too.
			*below = batch[0].ID
			return nil, nil, "", nil
		}
	}
	pubs, err := f.svc.publications(ctx, f.room, batch)
	if err != nil {
		return nil, nil, "encode", err
	}
	return batch, pubs, "", nil
}

// replayPlan is where a replay begins and where it reads (replayStart).
type replayPlan struct {
	cursor uint64 // the replay gives what the room holds after it
	note   Note   // goes with the first message: the history is incomplete
	// Below below the replay reads the archive; below need, only the
	// archive has the messages (replayRead).
	below, need uint64
	epoch       uint64 // the life of the log it reads
	// partial: the log dropped some of what the replay asks for and the
	// archive does not fill it in, so its reads lack what other replays
	// of the room may hold (replayNext).
	partial bool
}

// replayStart decides where a replay begins, whether the client must be
// told that the history it asks for is incomplete, and, with an archive,
// below which id the replay reads from the archive: where the log may
// have dropped messages after the cursor, the archive has them, and up
// to its reach it holds them all. Below need, only the archive has them.
func (f *roomFeed) replayStart(ctx context.Context, since uint64) (replayPlan, error) {
	var p replayPlan
	st, err := f.svc.msgs.State(ctx, f.room)
	if err != nil {
		return p, err
	}
	p.epoch = st.Epoch
	first, err := f.svc.msgs.After(ctx, f.room, 0, 1)
	if err != nil {
		return p, err
	}
	firstID := st.First
	if len(first) > 0 {
		firstID = first[0].ID
	}
	kind := NoteNone
	cursor := since
	if since > st.Last || since != 0 && since+1 < st.Epoch {
		// Ids from another life of the log name nothing here: everything
		// the room holds is new to this client.
		kind, cursor = NoteReset, 0
	}
	// A replay is of this life of the log: ids below its epoch are another
	// life's, which the log does not hold and the replay does not give.
	if st.Epoch > 0 {
		cursor = max(cursor, st.Epoch-1)
	}
	dropped := cursor+1 < st.First
	if max := f.svc.msgs.MaxPerRoom(); !dropped && max > 0 && len(first) > 0 && first[0].ID > cursor+1 {
		n, err := f.svc.msgs.RoomCount(ctx, f.room)
		if err != nil {
			return p, err
		}
		dropped = int64(n) >= max // the per-room cap removed older messages
	}
	var below uint64
	if dropped && f.svc.cfg.Archive != nil {
		below = firstID
		if len(first) == 0 {
			below = st.Last + 1 // the log holds nothing of the room
		}
		oldest, err := f.svc.cfg.Archive.Between(ctx, f.room, cursor, below, 1)
		switch {
		case err != nil:
			// Chat goes on without the archive: say what is missing.
			f.svc.log.Warn("archive unavailable: replay reports a gap", "room", f.room, "since", since, "err", err)
			below = 0
		case len(oldest) > 0:
			firstID = oldest[0].ID
		}
	}
	p.partial = dropped && below == 0
	if p.partial && kind == NoteNone {
		kind = NoteGap
	}
	p.need = below
	if f.svc.cfg.Archive != nil && (!dropped || below > 0) {
		// What the archive holds without a gap is read from it (an index
		// by room) rather than the log (blocks shared by every room).
		if reach, err := f.svc.cfg.Archive.Reach(ctx, []string{f.room}); err == nil && reach[0] >= cursor+1 {
			below = max(below, reach[0]+1)
		}
	}
	if kind != NoteNone {
		p.note = Note{Kind: kind, FirstID: firstID}
	}
	p.cursor, p.below = cursor, below
	return p, nil
}
