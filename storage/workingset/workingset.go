// Package workingset is the part of rooms, memberships and read positions
// that a node holds in memory: the rooms in use on it, so that the checks
// made on every SEND (membership, unread counts) cost no round trip,
// while memory and start-up do not grow with the whole deployment.
//
// A room is loaded from its store (a Loader) when it is first asked
// about, kept current by the changes its backend feeds in (a KV watcher,
// a PostgreSQL change feed), and dropped, least recently used first, once
// the set holds more entries than it may. Changes to rooms not held are
// ignored: the next load reads them from the store.
//
// Entries may carry a revision (the KV revision). A change with a
// revision applies only if it is newer than what the set holds, so that a
// late change never rolls back a newer write; a membership that ends
// keeps its revision as a tombstone for the same reason. Changes without
// one (revision 0) always apply, and an ended membership without one is
// simply forgotten. Changes that arrive while a room loads are applied
// after its snapshot, in order, so a backend without revisions stays
// exact too.
package workingset

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/storage"
)

// Member is a membership as a store holds it: a member, or the deletion of
// one, with its revision.
type Member struct {
	storage.Member
	Rev     uint64
	Deleted bool
}

// Mark is a read position as a store holds it.
type Mark struct {
	User string
	Pos  uint64
	Rev  uint64
}

// Snapshot is one room as its store holds it.
type Snapshot struct {
	Room    *storage.Room // nil: the room has no record
	RoomRev uint64
	Members []Member
	Marks   []Mark
}

// Loader reads one room from the store.
type Loader func(ctx context.Context, room string) (Snapshot, error)

// DefaultMaxEntries is Config.MaxEntries' default.
const DefaultMaxEntries = 1_000_000

// loadTimeout bounds one room's load, which the callers waiting for it
// share: it does not end with the context of the caller that began it.
const loadTimeout = 30 * time.Second

// Config shapes a Set.
type Config struct {
	Load Loader
	// MaxEntries bounds the memberships and read positions held, over all
	// rooms (0: DefaultMaxEntries). A room larger than the bound is still
	// held while it is the one most recently used, and rooms kept (Keep)
	// stay whatever the bound.
	MaxEntries int
}

// Set is a node's working set. It implements storage.LeaveNotifier:
// whoever feeds it a change that ends a membership makes it tell the
// callbacks, after it has let go of its locks.
//
// The set's lock guards which rooms it holds and their order of use; each
// room's own lock guards its contents, so that a long read of one room
// (the unread counts of a large one) holds up no other.
type Set struct {
	load Loader
	max  int

	mu    sync.Mutex
	rooms map[string]*room
	lru   list.List      // of *room, loaded ones only, most recently used first
	gen   uint64         // Refresh's count: a load that spans one reads again
	kept  map[string]int // rooms kept (Keep), never evicted

	size int // weight of the loaded rooms

	loads, evictions atomic.Uint64

	lmu   sync.RWMutex
	leave []func(room, user string)
}

type room struct {
	id string

	// Guarded by Set.mu: loading is closed when the room's load ends,
	// nil once loaded; err is the load's error, set before loading
	// closes; loadPending holds the changes seen while it loads, to apply
	// after its snapshot.
	loading     chan struct{}
	err         error
	loadPending []func(*room) bool
	elem        *list.Element

	mu      sync.RWMutex
	info    storage.Room
	infoRev uint64
	hasInfo bool
	members map[string]member
	marks   map[string]mark
	present int // members that are present, not tombstones
	// refreshing: a Refresh reloads the room; refreshPending holds the
	// changes applied meanwhile, to apply again after its snapshot.
	refreshing     bool
	refreshPending []func(*room) bool
}

type member struct {
	m       storage.Member
	rev     uint64
	present bool // false: a tombstone, kept for its revision
}

type mark struct {
	pos, rev uint64
}

// New returns an empty set.
func New(cfg Config) *Set {
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxEntries
	}
	return &Set{load: cfg.Load, max: cfg.MaxEntries, rooms: map[string]*room{}, kept: map[string]int{}}
}

var _ storage.LeaveNotifier = (*Set)(nil)

// OnLeave implements storage.LeaveNotifier.
func (s *Set) OnLeave(fn func(room, user string)) {
	s.lmu.Lock()
	s.leave = append(s.leave, fn)
	s.lmu.Unlock()
}

