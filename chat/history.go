package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/chatd/chatd/storage"
)

// History returns up to limit (at most MaxLogLimit) of the room's messages
// before the id (0: the newest), oldest first, with their current unread
// counts, for user, who must be allowed in the room. A user who got the
// RECEIPT of a message sees it in the newest page, whichever node asks.
func (s *Service) History(ctx context.Context, user, room string, before uint64, limit int) ([]Message, error) {
	if !ValidRoomID(room) {
		return nil, errInvalidRoom
	}
	if limit <= 0 {
		return nil, errorf(Invalid, "invalid limit: 1 to %d", MaxLogLimit)
	}
	if err := s.authorize(ctx, room, user); err != nil {
		return nil, err
	}
	limit = min(limit, MaxLogLimit)
	release, err := s.admitRead(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	stored, err := s.page(ctx, room, before, limit)
	if err != nil {
		return nil, err
	}
	msgs, _, err := s.chatMessages(ctx, room, stored)
	return msgs, err
}

// page returns the stored messages of a history page. Where the archive
// reaches, they are read from it (an index by room); the log gives the
// rest, and all of the page when the archive cannot answer.
func (s *Service) page(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error) {
	if s.cfg.Archive != nil {
		stored, ok, err := s.archivedPage(ctx, room, before, limit)
		if ok {
			s.cfg.Metrics.HistoryPage(HistoryFromArchive)
		}
		if ok || err != nil {
			return stored, err
		}
	}
	s.cfg.Metrics.HistoryPage(HistoryFromLog)
	stored, err := s.msgs.Page(ctx, room, before, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", room, err)
	}
	if len(stored) < limit && s.cfg.Archive != nil {
		return s.withArchived(ctx, room, before, limit, stored)
	}
	return stored, nil
}

// archivedPage reads a history page from the archive, with what lies above
// its reach from the log (the messages of the last moments, normally). ok
// is false when the log should give the page: the archive cannot say what
// it holds or does not answer, more than a page lies above its reach, an
// older page is not all below it, or the log holds nothing of the room.
func (s *Service) archivedPage(ctx context.Context, room string, before uint64, limit int) (page []storage.Message, ok bool, err error) {
	reaches, err := s.cfg.Archive.Reach(ctx, []string{room})
	if err != nil {
		s.log.Debug("archive reach unknown; history from the log", "room", room, "err", err)
		return nil, false, nil
	}
	reach := reaches[0]
	top := before - 1 // the newest id the page may hold
	if before == 0 {
		// The room's newest as the log's leader knows it: a user who got
		// the RECEIPT of a message sees it.
		if top, err = s.msgs.LastID(ctx, room); err != nil {
			return nil, false, fmt.Errorf("history of %s: %w", room, err)
		}
		if top == 0 {
			return nil, false, nil
		}
	} else if top > reach {
		// An older page that is not all archived yet: rare, and the log
		// reads it as well as a span would.
		return nil, false, nil
	}
	var recent []storage.Message
	if top > reach {
		if recent, err = s.msgs.Span(ctx, room, reach, top, limit); err != nil {
			return nil, false, fmt.Errorf("history of %s: %w", room, err)
		}
		if len(recent) == limit {
			// A page or more above the reach: the page is recent's,
			// if recent ends at top.
			return recent, recent[limit-1].ID == top, nil
		}
	}
	older, err := s.cfg.Archive.Before(ctx, room, min(top, reach)+1, limit-len(recent))
	if err != nil {
		s.log.Warn("archive read failed; history from the log", "room", room, "err", err)
		return nil, false, nil
	}
	return append(older, recent...), true, nil
}

// chatMessages decodes stored messages and gives each its current unread
// count; it also returns each message's passed-through SEND headers.
func (s *Service) chatMessages(ctx context.Context, room string, stored []storage.Message) ([]Message, [][][2]string, error) {
	msgs := make([]Message, 0, len(stored))
	hdrs := make([][][2]string, 0, len(stored))
	refs := make([]storage.MessageRef, 0, len(stored))
	for _, sm := range stored {
		st, err := decodeStored(sm)
		if err != nil {
			s.log.Warn("skipping undecodable message", "err", err)
			continue
		}
		msgs = append(msgs, Message{ID: sm.ID, RoomID: room, UserID: st.UserID, Message: st.Message, CreatedAt: st.CreatedAt,
			Extra: st.Extra, fields: &s.cfg.Fields})
		hdrs = append(hdrs, st.Headers)
		refs = append(refs, storage.MessageRef{ID: sm.ID, Sender: st.UserID})
	}
	unread, err := s.store.Unread(ctx, room, refs)
	if err != nil {
		return nil, nil, fmt.Errorf("unread counts of %s: %w", room, err)
	}
	for i := range msgs {
		msgs[i].UnreadCount = unread[i]
	}
	return msgs, hdrs, nil
}

// withArchived puts before page, up to limit in all, the room's archived
// messages that precede it: those the log no longer holds.
func (s *Service) withArchived(ctx context.Context, room string, before uint64, limit int, page []storage.Message) ([]storage.Message, error) {
	below := before
	if len(page) > 0 {
		below = page[0].ID
	}
	older, err := s.cfg.Archive.Before(ctx, room, below, limit-len(page))
	if err != nil {
		// Without the archive the page is still whole if the log has
		// dropped nothing of the room.
		if dropped, derr := s.mayHaveDropped(ctx, room); derr == nil && !dropped {
			return page, nil
		}
		return nil, fmt.Errorf("archived history of %s: %w", room, err)
	}
	return append(older, page...), nil
}

// mayHaveDropped reports whether the log's retention may have removed any
// of the room's messages: by age or total (the log no longer starts at its
// first id) or by the per-room cap (the room is at it).
func (s *Service) mayHaveDropped(ctx context.Context, room string) (bool, error) {
	st, err := s.msgs.State(ctx, room)
	if err != nil {
		return false, err
	}
	if st.First > st.Epoch {
		return true, nil
	}
	if max := s.msgs.MaxPerRoom(); max > 0 {
		n, err := s.msgs.RoomCount(ctx, room)
		if err != nil {
			return false, err
		}
		return int64(n) >= max, nil
	}
	return false, nil
}

// MaxSearchQuery bounds a search query, in bytes.
const MaxSearchQuery = 256

// Search returns up to limit of the room's archived messages matching
// query, newest first, with ids below before (0: the newest), for user, who
// must be allowed in the room; a non-member is told only whether it exists,
// also where the deployment has no archive. The query is words, as typed
// (case aside): all must appear; "quoted words" must appear in that order;
// -word must not; OR between words accepts either. Anything else is text,
// never syntax. Messages not yet archived (normally the last second's) are
// not found.
func (s *Service) Search(ctx context.Context, user, room, query string, before uint64, limit int) ([]Message, error) {
	if !ValidRoomID(room) {
		return nil, errInvalidRoom
	}
	query = strings.TrimSpace(query)
	if query == "" || len(query) > MaxSearchQuery || !utf8.ValidString(query) || strings.ContainsRune(query, 0) {
		return nil, errorf(Invalid, "invalid search query: 1 to %d bytes of text", MaxSearchQuery)
	}
	if limit <= 0 {
		return nil, errorf(Invalid, "invalid limit: 1 to %d", MaxLogLimit)
	}
	// Membership before the archive: only a member learns what this
	// deployment lacks.
	if err := s.authorizeRoom(ctx, room, user); err != nil {
		return nil, err
	}
	if s.cfg.Archive == nil {
		return nil, errorf(Unsupported, "search needs the message archive (--postgres-url)")
	}
	stored, err := s.cfg.Archive.Search(ctx, room, query, before, min(limit, MaxLogLimit))
	if err != nil {
		return nil, fmt.Errorf("search %s: %w", room, err)
	}
	msgs, _, err := s.chatMessages(ctx, room, stored)
	return msgs, err
}

// LogQueue is the user queue that answers a history request made over
// STOMP, unless the deployment names another: the reply reaches every
// session of the user, on every node.
const LogQueue = "chat.log"

// SendHistory publishes a history page (History's) to user's queue.
func (s *Service) SendHistory(ctx context.Context, user, room string, before uint64, limit int, queue string) error {
	if !ValidQueueName(queue) {
		return fmt.Errorf("history reply queue %q: not a queue name", queue)
	}
	msgs, err := s.History(ctx, user, room, before, limit)
	if err != nil {
		return err
	}
	body, err := json.Marshal(msgs)
	if err != nil {
		return fmt.Errorf("encode history: %w", err)
	}
	if err := s.bus.PublishUser(user, queue, jsonType, body); err != nil {
		return fmt.Errorf("history reply: %w", err)
	}
	return nil
}
