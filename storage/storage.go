// Package storage is chatd's persistence vocabulary: the records it keeps
// (rooms, memberships, read positions, stored messages) and the small
// interfaces the backends implement. It imports nothing of chatd, so that
// the domain (chat), the NATS door (natsbus) and the backends can all name
// the same records.
//
// Backends: storage/kvstore (JetStream KV, the embedded default) and
// storage/postgres (PostgreSQL, with the message archive);
// storage/workingset is the part of rooms, memberships and read positions
// both hold in memory (the rooms in use on the node); storage/storetest is
// the behaviour every backend must show.
package storage

import (
	"context"
	"errors"
	"time"
)

// Errors a backend returns for the cases callers act on; match with
// errors.Is.
var (
	// ErrNotFound: no such room.
	ErrNotFound = errors.New("not found")
	// ErrExists: a room with that id exists already.
	ErrExists = errors.New("already exists")
	// ErrTooLarge: the message is larger than the message log stores.
	ErrTooLarge = errors.New("too large to store")
	// ErrUnavailable: the store cannot take the request for the moment (no
	// quorum, no leader, its storage disabled); it may be tried again.
	ErrUnavailable = errors.New("store unavailable")
)

// Message is one room message as the message log or the archive holds it:
// its id (the log's sequence, rising across every room), its room, the
// bytes chat encoded, and when it was stored.
type Message struct {
	ID   uint64
	Room string
	Data []byte
	Time time.Time
}

// LogState is a snapshot of the bounds of the message log, or of the
// partition of it that holds a room.
type LogState struct {
	Epoch uint64 // first id of this life of the log
	First uint64 // oldest id still held
	Last  uint64 // newest id
}

// RoomMark is a read position in a room, for a room list.
type RoomMark struct {
	Room string
	Read uint64 // the id read up to (0: nothing)
}

// RoomSpan is a range of a room's message ids: those above After, up to
// and with UpTo.
type RoomSpan struct {
	Room  string
	After uint64
	UpTo  uint64
}

// RoomTail is the end of a room's log as a room list shows it: the room's
// newest message (nil: none) and how many of its messages have ids above
// a read position.
type RoomTail struct {
	Latest *Message
	Unread uint64
}

// Role is a member's standing in a room.
type Role string

// Roles, from most to least powerful. The owner created the room; owners
// and admins manage its members.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool { return r == RoleOwner || r == RoleAdmin || r == RoleMember }

// Room is a room's record.
type Room struct {
	ID        string
	Name      string
	CreatedBy string
	CreatedAt time.Time
}

// Member is one membership.
type Member struct {
	User     string
	Role     Role
	JoinedAt time.Time
}

// UserRoom is one of a user's rooms, as a room list shows it.
type UserRoom struct {
	ID   string
	Name string // "": the room has no record (a room made by hand in a store)
	Role Role
	Read uint64 // the user's read position (0: nothing read)
}

// MessageRef names one message for unread counting.
type MessageRef struct {
	ID     uint64
	Sender string
}

// Rooms records which rooms exist.
type Rooms interface {
	// CreateRoom stores room and makes its creator (room.CreatedBy) its
	// owner. It returns ErrExists if the id is taken.
	CreateRoom(ctx context.Context, room Room) error
	// Room returns the room's record, or ErrNotFound.
	Room(ctx context.Context, id string) (Room, error)
}

// Memberships records who belongs to which room, and in what role.
type Memberships interface {
	// Join makes user a member of room with role and reports whether that
	// is new. An existing membership is left as it is, role included.
	Join(ctx context.Context, room, user string, role Role) (bool, error)
	// Leave removes user from room; leaving a room one is not in is not an error.
	Leave(ctx context.Context, room, user string) error
	IsMember(ctx context.Context, room, user string) (bool, error)
	// Membership returns user's membership of room; ok is false if none.
	Membership(ctx context.Context, room, user string) (m Member, ok bool, err error)
	// Members lists the room's members, sorted by user.
	Members(ctx context.Context, room string) ([]Member, error)
	// UserRooms lists the rooms user belongs to, sorted by id, with the
	// user's role and read position in each: a room list's worth of the
	// store at once, from an index by user, not a walk of the rooms.
	UserRooms(ctx context.Context, user string) ([]UserRoom, error)
	// Others returns how many members room has besides user: the unread
	// count of a message user sends now. It does not walk the members.
	Others(ctx context.Context, room, user string) (int, error)
}

// LeaveNotifier is implemented by stores that tell of memberships ending,
// whichever node ended them, so that a removed member's live
// subscriptions can end at once.
type LeaveNotifier interface {
	// OnLeave registers fn, called on a store goroutine whenever a
	// membership ends. It must not block.
	OnLeave(fn func(room, user string))
}

// Keeper is implemented by stores that hold a working set of rooms: a
// room kept stays in it, whatever its bound, until release is called. A
// node keeps the rooms it has live subscribers in, so that their sends
// never wait for a load.
type Keeper interface {
	Keep(room string) (release func())
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
	Rooms
	Memberships
	ReadMarks
	Close() error
}
