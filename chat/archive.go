package chat

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
)

// Archive keeps every room message for good, also those the stream has
// dropped under its retention (storage/postgres). Messages come back as the
// stream held them.
type Archive interface {
	// Before returns up to limit of the room's archived messages with ids
	// below before (0: the newest), oldest first.
	Before(ctx context.Context, room string, before uint64, limit int) ([]natsbus.StoredMsg, error)
	// Between returns up to limit of the room's archived messages with ids
	// above after and below below, oldest first.
	Between(ctx context.Context, room string, after, below uint64, limit int) ([]natsbus.StoredMsg, error)
	// Search returns up to limit of the room's archived messages matching
	// query, newest first, with ids below before (0: any).
	Search(ctx context.Context, room, query string, before uint64, limit int) ([]natsbus.StoredMsg, error)
}

// ErrNoArchive: search needs the message archive, which this node lacks.
var ErrNoArchive = errors.New("search needs the message archive (--postgres-url)")

// MaxSearchQuery bounds a search query, in bytes.
const MaxSearchQuery = 256

// withArchived puts before page, up to limit in all, the room's archived
// messages that precede it: those the stream no longer holds.
func (s *Service) withArchived(ctx context.Context, room string, before uint64, limit int, page []natsbus.StoredMsg) ([]natsbus.StoredMsg, error) {
	below := before
	if len(page) > 0 {
		below = page[0].Seq
	}
	older, err := s.cfg.Archive.Before(ctx, room, below, limit-len(page))
	if err != nil {
		// Without the archive the page is still whole if the stream has
		// dropped nothing of the room.
		if dropped, derr := s.mayHaveDropped(ctx, room); derr == nil && !dropped {
			return page, nil
		}
		return nil, fmt.Errorf("archived history of %s: %w", room, err)
	}
	return append(older, page...), nil
}

// mayHaveDropped reports whether the stream's retention may have removed
// any of the room's messages: by age or total (the stream no longer starts
// at its first id) or by the per-room cap (the room is at it).
func (s *Service) mayHaveDropped(ctx context.Context, room string) (bool, error) {
	st, err := s.msgs.State(ctx)
	if err != nil {
		return false, err
	}
	if st.First > st.Epoch {
		return true, nil
	}
	if max := s.msgs.Config().MaxPerRoom; max > 0 {
		n, err := s.msgs.RoomCount(ctx, room)
		if err != nil {
			return false, err
		}
		return int64(n) >= max, nil
	}
	return false, nil
}

// Search returns up to limit of the room's archived messages matching
// query, newest first, with ids below before (0: the newest), for user, who
// must be allowed in the room. The query is words, as typed (case aside):
// all must appear; "quoted words" must appear in that order; -word must
// not; OR between words accepts either. Anything else is text, never
// syntax. Messages not yet archived (normally the last second's) are not
// found.
func (s *Service) Search(ctx context.Context, room, user, query string, before uint64, limit int) ([]Message, error) {
	if s.cfg.Archive == nil {
		return nil, ErrNoArchive
	}
	query = strings.TrimSpace(query)
	if query == "" || len(query) > MaxSearchQuery || !utf8.ValidString(query) || strings.ContainsRune(query, 0) {
		return nil, stompws.Errorf("invalid search query: 1 to %d bytes of text", MaxSearchQuery)
	}
	if limit <= 0 {
		return nil, stompws.Errorf("invalid limit: 1 to %d", MaxLogLimit)
	}
	if err := s.authorize(ctx, room, user); err != nil {
		return nil, err
	}
	stored, err := s.cfg.Archive.Search(ctx, room, query, before, min(limit, MaxLogLimit))
	if err != nil {
		return nil, fmt.Errorf("search %s: %w", room, err)
	}
	msgs, _, err := s.chatMessages(ctx, room, stored)
	return msgs, err
}
