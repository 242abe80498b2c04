package chat

import (
	"context"
	"log/slog"

	"github.com/chatd/chatd/storage"
)

// The ports: what the domain needs of the world, in its own terms. The
// composition root (node) plugs in natsbus (MessageLog, Committer, Bus),
// a storage backend (Store) and storage/postgres (Archive); the adapters
// (stompapi) implement Subscriber. None of them is imported here.

// MessageLog reads the stored room messages. A message's id is its
// position in the log, or in the log's partition that holds its room: ids
// rise in every room, and are compared only within a room.
type MessageLog interface {
	// Page returns up to limit of the room's messages before the id (0:
	// the newest), oldest first. The newest page holds the room's newest
	// message as the log's leader knows it.
	Page(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error)
	// After returns up to max of the room's messages after the id, oldest
	// first.
	After(ctx context.Context, room string, after uint64, max int) ([]storage.Message, error)
	// AfterUpTo is After for a caller that knows upTo is stored: a short
	// read from a replica that lags is asked again.
	AfterUpTo(ctx context.Context, room string, after, upTo uint64, max int) ([]storage.Message, error)
	// Span returns up to max of the room's messages with ids in (after,
	// upTo], oldest first, reading nothing beyond upTo, for a caller that
	// knows upTo is stored.
	Span(ctx context.Context, room string, after, upTo uint64, max int) ([]storage.Message, error)
	// LastID is the room's newest id as the log's leader knows it (0: none).
	LastID(ctx context.Context, room string) (uint64, error)
	// Latest returns the room's newest message at or below upTo (0: of
	// all), or nil.
	Latest(ctx context.Context, room string, upTo uint64) (*storage.Message, error)
	// State returns the bounds of the log (or of its partition) holding
	// the room's messages.
	State(ctx context.Context, room string) (storage.LogState, error)
	// RoomCount is how many of the room's messages the log holds.
	RoomCount(ctx context.Context, room string) (uint64, error)
	// RoomTails returns, for each of marks in order, its room's newest
	// message (nil: none) and how many of the room's messages have ids
	// above the mark: a room list's worth at once.
	RoomTails(ctx context.Context, marks []storage.RoomMark) ([]storage.RoomTail, error)
	// MaxPerRoom is how many messages of one room the log keeps (0: all).
	MaxPerRoom() int64
	// MaxMessageSize is the largest message the log stores, in bytes.
	MaxMessageSize() int
}

// Committer stores posted messages: group commit, each room's in the order
// of the Submit calls.
type Committer interface {
	// Submit queues a message for room. done is called once, with the
	// message's id once it is stored (as durably as the deployment says),
	// or with the error that kept it from being stored (wrapping
	// storage.ErrTooLarge for a message over the log's limit,
	// storage.ErrUnavailable where the store cannot take writes for the
	// moment). A non-empty clientID makes a repeat from the same sender,
	// within the log's duplicate window, store nothing twice. abandon (nil:
	// none) is asked just before the message is written; an error leaves
	// it unwritten and goes to done. A failure is told to done before any
	// later message of its room is written.
	Submit(room string, data []byte, sender, clientID string, abandon func() error, done func(id uint64, err error))
}

// Bus carries what happens now to the nodes that have subscribers for it.
// Each watch holds the node's interest until stop is called; a node with
// no watch for a room or queue takes none of its traffic.
type Bus interface {
	// WatchRoom calls fn with each message stored in room from now on,
	// with the id of the room's previous message (prev) so that a lost
	// one shows, and how many messages wait behind it (more).
	WatchRoom(room string, fn func(m storage.Message, prev uint64, more int)) (stop func(), err error)
	// WatchUser calls fn with each event published to user's queue.
	WatchUser(user, queue string, fn func(body []byte, contentType string)) (stop func(), err error)
	// WatchReads calls fn with each read event of room.
	WatchReads(room string, fn func(body []byte, contentType string)) (stop func(), err error)
	// PublishUser sends an event to user's queue, on every node.
	PublishUser(user, queue, contentType string, body []byte) error
	// PublishReads sends a read event of room, on every node.
	PublishReads(room, contentType string, body []byte) error
}

// Archive keeps every room message for good, also those the log has
// dropped under its retention (storage/postgres, filled by archiver).
// Messages come back as the log held them. Where it reaches, history and
// unread counts are read from it rather than from the log: an index by
// room, where the log's reads walk blocks shared by every room.
type Archive interface {
	// Reach returns, for each room, an id up to which the archive holds
	// every message of the room the log stored (0: none known). It may
	// trail what the archive holds.
	Reach(ctx context.Context, rooms []string) ([]uint64, error)
	// Count returns, for each span in order, how many of its room's
	// archived messages have ids in it, counting no further than limit.
	Count(ctx context.Context, spans []storage.RoomSpan, limit int) ([]int, error)
	// Before returns up to limit of the room's archived messages with ids
	// below before (0: the newest), oldest first.
	Before(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error)
	// Between returns up to limit of the room's archived messages with ids
	// above after and below below, oldest first.
	Between(ctx context.Context, room string, after, below uint64, limit int) ([]storage.Message, error)
	// Search returns up to limit of the room's archived messages matching
	// query, newest first, with ids below before (0: any).
	Search(ctx context.Context, room, query string, before uint64, limit int) ([]storage.Message, error)
}

// Store keeps rooms, memberships and read positions. A store that also
// implements storage.LeaveNotifier lets a removed member's live
// subscriptions end at once, whichever node removed them.
type Store interface {
	storage.Rooms
	storage.Memberships
	storage.ReadMarks
}

// Subscriber is the receiving end of one subscription, implemented by an
// adapter (stompapi wraps a STOMP subscription).
type Subscriber interface {
	// Deliver queues p for the subscriber without waiting, with note (the
	// zero Note: none), to be sent by the next Flush. It reports false if
	// the subscriber refused it: it has ended, or its client was cut off
	// for not keeping up.
	Deliver(p *Publication, note Note) bool
	// Flush sends what Deliver queued. Whoever delivers a burst flushes
	// each subscriber once at its end, so that a client gets the burst in
	// one write.
	Flush()
	// DeliverWait is Deliver for backlogs (replays): it waits while the
	// subscriber's queue is full, until ctx ends or the subscriber does.
	DeliverWait(ctx context.Context, p *Publication, note Note) error
	// End ends the subscriber's session, telling its client err (an
	// *Error).
	End(err error)
	// Logger carries the subscriber's session and user, for the domain's
	// log lines about it.
	Logger() *slog.Logger
}
