package chat

import (
	"context"
	"encoding/json"
	"fmt"
)

// MarkRead moves user's read position in room forward to lastReadID (held
// to the room's newest message), tells the room's read-event subscribers
// on every node if it moved, and returns the position.
func (s *Service) MarkRead(ctx context.Context, user, room string, lastReadID uint64) (ReadEvent, error) {
	pos, err := s.markRead(ctx, user, room, lastReadID)
	return ReadEvent{RoomID: room, UserID: user, LastReadID: pos, fields: &s.cfg.Fields}, err
}

func (s *Service) markRead(ctx context.Context, user, room string, lastReadID uint64) (uint64, error) {
	if !ValidRoomID(room) {
		return 0, errInvalidRoom
	}
	if lastReadID == 0 {
		return 0, errorf(Invalid, "invalid read receipt: want JSON {\"lastReadId\":<message id>}")
	}
	if err := s.authorize(ctx, room, user); err != nil {
		return 0, err
	}
	// A position past the room's newest message would mark messages not yet
	// written as read; hold it to the newest.
	latest, err := s.msgs.Latest(ctx, room, 0)
	if err != nil {
		return 0, fmt.Errorf("newest message of %s: %w", room, err)
	}
	prev, err := s.store.ReadMark(ctx, room, user)
	if err != nil {
		return 0, fmt.Errorf("read position: %w", err)
	}
	if latest == nil {
		return prev, nil // nothing to read yet
	}
	pos, err := s.store.MarkRead(ctx, room, user, min(lastReadID, latest.ID))
	if err != nil {
		return 0, fmt.Errorf("mark read: %w", err)
	}
	if pos <= prev {
		return pos, nil // positions only move forward; nothing new to tell
	}
	body, err := json.Marshal(ReadEvent{RoomID: room, UserID: user, LastReadID: pos, fields: &s.cfg.Fields})
	if err != nil {
		return 0, fmt.Errorf("encode read event: %w", err)
	}
	if err := s.bus.PublishReads(room, jsonType, body); err != nil {
		return 0, fmt.Errorf("publish read event: %w", err)
	}
	return pos, nil
}
