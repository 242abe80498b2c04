// Package storage defines what chatd keeps outside the message stream (room
// memberships and read positions) behind small interfaces. The embedded
// default lives in storage/kvstore (JetStream KV); other backends implement
// the same interfaces.
package storage

import (
	"context"
)

// MessageRef names one message for unread counting.
type MessageRef struct {
	ID     uint64
	Sender string
}

// Memberships records who belongs to which room.
type Memberships interface {
	// Join makes user a member of room and reports whether that is new.
	Join(ctx context.Context, room, user string) (bool, error)
	// Leave removes user from room; leaving a room one is not in is not an error.
	Leave(ctx context.Context, room, user string) error
	IsMember(ctx context.Context, room, user string) (bool, error)
	// Members lists the room's members, sorted.
	Members(ctx context.Context, room string) ([]string, error)
}

// LeaveNotifier is implemented by stores that tell of memberships ending,
// whichever node ended them, so that a removed member's live
// subscriptions can end at once.
type LeaveNotifier interface {
	// OnLeave registers fn, called on a store goroutine whenever a
	// membership ends. It must not block.
	OnLeave(fn func(room, user string))
}

// ReadMarks records how far each member has read each room.
type ReadMarks interface {
	// MarkRead moves user's read position in room forward to id. It never
	// moves back; it returns the position after the call.
	MarkRead(ctx context.Context, room, user string, id uint64) (uint64, error)
	// ReadMark returns user's read position in room (0: nothing read).
	ReadMark(ctx context.Context, room, user string) (uint64, error)
	// Unread returns, for each message, how many of the room's members other
	// than its sender have a read position below the message's id.
	Unread(ctx context.Context, room string, msgs []MessageRef) ([]int, error)
}

// Store is a complete storage backend.
type Store interface {
	Memberships
	ReadMarks
	Close() error
}
