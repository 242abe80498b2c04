// Package kvstore is chatd's embedded storage backend: rooms, memberships
// and read positions in JetStream KV buckets (through natsbus), replicated
// with the rest of JetStream.
//
// A node holds the rooms in use on it (storage/workingset), each loaded
// with its members and read positions by a few direct gets when first
// used, and kept current by watches of the buckets' changes from then on,
// so that membership checks and unread counts on the hot path cost no
// round trip while start-up reads nothing. A user's rooms come from
// USER_ROOMS, an index of MEMBERS that JetStream keeps itself. A node's
// own writes are applied to its working set at once (read-your-writes);
// entries carry the KV revision, so a late watch event never rolls one
// back.
package kvstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/workingset"
	"golang.org/x/sync/errgroup"
)

// The buckets, part of chatd's contract (docs/protocol.md): backend
// services may write memberships straight into CHAT_MEMBERS. Each name
// follows the deployment's prefix (natsbus.Names.Bucket): MEMBERS is
// CHAT_MEMBERS by default. Members and read positions are keyed
// "<room>.<user token>" (natsbus.RoomUserKey), rooms by their id.
// USER_ROOMS is MEMBERS keyed "<user token>.<room>", kept by JetStream
// from MEMBERS: nobody writes it.
const (
	RoomsBucket     = "ROOMS"
	MembersBucket   = "MEMBERS"
	ReadsBucket     = "READS"
	UserRoomsBucket = "USER_ROOMS"
)

// The buckets' descriptions, as every opener gives them.
const (
	roomsDescription     = "chatd rooms, key <room>"
	membersDescription   = "chatd room memberships, key <room>.<user>"
	readsDescription     = "chatd read positions, key <room>.<user>"
	userRoomsDescription = "chatd room memberships by user, key <user>.<room>, sourced from MEMBERS"
)

// indexWait bounds a join's or leave's wait for USER_ROOMS to follow it,
// so that the writer's next room list shows it. JetStream follows within
// milliseconds; while the index recovers from a fault (no leader, its
// source reconnecting) room lists lag, and joins should not wait for it.
const indexWait = time.Second

// Config shapes the KV buckets and the working set.
type Config struct {
	Replicas int
	// WorkingSet bounds the memberships and read positions a node holds
	// (0: workingset.DefaultMaxEntries).
	WorkingSet int
	Logger     *slog.Logger
}

// Store implements storage.Store on JetStream KV.
type Store struct {
	rooms     *natsbus.Bucket
	members   *natsbus.Bucket
	userRooms *natsbus.Bucket
	marks     *ReadMarks
	set       *workingset.Set
	log       *slog.Logger
	stops     []func()
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
	_ storage.Keeper        = (*Store)(nil)
)

// Open creates or updates the buckets and starts watching their changes.
// It reads no room: each is loaded when first used.
func Open(ctx context.Context, bus *natsbus.Bus, cfg Config) (*Store, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{log: log}
	s.set = workingset.New(workingset.Config{Load: s.load, MaxEntries: cfg.WorkingSet})
	var err error
	if s.marks, err = OpenReadMarks(ctx, bus, cfg); err != nil {
		return nil, err
	}
	s.stops = append(s.stops, func() { _ = s.marks.Close() })
	if s.rooms, err = bus.OpenBucket(ctx, RoomsBucket, roomsDescription, cfg.Replicas); err == nil {
		s.members, err = bus.OpenBucket(ctx, MembersBucket, membersDescription, cfg.Replicas)
	}
	if err == nil && bus.BatchReads() {
		s.userRooms, err = bus.OpenSwappedBucket(ctx, UserRoomsBucket, userRoomsDescription, s.members, cfg.Replicas)
	} else if err == nil {
		log.Warn("room lists (GET /api/rooms) need nats-server 2.11 or later", "nats_server", bus.ServerVersion())
	}
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.marks.Watch(ctx, s.set.PutMark); err != nil {
		_ = s.Close()
		return nil, err
	}
	for b, apply := range map[*natsbus.Bucket]func(natsbus.Entry){s.rooms: s.applyRoom, s.members: s.applyMember} {
		stop, err := b.WatchUpdates(ctx, apply)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.stops = append(s.stops, stop)
	}
	return s, nil
}