func (s *Set) left(room, user string) {
	s.lmu.RLock()
	fns := s.leave
	s.lmu.RUnlock()
	for _, fn := range fns {
		fn(room, user)
	}
}

func newRoom(id string) *room {
	return &room{id: id, members: map[string]member{}, marks: map[string]mark{}}
}

func (r *room) weight() int { return 1 + len(r.members) + len(r.marks) }

// newer reports whether a change at rev replaces an entry at cur.
func newer(rev, cur uint64) bool { return rev == 0 || rev > cur }

func (r *room) putRoom(rm storage.Room, rev uint64) bool {
	if newer(rev, r.infoRev) {
		r.info, r.infoRev, r.hasInfo = rm, rev, true
	}
	return false
}

func (r *room) deleteRoom(rev uint64) bool {
	if newer(rev, r.infoRev) {
		r.info, r.hasInfo = storage.Room{}, false
		r.infoRev = max(r.infoRev, rev)
	}
	return false
}

func (r *room) putMember(m storage.Member, rev uint64) bool {
	cur, ok := r.members[m.User]
	if ok && !newer(rev, cur.rev) {
		return false
	}
	if !cur.present {
		r.present++
	}
	r.members[m.User] = member{m: m, rev: rev, present: true}
	return false
}

// deleteMember ends a membership at rev and reports whether one ended.
// With rev 0 a membership that has a revision becomes a tombstone at that
// revision, so that the watcher's own, newer event still applies and
// finds nothing more to end.
func (r *room) deleteMember(user string, rev uint64) bool {
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
	return ended
}

func (r *room) putMark(user string, pos, rev uint64) bool {
	if cur, ok := r.marks[user]; !ok || newer(rev, cur.rev) {
		r.marks[user] = mark{pos: pos, rev: rev}
	}
	return false
}

func (r *room) applySnapshot(sn Snapshot) {
	if sn.Room != nil {
		r.putRoom(*sn.Room, sn.RoomRev)
	}
	for _, m := range sn.Members {
		if m.Deleted {
			r.deleteMember(m.User, m.Rev)
		} else {
			r.putMember(m.Member, m.Rev)
		}
	}
	for _, mk := range sn.Marks {
		r.putMark(mk.User, mk.Pos, mk.Rev)
	}
}

// change applies fn to room id if the set holds it, and reports whether
// the room was loaded (held) and fn ended a membership there. While the
// room loads, fn waits to be applied after the snapshot; while it reloads
// (Refresh), fn is applied now and again after the new snapshot.
func (s *Set) change(id string, fn func(*room) bool) (ended, held bool) {
	// Under mu throughout, so that the room's weight and the total agree
	// with evictions; readers of the room wait only for fn.
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[id]
	if r == nil {
		return false, false
	}
	if r.loading != nil {
		r.loadPending = append(r.loadPending, fn)
		return false, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refreshing {
		r.refreshPending = append(r.refreshPending, fn)
	}
	before := r.weight()
	ended = fn(r)
	s.size += r.weight() - before
	return ended, true
}

// PutRoom records a room's record at revision rev (0: none).
func (s *Set) PutRoom(rm storage.Room, rev uint64) {
	s.change(rm.ID, func(r *room) bool { return r.putRoom(rm, rev) })
}

// DeleteRoom forgets a room's record (its memberships stay) at revision
// rev (0: none).
func (s *Set) DeleteRoom(id string, rev uint64) {
	s.change(id, func(r *room) bool { return r.deleteRoom(rev) })
}

// PutMember records a membership at revision rev (0: none).
func (s *Set) PutMember(roomID string, m storage.Member, rev uint64) {
	s.change(roomID, func(r *room) bool { return r.putMember(m, rev) })
}

// PutMark records a read position at revision rev.
func (s *Set) PutMark(roomID, user string, pos, rev uint64) {
	s.change(roomID, func(r *room) bool { return r.putMark(user, pos, rev) })
}

// DeleteMember ends a membership at revision rev and tells the OnLeave
// callbacks. Of a room the set holds, they hear only of a membership that
// was present; of any other room, of every deletion, for the set cannot
// tell whether it was (and a subscriber there, if any, must end).
func (s *Set) DeleteMember(roomID, user string, rev uint64) {
	ended, held := s.change(roomID, func(r *room) bool { return r.deleteMember(user, rev) })
	if ended || !held {
		s.left(roomID, user)
	}
}

// with calls fn with room id under the room's read lock, loading the room
// first if the set does not hold it.
func (s *Set) with(ctx context.Context, id string, fn func(*room)) error {
	for {
		s.mu.Lock()
		r := s.rooms[id]
		if r == nil {
			r = newRoom(id)
			r.loading = make(chan struct{})
			s.rooms[id] = r
			s.mu.Unlock()
			if err := s.fill(ctx, r); err != nil {
				return err
			}
			continue
		}
		if ch := r.loading; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return fmt.Errorf("load room %s: %w", id, ctx.Err())
			}
			if r.err != nil {
				return r.err
			}
			continue
		}
		s.lru.MoveToFront(r.elem)
		s.mu.Unlock()
		r.mu.RLock()
		fn(r)
		r.mu.RUnlock()
		return nil
	}
}

