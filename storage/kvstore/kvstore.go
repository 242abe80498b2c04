// Package kvstore is chatd's embedded storage backend: rooms, memberships
// and read positions in JetStream KV buckets (through natsbus), replicated
// with the rest of JetStream.
//
// Every node mirrors the buckets in memory (storage/mirror for rooms and
// memberships, a map here for read positions), fed by a KV watcher, so that
// membership checks and unread counts on the hot path cost no round trip.
// A node's own writes are applied to its mirror at once (read-your-writes);
// entries carry the KV revision, so a late watcher event never rolls one
// back.
package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/mirror"
)

// The buckets, part of chatd's contract (docs/protocol.md): backend
// services may write memberships straight into CHAT_MEMBERS. Each name
// follows the deployment's prefix (natsbus.Names.Bucket): MEMBERS is
// CHAT_MEMBERS by default. Members and read positions are keyed
// "<room>.<user token>" (natsbus.RoomUserKey), rooms by their id.
const (
	RoomsBucket   = "ROOMS"
	MembersBucket = "MEMBERS"
	ReadsBucket   = "READS"
)

// The buckets' descriptions, as every opener gives them.
const (
	roomsDescription   = "chatd rooms, key <room>"
	membersDescription = "chatd room memberships, key <room>.<user>"
	readsDescription   = "chatd read positions, key <room>.<user>"
)

// Config shapes the KV buckets.
type Config struct {
	Replicas int
	Logger   *slog.Logger
}

// Store implements storage.Store on JetStream KV.
type Store struct {
	rooms   *natsbus.Bucket
	members *natsbus.Bucket
	marks   *ReadMarks
	mirror  *mirror.Mirror
	log     *slog.Logger
	stops   []func()
}

type memberValue struct {
	Role     storage.Role `json:"role"`
	JoinedAt time.Time    `json:"joinedAt"`
}

type roomValue struct {
	Name      string    `json:"name"`
	CreatedBy string    `json:"createdBy"`
	CreatedAt time.Time `json:"createdAt"`
}

var (
	_ storage.Store         = (*Store)(nil)
	_ storage.LeaveNotifier = (*Store)(nil)
)

// Open creates or updates the buckets and loads the mirror. It returns once
// the mirror holds every key that existed when it started watching.
func Open(ctx context.Context, bus *natsbus.Bus, cfg Config) (*Store, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{log: log, mirror: mirror.New()}
	var err error
	if s.marks, err = OpenReadMarks(ctx, bus, cfg); err != nil {
		return nil, err
	}
	s.stops = append(s.stops, func() { _ = s.marks.Close() })
	if s.rooms, err = bus.OpenBucket(ctx, RoomsBucket, roomsDescription, cfg.Replicas); err == nil {
		s.members, err = bus.OpenBucket(ctx, MembersBucket, membersDescription, cfg.Replicas)
	}
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	for b, apply := range map[*natsbus.Bucket]func(natsbus.Entry){s.rooms: s.applyRoom, s.members: s.applyMember} {
		stop, err := b.Watch(ctx, apply)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.stops = append(s.stops, stop)
	}
	return s, nil
}

func (s *Store) applyRoom(e natsbus.Entry) {
	if e.Deleted {
		s.mirror.DeleteRoom(e.Key, e.Revision)
		return
	}
	rm, err := decodeRoom(e.Key, e.Value)
	if err != nil {
		s.log.Warn("ignoring malformed KV value", "bucket", s.rooms.Name(), "key", e.Key, "err", err)
		return
	}
	s.mirror.PutRoom(rm, e.Revision)
}

func (s *Store) applyMember(e natsbus.Entry) {
	room, user, ok := natsbus.SplitRoomUserKey(e.Key)
	if !ok {
		s.log.Warn("ignoring malformed KV key", "bucket", s.members.Name(), "key", e.Key)
		return
	}
	if e.Deleted {
		s.mirror.DeleteMember(room, user, e.Revision)
		return
	}
	m, err := decodeMember(user, e.Value)
	if err != nil {
		s.log.Warn("ignoring malformed KV value", "bucket", s.members.Name(), "key", e.Key, "err", err)
		return
	}
	s.mirror.PutMember(room, m, e.Revision)
}

func decodeRoom(id string, v []byte) (storage.Room, error) {
	var rv roomValue
	if err := json.Unmarshal(v, &rv); err != nil {
		return storage.Room{}, fmt.Errorf("decode room: %w", err)
	}
	return storage.Room{ID: id, Name: rv.Name, CreatedBy: rv.CreatedBy, CreatedAt: rv.CreatedAt}, nil
}