// load reads one room for the working set: its record, its members and
// their read positions, each by one direct get.
func (s *Store) load(ctx context.Context, room string) (workingset.Snapshot, error) {
	var snap workingset.Snapshot
	switch e, err := s.rooms.Get(ctx, room); {
	case err == nil:
		rm, derr := decodeRoom(room, e.Value)
		if derr != nil {
			s.log.Warn("ignoring malformed KV value", "bucket", s.rooms.Name(), "key", room, "err", derr)
			break
		}
		snap.Room, snap.RoomRev = &rm, e.Revision
	case !errors.Is(err, natsbus.ErrKeyNotFound):
		return snap, fmt.Errorf("room %s: %w", room, err)
	}
	entries, err := s.members.Under(ctx, room)
	if err != nil {
		return snap, err
	}
	snap.Members = make([]workingset.Member, 0, len(entries))
	for _, e := range entries {
		if m, ok := s.memberEntry(e); ok {
			snap.Members = append(snap.Members, m)
		}
	}
	if snap.Marks, err = s.marks.Room(ctx, room); err != nil {
		return snap, err
	}
	return snap, nil
}

// memberEntry reads a MEMBERS entry; ok is false for a malformed one,
// which it logs.
func (s *Store) memberEntry(e natsbus.Entry) (workingset.Member, bool) {
	_, user, ok := natsbus.SplitRoomUserKey(e.Key)
	if !ok {
		s.log.Warn("ignoring malformed KV key", "bucket", s.members.Name(), "key", e.Key)
		return workingset.Member{}, false
	}
	if e.Deleted {
		return workingset.Member{Member: storage.Member{User: user}, Rev: e.Revision, Deleted: true}, true
	}
	m, err := decodeMember(user, e.Value)
	if err != nil {
		s.log.Warn("ignoring malformed KV value", "bucket", s.members.Name(), "key", e.Key, "err", err)
		return workingset.Member{}, false
	}
	return workingset.Member{Member: m, Rev: e.Revision}, true
}

func (s *Store) applyRoom(e natsbus.Entry) {
	if e.Deleted {
		s.set.DeleteRoom(e.Key, e.Revision)
		return
	}
	rm, err := decodeRoom(e.Key, e.Value)
	if err != nil {
		s.log.Warn("ignoring malformed KV value", "bucket", s.rooms.Name(), "key", e.Key, "err", err)
		return
	}
	s.set.PutRoom(rm, e.Revision)
}