// fill loads r, which the set holds as loading, and makes it loaded (or,
// on failure, forgets it and tells its waiters why).
func (s *Set) fill(ctx context.Context, r *room) error {
	for {
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		snap, err := s.load(lctx, r.id)
		cancel()
		s.loads.Add(1)
		s.mu.Lock()
		if err == nil && s.gen != gen {
			// A Refresh began meanwhile: changes may have been lost
			// before it, and this snapshot may predate them.
			s.mu.Unlock()
			continue
		}
		ch := r.loading
		r.loading = nil
		if err != nil {
			r.err = fmt.Errorf("load room %s: %w", r.id, err)
			delete(s.rooms, r.id)
			s.mu.Unlock()
			close(ch)
			return r.err
		}
		// Nobody reads or changes r while it loads: they wait on ch, or
		// queue their change under mu.
		r.mu.Lock()
		r.applySnapshot(snap)
		for _, fn := range r.loadPending {
			fn(r)
		}
		r.loadPending = nil
		w := r.weight()
		r.mu.Unlock()
		r.elem = s.lru.PushFront(r)
		s.size += w
		s.evictLocked()
		s.mu.Unlock()
		close(ch)
		return nil
	}
}

// Keep keeps room in the set until release is called (storage.Keeper):
// it is loaded when first used, as any, but never evicted meanwhile.
func (s *Set) Keep(room string) (release func()) {
	s.mu.Lock()
	s.kept[room]++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.kept[room]--; s.kept[room] <= 0 {
				delete(s.kept, room)
				s.evictLocked()
			}
			s.mu.Unlock()
		})
	}
}

// evictLocked drops the least recently used rooms while the set holds more
// than it may, keeping the one most recently used and the rooms kept.
// The caller holds mu.
func (s *Set) evictLocked() {
	for e := s.lru.Back(); s.size > s.max && e != nil && e != s.lru.Front(); {
		r := e.Value.(*room)
		prev := e.Prev()
		r.mu.RLock()
		refreshing, w := r.refreshing, r.weight()
		r.mu.RUnlock()
		if !refreshing && s.kept[r.id] == 0 { // a Refresh reloads it, or it is kept
			s.lru.Remove(e)
			delete(s.rooms, r.id)
			s.size -= w
			s.evictions.Add(1)
		}
		e = prev
	}
}