// decodeMember reads a membership; a value without a known role (a backend
// writing {} by hand) is a plain member.
func decodeMember(user string, v []byte) (storage.Member, error) {
	var mv memberValue
	if len(v) > 0 {
		if err := json.Unmarshal(v, &mv); err != nil {
			return storage.Member{}, fmt.Errorf("decode membership: %w", err)
		}
	}
	if !mv.Role.Valid() {
		mv.Role = storage.RoleMember
	}
	return storage.Member{User: user, Role: mv.Role, JoinedAt: mv.JoinedAt}, nil
}

// CreateRoom implements storage.Rooms: the record first, so that the id is
// claimed once, then the owner's membership.
func (s *Store) CreateRoom(ctx context.Context, rm storage.Room) error {
	rm.CreatedAt = rm.CreatedAt.UTC()
	val, err := json.Marshal(roomValue{Name: rm.Name, CreatedBy: rm.CreatedBy, CreatedAt: rm.CreatedAt})
	if err != nil {
		return fmt.Errorf("encode room: %w", err)
	}
	rev, err := s.rooms.Create(ctx, rm.ID, val)
	if errors.Is(err, natsbus.ErrKeyExists) {
		return fmt.Errorf("create room %s: %w", rm.ID, storage.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create room %s: %w", rm.ID, err)
	}
	s.mirror.PutRoom(rm, rev)
	if _, err := s.join(ctx, rm.ID, rm.CreatedBy, storage.RoleOwner, rm.CreatedAt); err != nil {
		// Give the id back rather than leave a room nobody owns.
		if derr := s.rooms.Delete(ctx, rm.ID, rev); derr != nil {
			s.log.Error("room left without owner", "room", rm.ID, "err", derr)
		}
		return fmt.Errorf("create room %s: %w", rm.ID, err)
	}
	return nil
}

// Room implements storage.Rooms.
func (s *Store) Room(_ context.Context, id string) (storage.Room, error) {
	rm, ok := s.mirror.Room(id)
	if !ok {
		return storage.Room{}, fmt.Errorf("room %s: %w", id, storage.ErrNotFound)
	}
	return rm, nil
}

// Join implements storage.Memberships.
func (s *Store) Join(ctx context.Context, roomID, user string, role storage.Role) (bool, error) {
	return s.join(ctx, roomID, user, role, time.Now().UTC())
}

func (s *Store) join(ctx context.Context, roomID, user string, role storage.Role, at time.Time) (bool, error) {
	if _, ok := s.mirror.Member(roomID, user); ok {
		return false, nil
	}
	if !role.Valid() {
		return false, fmt.Errorf("add member %s to %s: invalid role %q", user, roomID, role)
	}
	mem := storage.Member{User: user, Role: role, JoinedAt: at.UTC()}
	val, err := json.Marshal(memberValue{Role: role, JoinedAt: mem.JoinedAt})
	if err != nil {
		return false, fmt.Errorf("encode membership: %w", err)
	}
	key := natsbus.RoomUserKey(roomID, user)
	rev, err := s.members.Create(ctx, key, val)
	if errors.Is(err, natsbus.ErrKeyExists) {
		e, gerr := s.members.Get(ctx, key)
		if gerr != nil {
			return false, fmt.Errorf("read membership %s/%s: %w", roomID, user, gerr)
		}
		cur, derr := decodeMember(user, e.Value)
		if derr != nil {
			return false, fmt.Errorf("read membership %s/%s: %w", roomID, user, derr)
		}
		s.mirror.PutMember(roomID, cur, e.Revision)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("add member %s to %s: %w", user, roomID, err)
	}
	s.mirror.PutMember(roomID, mem, rev)
	return true, nil
}

// Leave implements storage.Memberships.
func (s *Store) Leave(ctx context.Context, roomID, user string) error {
	if err := s.members.Delete(ctx, natsbus.RoomUserKey(roomID, user), 0); err != nil {
		return fmt.Errorf("remove member %s from %s: %w", user, roomID, err)
	}
	// Revision 0: the entry keeps its revision, so the watcher's delete
	// event (a newer one) still lands, and finds nothing more to end.
	s.mirror.DeleteMember(roomID, user, 0)
	return nil
}

// IsMember implements storage.Memberships.
func (s *Store) IsMember(_ context.Context, roomID, user string) (bool, error) {
	_, ok := s.mirror.Member(roomID, user)
	return ok, nil
}

// Others implements storage.Memberships.
func (s *Store) Others(_ context.Context, roomID, user string) (int, error) {
	return s.mirror.Others(roomID, user), nil
}

// Membership implements storage.Memberships.
func (s *Store) Membership(_ context.Context, roomID, user string) (storage.Member, bool, error) {
	m, ok := s.mirror.Member(roomID, user)
	return m, ok, nil
}

// Members implements storage.Memberships.
func (s *Store) Members(_ context.Context, roomID string) ([]storage.Member, error) {
	return s.mirror.Members(roomID), nil
}

// UserRooms implements storage.Memberships.
func (s *Store) UserRooms(_ context.Context, user string) ([]string, error) {
	return s.mirror.UserRooms(user), nil
}

// OnLeave implements storage.LeaveNotifier: fn hears of memberships ended
// by Leave on this node or by a delete the watcher sees.
func (s *Store) OnLeave(fn func(room, user string)) { s.mirror.OnLeave(fn) }

// MarkRead implements storage.ReadMarks.
func (s *Store) MarkRead(ctx context.Context, roomID, user string, id uint64) (uint64, error) {
	return s.marks.MarkRead(ctx, roomID, user, id)
}

// ReadMark implements storage.ReadMarks.
func (s *Store) ReadMark(ctx context.Context, roomID, user string) (uint64, error) {
	return s.marks.ReadMark(ctx, roomID, user)
}

// Unread implements storage.ReadMarks: members from the mirror, their
// positions from the read marks, both in memory.
func (s *Store) Unread(_ context.Context, roomID string, msgs []storage.MessageRef) ([]int, error) {
	s.marks.mu.RLock()
	defer s.marks.mu.RUnlock()
	return s.mirror.Unread(roomID, msgs, func(user string) uint64 { return s.marks.marks[roomUser{roomID, user}].pos }), nil
}

// Close stops the watchers.
func (s *Store) Close() error {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
	return nil
}

// ReadMarks is the read positions in the CHAT_READS bucket, mirrored in
// memory: for Store, and for a backend that keeps rooms and memberships
// elsewhere (storage/postgres).
type ReadMarks struct {
	reads *natsbus.Bucket
	stop  func()

	mu    sync.RWMutex
	marks map[roomUser]mark
}

type roomUser struct{ room, user string }

type mark struct {
	pos uint64
	rev uint64
}

// OpenReadMarks creates or updates the read positions bucket and loads its
// mirror.
func OpenReadMarks(ctx context.Context, bus *natsbus.Bus, cfg Config) (*ReadMarks, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	b, err := bus.OpenBucket(ctx, ReadsBucket, readsDescription, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	r := &ReadMarks{reads: b, marks: map[roomUser]mark{}}
	r.stop, err = b.Watch(ctx, func(e natsbus.Entry) {
		room, user, ok := natsbus.SplitRoomUserKey(e.Key)
		if !ok {
			log.Warn("ignoring malformed KV key", "bucket", b.Name(), "key", e.Key)
			return
		}
		var p uint64
		if !e.Deleted {
			var perr error
			if p, perr = strconv.ParseUint(string(e.Value), 10, 64); perr != nil {
				log.Warn("ignoring malformed KV value", "bucket", b.Name(), "key", e.Key, "err", perr)
				return
			}
		}
		r.apply(room, user, mark{pos: p, rev: e.Revision})
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// apply keeps m unless a newer revision is held.
func (r *ReadMarks) apply(room, user string, m mark) {
	k := roomUser{room, user}
	r.mu.Lock()
	if cur, ok := r.marks[k]; !ok || cur.rev < m.rev {
		r.marks[k] = m
	}
	r.mu.Unlock()
}

func (r *ReadMarks) pos(room, user string) uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.marks[roomUser{room, user}].pos
}

// ReadMark implements storage.ReadMarks: a lookup in the mirror.
func (r *ReadMarks) ReadMark(_ context.Context, room, user string) (uint64, error) {
	return r.pos(room, user), nil
}

// MarkRead implements storage.ReadMarks with a compare-and-set loop, so
// concurrent marks from several nodes only ever move the position forward.
func (r *ReadMarks) MarkRead(ctx context.Context, room, user string, id uint64) (uint64, error) {
	key := natsbus.RoomUserKey(room, user)
	for range 20 {
		if p := r.pos(room, user); p >= id {
			return p, nil
		}
		cur, err := r.reads.Get(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, natsbus.ErrKeyNotFound) {
			return 0, fmt.Errorf("read position %s/%s: %w", room, user, err)
		}
		if exists {
			if p, perr := strconv.ParseUint(string(cur.Value), 10, 64); perr == nil && p >= id {
				r.apply(room, user, mark{pos: p, rev: cur.Revision})
				return p, nil
			}
		}
		val := []byte(strconv.FormatUint(id, 10))
		var rev uint64
		if exists {
			rev, err = r.reads.Update(ctx, key, val, cur.Revision)
		} else {
			rev, err = r.reads.Create(ctx, key, val)
		}
		if errors.Is(err, natsbus.ErrKeyExists) || errors.Is(err, natsbus.ErrRevisionChanged) {
			continue // lost a race with another writer (or a retry of ours landed): read again
		}
		if err != nil {
			return 0, fmt.Errorf("store read position %s/%s: %w", room, user, err)
		}
		r.apply(room, user, mark{pos: id, rev: rev})
		return id, nil
	}
	return 0, fmt.Errorf("store read position %s/%s: too much contention", room, user)
}

// Close stops the watcher.
func (r *ReadMarks) Close() error {
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
	return nil
}