func (s *Store) applyMember(e natsbus.Entry) {
	m, ok := s.memberEntry(e)
	if !ok {
		return
	}
	room, _, _ := natsbus.SplitRoomUserKey(e.Key)
	if m.Deleted {
		s.set.DeleteMember(room, m.User, e.Revision)
		return
	}
	s.set.PutMember(room, m.Member, e.Revision)
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
	s.set.PutRoom(rm, rev)
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
func (s *Store) Room(ctx context.Context, id string) (storage.Room, error) {
	rm, ok, err := s.set.Room(ctx, id)
	if err != nil {
		return storage.Room{}, err
	}
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
	if _, ok, err := s.set.Member(ctx, roomID, user); err != nil || ok {
		return false, err
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
		s.set.PutMember(roomID, cur, e.Revision)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("add member %s to %s: %w", user, roomID, err)
	}
	s.set.PutMember(roomID, mem, rev)
	s.indexed(ctx, roomID, user, true)
	return true, nil
}

// indexed waits, up to indexWait, for USER_ROOMS to follow a join or a
// leave, so that the writer's next room list shows it. The change is
// stored either way: a wait that ends is only logged.
func (s *Store) indexed(ctx context.Context, roomID, user string, present bool) {
	if s.userRooms == nil {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, indexWait)
	defer cancel()
	if err := s.userRooms.Indexed(ictx, natsbus.UserRoomKey(user, roomID), present); err != nil {
		s.log.Warn("membership stored, but the user's room list does not show it yet", "room", roomID, "user", user, "err", err)
	}
}

// Leave implements storage.Memberships.
func (s *Store) Leave(ctx context.Context, roomID, user string) error {
	if err := s.members.Delete(ctx, natsbus.RoomUserKey(roomID, user), 0); err != nil {
		return fmt.Errorf("remove member %s from %s: %w", user, roomID, err)
	}
	// Revision 0: the entry keeps its revision, so the watcher's delete
	// event (a newer one) still lands, and finds nothing more to end.
	s.set.DeleteMember(roomID, user, 0)
	s.indexed(ctx, roomID, user, false)
	return nil
}

// IsMember implements storage.Memberships.
func (s *Store) IsMember(ctx context.Context, roomID, user string) (bool, error) {
	_, ok, err := s.set.Member(ctx, roomID, user)
	return ok, err
}

// Others implements storage.Memberships.
func (s *Store) Others(ctx context.Context, roomID, user string) (int, error) {
	return s.set.Others(ctx, roomID, user)
}

// Membership implements storage.Memberships.
func (s *Store) Membership(ctx context.Context, roomID, user string) (storage.Member, bool, error) {
	return s.set.Member(ctx, roomID, user)
}

// Members implements storage.Memberships.
func (s *Store) Members(ctx context.Context, roomID string) ([]storage.Member, error) {
	return s.set.Members(ctx, roomID)
}

// UserRooms implements storage.Memberships: the user's memberships from
// USER_ROOMS, then the rooms' records and the user's read positions, each
// in one direct get per 1,024 rooms. None of the rooms is loaded.
func (s *Store) UserRooms(ctx context.Context, user string) ([]storage.UserRoom, error) {
	if s.userRooms == nil {
		return nil, fmt.Errorf("rooms of %s: room lists need nats-server 2.11 or later", user)
	}
	tok := natsbus.UserToken(user)
	entries, err := s.userRooms.Under(ctx, tok)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	out := make([]storage.UserRoom, 0, len(entries))
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Deleted {
			continue
		}
		_, room, ok := strings.Cut(e.Key, ".") // natsbus.UserRoomKey
		m, err := decodeMember(user, e.Value)
		if !ok || err != nil {
			s.log.Warn("ignoring malformed KV entry", "bucket", s.userRooms.Name(), "key", e.Key, "err", err)
			continue
		}
		out = append(out, storage.UserRoom{ID: room, Role: m.Role})
		ids = append(ids, room)
	}
	slices.SortFunc(out, func(a, b storage.UserRoom) int { return cmp.Compare(a.ID, b.ID) })
	recs, err := s.rooms.GetMany(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	names := make(map[string]string, len(recs))
	for _, e := range recs {
		if e.Deleted {
			continue
		}
		if rm, err := decodeRoom(e.Key, e.Value); err == nil {
			names[e.Key] = rm.Name
		}
	}
	reads, err := s.marks.Of(ctx, user, ids)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	s.set.RaiseMarks(user, ids, reads)
	for i := range out {
		out[i].Name, out[i].Read = names[out[i].ID], reads[out[i].ID]
	}
	return out, nil
}

// OnLeave implements storage.LeaveNotifier: fn hears of memberships ended
// by Leave on this node or by a delete the watcher sees.
func (s *Store) OnLeave(fn func(room, user string)) { s.set.OnLeave(fn) }

// MarkRead implements storage.ReadMarks.
func (s *Store) MarkRead(ctx context.Context, roomID, user string, id uint64) (uint64, error) {
	pos, rev, err := s.marks.MarkRead(ctx, roomID, user, id)
	if err == nil {
		s.set.PutMark(roomID, user, pos, rev)
	}
	return pos, err
}

// ReadMark implements storage.ReadMarks: from the working set where it
// holds the room, else from the bucket.
func (s *Store) ReadMark(ctx context.Context, roomID, user string) (uint64, error) {
	if pos, ok := s.set.Mark(roomID, user); ok {
		return pos, nil
	}
	return s.marks.ReadMark(ctx, roomID, user)
}

// Unread implements storage.ReadMarks: members and their positions from
// the working set.
func (s *Store) Unread(ctx context.Context, roomID string, msgs []storage.MessageRef) ([]int, error) {
	return s.set.Unread(ctx, roomID, msgs)
}

// Keep implements storage.Keeper: room stays in the working set until
// release.
func (s *Store) Keep(room string) (release func()) { return s.set.Keep(room) }

// WorkingSet reports what the node holds.
func (s *Store) WorkingSet() workingset.Stats { return s.set.Stats() }

// Close stops the watchers.
func (s *Store) Close() error {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
	return nil
}

// ReadMarks is the read positions in the CHAT_READS bucket, or, with
// more than one partition (natsbus.Names.Partition), in CHAT_READS_<p>,
// the bucket of the room's partition, so that read receipts are written
// through as many Raft leaders as messages are: for Store, and for a
// backend that keeps rooms and memberships elsewhere (storage/postgres),
// which holds them in its working set as Store does.
type ReadMarks struct {
	parts []*natsbus.Bucket // by partition
	names natsbus.Names
	log   *slog.Logger
	stops []func()
}

// OpenReadMarks creates or updates the read positions buckets.
func OpenReadMarks(ctx context.Context, bus *natsbus.Bus, cfg Config) (*ReadMarks, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	names := bus.Names()
	r := &ReadMarks{parts: make([]*natsbus.Bucket, names.Partitions()), names: names, log: log}
	for p := range r.parts {
		b, err := bus.OpenBucket(ctx, names.PartitionBucket(ReadsBucket, p), readsDescription, cfg.Replicas)
		if err != nil {
			return nil, err
		}
		r.parts[p] = b
	}
	return r, nil
}

// bucket is the bucket of the room's partition.
func (r *ReadMarks) bucket(room string) *natsbus.Bucket { return r.parts[r.names.Partition(room)] }

// Watch calls fn with every read position written from now on, by any
// node, until Close: a working set's feed. It may be called once.
func (r *ReadMarks) Watch(ctx context.Context, fn func(room, user string, pos, rev uint64)) error {
	if r.stops != nil {
		return errors.New("read positions: watched twice")
	}
	for _, b := range r.parts {
		stop, err := b.WatchUpdates(ctx, func(e natsbus.Entry) {
			if room, user, mk, ok := r.entry(b, e); ok {
				fn(room, user, mk.Pos, mk.Rev)
			}
		})
		if err != nil {
			_ = r.Close()
			return err
		}
		r.stops = append(r.stops, stop)
	}
	return nil
}

// entry reads an entry of bucket b (markEntry).
func (r *ReadMarks) entry(b *natsbus.Bucket, e natsbus.Entry) (room, user string, mk workingset.Mark, ok bool) {
	return markEntry(r.log, b, e)
}

// markEntry reads an entry of read positions bucket b; ok is false for a
// malformed one, which it logs. A deleted position is position 0. A
// revision is of its bucket: a room's positions are all in one.
func markEntry(log *slog.Logger, b *natsbus.Bucket, e natsbus.Entry) (room, user string, mk workingset.Mark, ok bool) {
	room, user, ok = natsbus.SplitRoomUserKey(e.Key)
	if !ok {
		log.Warn("ignoring malformed KV key", "bucket", b.Name(), "key", e.Key)
		return "", "", mk, false
	}
	mk = workingset.Mark{User: user, Rev: e.Revision}
	if !e.Deleted {
		p, err := strconv.ParseUint(string(e.Value), 10, 64)
		if err != nil {
			log.Warn("ignoring malformed KV value", "bucket", b.Name(), "key", e.Key, "err", err)
			return "", "", mk, false
		}
		mk.Pos = p
	}
	return room, user, mk, true
}

// Room returns every read position in room, for a working set's load.
func (r *ReadMarks) Room(ctx context.Context, room string) ([]workingset.Mark, error) {
	b := r.bucket(room)
	entries, err := b.Under(ctx, room)
	if err != nil {
		return nil, err
	}
	out := make([]workingset.Mark, 0, len(entries))
	for _, e := range entries {
		if _, _, mk, ok := r.entry(b, e); ok {
			out = append(out, mk)
		}
	}
	return out, nil
}

// Of returns user's read positions in rooms (missing: 0), in one direct
// get per partition and 1,024 rooms, the partitions' at once.
func (r *ReadMarks) Of(ctx context.Context, user string, rooms []string) (map[string]uint64, error) {
	keys := make([][]string, len(r.parts))
	for _, room := range rooms {
		p := r.names.Partition(room)
		keys[p] = append(keys[p], natsbus.RoomUserKey(room, user))
	}
	found := make([][]natsbus.Entry, len(r.parts))
	g, gctx := errgroup.WithContext(ctx)
	for p, ks := range keys {
		if len(ks) == 0 {
			continue
		}
		g.Go(func() error {
			var err error
			found[p], err = r.parts[p].GetMany(gctx, ks)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(rooms))
	for p, entries := range found {
		for _, e := range entries {
			if room, _, mk, ok := r.entry(r.parts[p], e); ok {
				out[room] = mk.Pos
			}
		}
	}
	return out, nil
}

// ReadMark returns user's read position in room, from the bucket.
func (r *ReadMarks) ReadMark(ctx context.Context, room, user string) (uint64, error) {
	b := r.bucket(room)
	e, err := b.Get(ctx, natsbus.RoomUserKey(room, user))
	if errors.Is(err, natsbus.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read position %s/%s: %w", room, user, err)
	}
	_, _, mk, ok := r.entry(b, e)
	if !ok {
		return 0, nil
	}
	return mk.Pos, nil
}

// MarkRead moves user's read position in room forward to id, with a
// compare-and-set loop, so concurrent marks from several nodes only ever
// move it forward. It returns the position after the call, with its
// revision.
func (r *ReadMarks) MarkRead(ctx context.Context, room, user string, id uint64) (pos, rev uint64, err error) {
	key := natsbus.RoomUserKey(room, user)
	b := r.bucket(room)
	for range 20 {
		cur, err := b.Get(ctx, key)
		exists := err == nil
		if err != nil && !errors.Is(err, natsbus.ErrKeyNotFound) {
			return 0, 0, fmt.Errorf("read position %s/%s: %w", room, user, err)
		}
		if exists {
			if p, perr := strconv.ParseUint(string(cur.Value), 10, 64); perr == nil && p >= id {
				return p, cur.Revision, nil
			}
		}
		val := []byte(strconv.FormatUint(id, 10))
		if exists {
			rev, err = b.Update(ctx, key, val, cur.Revision)
		} else {
			rev, err = b.Create(ctx, key, val)
		}
		if errors.Is(err, natsbus.ErrKeyExists) || errors.Is(err, natsbus.ErrRevisionChanged) {
			continue // lost a race with another writer (or a retry of ours landed): read again
		}
		if err != nil {
			return 0, 0, fmt.Errorf("store read position %s/%s: %w", room, user, err)
		}
		return id, rev, nil
	}
	return 0, 0, fmt.Errorf("store read position %s/%s: too much contention", room, user)
}

// EachReadMark calls fn with every read position in the read positions
// buckets that exist, creating none: for a backend that takes them over
// (storage/postgres). It returns how many buckets it read.
func EachReadMark(ctx context.Context, bus *natsbus.Bus, cfg Config, fn func(room, user string, pos uint64) error) (int, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	names := bus.Names()
	read := 0
	for p := range names.Partitions() {
		b, ok, err := bus.ExistingBucket(ctx, names.PartitionBucket(ReadsBucket, p))
		if err != nil {
			return read, err
		}
		if !ok {
			continue
		}
		read++
		err = b.Each(ctx, func(e natsbus.Entry) error {
			if room, user, mk, ok := markEntry(log, b, e); ok && mk.Pos > 0 {
				return fn(room, user, mk.Pos)
			}
			return nil
		})
		if err != nil {
			return read, err
		}
	}
	return read, nil
}

// Close stops the watches.
func (r *ReadMarks) Close() error {
	for _, stop := range r.stops {
		stop()
	}
	r.stops = nil
	return nil
}