// Refresh reloads every room the set holds, for a backend whose changes
// may have been lost (its change feed reconnected), and tells the OnLeave
// callbacks of every membership that ended meanwhile. A room that fails
// to reload keeps what it held, and Refresh returns the first failure:
// the caller is to try again.
func (s *Set) Refresh(ctx context.Context) error {
	s.mu.Lock()
	s.gen++
	var held []*room
	for e := s.lru.Front(); e != nil; e = e.Next() {
		r := e.Value.(*room)
		r.mu.Lock()
		r.refreshing = true
		r.mu.Unlock()
		held = append(held, r)
	}
	s.mu.Unlock()
	var firstErr error
	for _, r := range held {
		snap, err := s.load(ctx, r.id)
		s.loads.Add(1)
		var ended []string
		s.mu.Lock()
		r.mu.Lock()
		r.refreshing = false
		pending := r.refreshPending
		r.refreshPending = nil
		if err != nil {
			// It keeps serving what it held, with the changes seen since
			// applied; the caller calls Refresh again.
			if firstErr == nil {
				firstErr = fmt.Errorf("reload room %s: %w", r.id, err)
			}
			r.mu.Unlock()
			s.mu.Unlock()
			continue
		}
		fresh := newRoom(r.id)
		fresh.applySnapshot(snap)
		for _, fn := range pending {
			fn(fresh)
		}
		for u, m := range r.members {
			if m.present && !fresh.members[u].present {
				ended = append(ended, u)
			}
		}
		if s.rooms[r.id] == r { // an evicted room's weight has left the total
			s.size += fresh.weight() - r.weight()
		}
		r.info, r.infoRev, r.hasInfo = fresh.info, fresh.infoRev, fresh.hasInfo
		r.members, r.marks, r.present = fresh.members, fresh.marks, fresh.present
		r.mu.Unlock()
		s.mu.Unlock()
		slices.Sort(ended)
		for _, u := range ended {
			s.left(r.id, u)
		}
	}
	return firstErr
}

// Room returns a room's record; ok is false if it has none.
func (s *Set) Room(ctx context.Context, id string) (rm storage.Room, ok bool, err error) {
	err = s.with(ctx, id, func(r *room) { rm, ok = r.info, r.hasInfo })
	return rm, ok, err
}

// Member returns user's membership of room; ok is false if none.
func (s *Set) Member(ctx context.Context, roomID, user string) (m storage.Member, ok bool, err error) {
	err = s.with(ctx, roomID, func(r *room) {
		e := r.members[user]
		m, ok = e.m, e.present
	})
	return m, ok, err
}

// Others returns how many members the room has besides user, without
// walking them: the unread count of a message user sends now.
func (s *Set) Others(ctx context.Context, roomID, user string) (n int, err error) {
	err = s.with(ctx, roomID, func(r *room) {
		n = r.present
		if r.members[user].present {
			n--
		}
	})
	return n, err
}

// Members lists a room's members, sorted by user.
func (s *Set) Members(ctx context.Context, roomID string) ([]storage.Member, error) {
	var out []storage.Member
	err := s.with(ctx, roomID, func(r *room) {
		out = make([]storage.Member, 0, r.present)
		for _, e := range r.members {
			if e.present {
				out = append(out, e.m)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b storage.Member) int { return strings.Compare(a.User, b.User) })
	return out, nil
}

// Unread returns, for each message, how many of the room's members other
// than its sender have a read position below the message's id.
func (s *Set) Unread(ctx context.Context, roomID string, msgs []storage.MessageRef) ([]int, error) {
	out := make([]int, len(msgs))
	err := s.with(ctx, roomID, func(r *room) {
		for u, e := range r.members {
			if !e.present {
				continue
			}
			p := r.marks[u].pos
			for i, msg := range msgs {
				if u != msg.Sender && p < msg.ID {
					out[i]++
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Mark returns user's read position in room if the set holds the room,
// without loading it.
func (s *Set) Mark(roomID, user string) (pos uint64, held bool) {
	s.mu.Lock()
	r := s.rooms[roomID]
	held = r != nil && r.loading == nil
	s.mu.Unlock()
	if !held {
		return 0, false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.marks[user].pos, true
}

// RaiseMarks raises user's read position in each of rooms, in reads (as
// a store read them; missing: 0), to the one the set holds where it holds
// the room, without loading any. A position this node just wrote is held
// at once, while a replica that answers a read of the store may not have
// it yet; positions only move forward, so the higher one is the newer.
func (s *Set) RaiseMarks(user string, rooms []string, reads map[string]uint64) {
	for _, roomID := range rooms {
		if held, ok := s.Mark(roomID, user); ok && held > reads[roomID] {
			reads[roomID] = held
		}
	}
}

// Stats is what a set holds and has done.
type Stats struct {
	Rooms     int    // rooms loaded
	Entries   int    // their memberships and read positions, tombstones included
	Loads     uint64 // rooms loaded (and reloaded) so far
	Evictions uint64 // rooms dropped to keep within MaxEntries so far
}

// Stats reports what the set holds.
func (s *Set) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Rooms: s.lru.Len(), Entries: s.size - s.lru.Len(), Loads: s.loads.Load(), Evictions: s.evictions.Load()}
}
