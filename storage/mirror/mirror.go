// Package mirror is the in-memory copy of rooms and memberships that
// chatd's storage backends keep on every node, so that the checks made on
// every SEND (membership, unread counts) cost no round trip. Each backend
// feeds it from its own source of truth: storage/kvstore from a JetStream
// KV watcher, storage/postgres from a LISTEN/NOTIFY change feed.
//
// Entries may carry a revision (the KV revision). A change with a
// revision applies only if it is newer than what the mirror holds, so that
// a watcher's late event never rolls back a newer write; a membership that
// ends keeps its revision as a tombstone for the same reason. Changes
// without one (revision 0) always apply, and an ended membership without
// one is simply forgotten.
package mirror

import (
	"slices"
	"strings"
	"sync"

	"github.com/chatd/chatd/storage"
)

// Mirror holds rooms and memberships. It implements storage.LeaveNotifier:
// whoever feeds it a change that ends a membership makes it tell the
// callbacks, after it has let go of its lock. The zero value is not ready;
// use New.
type Mirror struct {
	mu        sync.RWMutex
	rooms     map[string]*room
	userRooms map[string]map[string]struct{} // user -> rooms they belong to

	lmu   sync.RWMutex
	leave []func(room, user string)
}

type room struct {
	info    storage.Room
	infoRev uint64
	hasInfo bool
	members map[string]member
	present int // members that are present, not tombstones
}

type member struct {
	m       storage.Member
	rev     uint64
	present bool // false: a tombstone, kept for its revision
}

// New returns an empty mirror.
func New() *Mirror {
	return &Mirror{rooms: map[string]*room{}, userRooms: map[string]map[string]struct{}{}}
}

var _ storage.LeaveNotifier = (*Mirror)(nil)

// OnLeave implements storage.LeaveNotifier.
func (m *Mirror) OnLeave(fn func(room, user string)) {
	m.lmu.Lock()
	m.leave = append(m.leave, fn)
	m.lmu.Unlock()
}

func (m *Mirror) left(room, user string) {
	m.lmu.RLock()
	fns := m.leave
	m.lmu.RUnlock()
	for _, fn := range fns {
		fn(room, user)
	}
}

// roomLocked returns the room, adding it if new. The caller holds mu.
func (m *Mirror) roomLocked(id string) *room {
	r := m.rooms[id]
	if r == nil {
		r = &room{members: map[string]member{}}
		m.rooms[id] = r
	}
	return r
}

// newer reports whether a change at rev replaces an entry at cur.
func newer(rev, cur uint64) bool { return rev == 0 || rev > cur }

// PutRoom records a room's record at revision rev (0: none).
func (m *Mirror) PutRoom(rm storage.Room, rev uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.roomLocked(rm.ID)
	if !newer(rev, r.infoRev) {
		return
	}
	r.info, r.infoRev, r.hasInfo = rm, rev, true
}

// DeleteRoom forgets a room's record (its memberships stay) at revision
// rev (0: none).
func (m *Mirror) DeleteRoom(id string, rev uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rooms[id]
	if r == nil || !newer(rev, r.infoRev) {
		return
	}
	r.info, r.hasInfo = storage.Room{}, false
	if rev > 0 {
		r.infoRev = rev
	}
	m.pruneLocked(id)
}

// PutMember records a membership at revision rev (0: none).
func (m *Mirror) PutMember(roomID string, mem storage.Member, rev uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.roomLocked(roomID)
	cur, ok := r.members[mem.User]
	if ok && !newer(rev, cur.rev) {
		return
	}
	if !cur.present {
		r.present++
	}
	r.members[mem.User] = member{m: mem, rev: rev, present: true}
	rooms := m.userRooms[mem.User]
	if rooms == nil {
		rooms = map[string]struct{}{}
		m.userRooms[mem.User] = rooms
	}
	rooms[roomID] = struct{}{}
}

// DeleteMember ends a membership at revision rev. With rev 0 a
// membership that has a revision becomes a tombstone at that revision, so
// that the watcher's own, newer event still applies and finds nothing
// more to end. It reports whether a membership ended, and if one did,
// tells the OnLeave callbacks.
func (m *Mirror) DeleteMember(roomID, user string, rev uint64) bool {
	m.mu.Lock()
	ended := m.deleteMemberLocked(roomID, user, rev)
	m.mu.Unlock()
	if ended {
		m.left(roomID, user)
	}
	return ended
}

func (m *Mirror) deleteMemberLocked(roomID, user string, rev uint64) bool {
	r := m.rooms[roomID]
	if r == nil && rev > 0 {
		r = m.roomLocked(roomID) // a delete seen before its put: keep its revision
	}
	if r == nil {
		return false
	}
	cur, ok := r.members[user]
	if ok && !newer(rev, cur.rev) {
		return false
	}
	ended := ok && cur.present
	if ended {
		r.present--
	}
	switch {
	case rev > 0:
		r.members[user] = member{rev: rev}
	case cur.rev > 0:
		r.members[user] = member{rev: cur.rev}
	default:
		delete(r.members, user)
	}
	if ended {
		if rooms := m.userRooms[user]; rooms != nil {
			delete(rooms, roomID)
			if len(rooms) == 0 {
				delete(m.userRooms, user)
			}
		}
	}
	m.pruneLocked(roomID)
	return ended
}

// pruneLocked forgets a room with neither record, members nor tombstones.
func (m *Mirror) pruneLocked(id string) {
	if r := m.rooms[id]; r != nil && !r.hasInfo && r.infoRev == 0 && len(r.members) == 0 {
		delete(m.rooms, id)
	}
}

// Membership is one membership of a room, for Replace.
type Membership struct {
	Room   string
	Member storage.Member
}

// Replace makes the mirror hold exactly these rooms and memberships (a
// snapshot, without revisions), and tells the OnLeave callbacks of every
// membership it held that the snapshot lacks.
func (m *Mirror) Replace(rooms []storage.Room, members []Membership) {
	next := New()
	for _, rm := range rooms {
		next.roomLocked(rm.ID).info, next.rooms[rm.ID].hasInfo = rm, true
	}
	for _, ms := range members {
		nr := next.roomLocked(ms.Room)
		if !nr.members[ms.Member.User].present {
			nr.present++
		}
		nr.members[ms.Member.User] = member{m: ms.Member, present: true}
		rs := next.userRooms[ms.Member.User]
		if rs == nil {
			rs = map[string]struct{}{}
			next.userRooms[ms.Member.User] = rs
		}
		rs[ms.Room] = struct{}{}
	}
	var ended []Membership
	m.mu.Lock()
	for id, r := range m.rooms {
		for u, cur := range r.members {
			if !cur.present {
				continue
			}
			if nr := next.rooms[id]; nr == nil || !nr.members[u].present {
				ended = append(ended, Membership{Room: id, Member: cur.m})
			}
		}
	}
	m.rooms, m.userRooms = next.rooms, next.userRooms
	m.mu.Unlock()
	for _, e := range ended {
		m.left(e.Room, e.Member.User)
	}
}

// Room returns a room's record.
func (m *Mirror) Room(id string) (storage.Room, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if r := m.rooms[id]; r != nil && r.hasInfo {
		return r.info, true
	}
	return storage.Room{}, false
}

// Member returns user's membership of room.
func (m *Mirror) Member(roomID, user string) (storage.Member, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if r := m.rooms[roomID]; r != nil {
		if e := r.members[user]; e.present {
			return e.m, true
		}
	}
	return storage.Member{}, false
}

// Others returns how many members the room has besides user, without
// walking them: the unread count of a message user sends now.
func (m *Mirror) Others(roomID, user string) int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.rooms[roomID]
	if r == nil {
		return 0
	}
	if r.members[user].present {
		return r.present - 1
	}
	return r.present
}

// Members lists a room's members, sorted by user.
func (m *Mirror) Members(roomID string) []storage.Member {
	m.mu.RLock()
	var out []storage.Member
	if r := m.rooms[roomID]; r != nil {
		out = make([]storage.Member, 0, len(r.members))
		for _, e := range r.members {
			if e.present {
				out = append(out, e.m)
			}
		}
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b storage.Member) int { return strings.Compare(a.User, b.User) })
	return out
}

// UserRooms lists the ids of the rooms user belongs to, sorted.
func (m *Mirror) UserRooms(user string) []string {
	m.mu.RLock()
	out := make([]string, 0, len(m.userRooms[user]))
	for id := range m.userRooms[user] {
		out = append(out, id)
	}
	m.mu.RUnlock()
	slices.Sort(out)
	return out
}

// Unread returns, for each message, how many of the room's members other
// than its sender have a read position (pos) below the message's id. pos
// is called under the mirror's read lock: it must not call back into the
// mirror.
func (m *Mirror) Unread(roomID string, msgs []storage.MessageRef, pos func(user string) uint64) []int {
	out := make([]int, len(msgs))
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.rooms[roomID]
	if r == nil {
		return out
	}
	for u, e := range r.members {
		if !e.present {
			continue
		}
		p := pos(u)
		for i, msg := range msgs {
			if u != msg.Sender && p < msg.ID {
				out[i]++
			}
		}
	}
	return out
}
