// Package kvstore is chatd's embedded storage backend: rooms, memberships
// and read positions in JetStream KV buckets, replicated with the rest of
// JetStream.
//
// Every node keeps an in-memory mirror of the buckets, fed by a KV watcher,
// so membership checks and unread counts on the hot path cost no round trip.
// A node's own writes are applied to its mirror at once (read-your-writes);
// entries carry the KV revision so a late watcher event never rolls one back.
package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go/jetstream"
)

// Config shapes the KV buckets.
type Config struct {
	Replicas int
	Logger   *slog.Logger
}

// Store implements storage.Store on JetStream KV.
type Store struct {
	bus     *natsbus.Bus
	roomsKV jetstream.KeyValue
	members jetstream.KeyValue
	reads   jetstream.KeyValue
	log     *slog.Logger
	cancel  context.CancelFunc
	done    sync.WaitGroup
	// LeaveListeners implements storage.LeaveNotifier: its callbacks hear
	// of memberships ended by Leave on this node or a delete the watcher
	// sees.
	storage.LeaveListeners

	mu        sync.RWMutex
	rooms     map[string]*room
	userRooms map[string]map[string]struct{} // user -> rooms they belong to
}

type room struct {
	info    entry            // the room's record
	members map[string]entry // user -> membership
	reads   map[string]entry // user -> read position
}

// bucket names which mirrored bucket an entry belongs to.
type bucket int

const (
	roomsBucket bucket = iota
	membersBucket
	readsBucket
)

// entry is one mirrored key. present is false after a delete.
type entry struct {
	rev     uint64
	present bool
	pos     uint64         // reads: the read position
	member  storage.Member // members: the membership
	room    storage.Room   // rooms: the record
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
	return openBuckets(ctx, bus, cfg, roomsBucket, membersBucket, readsBucket)
}

// ReadMarks is the read positions alone, mirrored like the whole store's:
// for a backend that keeps rooms and memberships elsewhere
// (storage/postgres) but read positions in JetStream.
type ReadMarks struct{ s *Store }

// OpenReadMarks creates or updates the read positions bucket only and
// loads its mirror.
func OpenReadMarks(ctx context.Context, bus *natsbus.Bus, cfg Config) (*ReadMarks, error) {
	s, err := openBuckets(ctx, bus, cfg, readsBucket)
	if err != nil {
		return nil, err
	}
	return &ReadMarks{s: s}, nil
}

// MarkRead is Store.MarkRead.
func (r *ReadMarks) MarkRead(ctx context.Context, roomID, user string, id uint64) (uint64, error) {
	return r.s.MarkRead(ctx, roomID, user, id)
}

// ReadMark is Store.ReadMark: a lookup in the mirror, no round trip.
func (r *ReadMarks) ReadMark(ctx context.Context, roomID, user string) (uint64, error) {
	return r.s.ReadMark(ctx, roomID, user)
}

// Close stops the watcher.
func (r *ReadMarks) Close() error { return r.s.Close() }

// openBuckets creates or updates the given buckets and loads their mirrors.
func openBuckets(ctx context.Context, bus *natsbus.Bus, cfg Config, buckets ...bucket) (*Store, error) {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	mk := func(bucket, desc string) (jetstream.KeyValue, error) {
		var kv jetstream.KeyValue
		err := natsbus.Retry(ctx, log, "open KV bucket "+bucket, func(ctx context.Context) error {
			var err error
			kv, err = bus.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      bucket,
				Description: desc,
				History:     1,
				Storage:     jetstream.FileStorage,
				Replicas:    cfg.Replicas,
			})
			return err
		})
		return kv, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		bus: bus, log: log, cancel: cancel,
		rooms: map[string]*room{}, userRooms: map[string]map[string]struct{}{},
	}
	for _, b := range buckets {
		var kv *jetstream.KeyValue
		var name, desc string
		switch b {
		case roomsBucket:
			kv, name, desc = &s.roomsKV, natsbus.RoomsBucket, "chatd rooms, key <room>"
		case membersBucket:
			kv, name, desc = &s.members, natsbus.MembersBucket, "chatd room memberships, key <room>.<user>"
		case readsBucket:
			kv, name, desc = &s.reads, natsbus.ReadsBucket, "chatd read positions, key <room>.<user>"
		}
		var err error
		if *kv, err = mk(name, desc); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.watch(ctx, wctx, *kv, b); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// watch starts mirroring one bucket and waits for its initial values.
func (s *Store) watch(ctx, wctx context.Context, kv jetstream.KeyValue, b bucket) error {
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("watch KV bucket %s: %w", kv.Bucket(), err)
	}
	loaded := make(chan struct{})
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		defer func() { _ = w.Stop() }()
		initial := true
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				s.applyEvent(e, b)
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("load KV bucket %s: %w", kv.Bucket(), ctx.Err())
	}
}

func (s *Store) applyEvent(e jetstream.KeyValueEntry, b bucket) {
	var roomID, user string
	ok := true
	if b == roomsBucket {
		roomID = e.Key()
		ok = natsbus.ValidName(roomID)
	} else {
		roomID, user, ok = splitKey(e.Key())
	}
	if !ok {
		s.log.Warn("ignoring malformed KV key", "bucket", e.Bucket(), "key", e.Key())
		return
	}
	ent := entry{rev: e.Revision(), present: e.Operation() == jetstream.KeyValuePut}
	if ent.present {
		var err error
		switch b {
		case roomsBucket:
			ent.room, err = decodeRoom(roomID, e.Value())
		case membersBucket:
			ent.member, err = decodeMember(user, e.Value())
		case readsBucket:
			ent.pos, err = strconv.ParseUint(string(e.Value()), 10, 64)
		}
		if err != nil {
			s.log.Warn("ignoring malformed KV value", "bucket", e.Bucket(), "key", e.Key(), "err", err)
			return
		}
	}
	s.mu.Lock()
	ended := s.apply(roomID, user, ent, b)
	s.mu.Unlock()
	if ended {
		s.Left(roomID, user)
	}
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

// apply stores ent unless the mirror already has a newer revision, and
// reports whether that ended a membership. The caller holds s.mu.
func (s *Store) apply(roomID, user string, ent entry, b bucket) bool {
	r := s.rooms[roomID]
	if r == nil {
		r = &room{members: map[string]entry{}, reads: map[string]entry{}}
		s.rooms[roomID] = r
	}
	if b == roomsBucket {
		if r.info.rev < ent.rev {
			r.info = ent
		}
		return false
	}
	m := r.reads
	if b == membersBucket {
		m = r.members
	}
	cur, ok := m[user]
	if ok && cur.rev >= ent.rev {
		return false
	}
	m[user] = ent
	if b != membersBucket {
		return false
	}
	if ent.present {
		if s.userRooms[user] == nil {
			s.userRooms[user] = map[string]struct{}{}
		}
		s.userRooms[user][roomID] = struct{}{}
	} else {
		s.unindex(user, roomID)
	}
	return ok && cur.present && !ent.present
}

// unindex drops room from user's rooms. The caller holds s.mu.
func (s *Store) unindex(user, roomID string) {
	if rooms := s.userRooms[user]; rooms != nil {
		delete(rooms, roomID)
		if len(rooms) == 0 {
			delete(s.userRooms, user)
		}
	}
}

func key(roomID, user string) string { return roomID + "." + natsbus.UserToken(user) }

func splitKey(k string) (string, string, bool) {
	roomID, tok, ok := strings.Cut(k, ".")
	if !ok || !natsbus.ValidName(roomID) {
		return "", "", false
	}
	user, ok := natsbus.UserFromToken(tok)
	return roomID, user, ok
}

func (s *Store) lookup(roomID, user string, b bucket) (entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.rooms[roomID]
	if r == nil {
		return entry{}, false
	}
	var e entry
	switch b {
	case roomsBucket:
		e = r.info
	case membersBucket:
		e = r.members[user]
	case readsBucket:
		e = r.reads[user]
	}
	return e, e.present
}

// CreateRoom implements storage.Rooms: the record first, so that the id is
// claimed once, then the owner's membership.
func (s *Store) CreateRoom(ctx context.Context, rm storage.Room) error {
	val, err := json.Marshal(roomValue{Name: rm.Name, CreatedBy: rm.CreatedBy, CreatedAt: rm.CreatedAt.UTC()})
	if err != nil {
		return fmt.Errorf("encode room: %w", err)
	}
	var rev uint64
	err = s.retry(ctx, "create room", func(ctx context.Context) error {
		var err error
		rev, err = s.roomsKV.Create(ctx, rm.ID, val)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("create room %s: %w", rm.ID, storage.ErrExists)
	}
	if err == nil {
		err = s.bus.SyncBucket(ctx, natsbus.RoomsBucket)
	}
	if err != nil {
		return fmt.Errorf("create room %s: %w", rm.ID, err)
	}
	rm.CreatedAt = rm.CreatedAt.UTC()
	s.mu.Lock()
	s.apply(rm.ID, "", entry{rev: rev, present: true, room: rm}, roomsBucket)
	s.mu.Unlock()
	if _, err := s.join(ctx, rm.ID, rm.CreatedBy, storage.RoleOwner, rm.CreatedAt); err != nil {
		// Give the id back rather than leave a room nobody owns.
		if derr := s.roomsKV.Delete(ctx, rm.ID, jetstream.LastRevision(rev)); derr != nil {
			s.log.Error("room left without owner", "room", rm.ID, "err", derr)
		}
		return fmt.Errorf("create room %s: %w", rm.ID, err)
	}
	return nil
}

// Room implements storage.Rooms.
func (s *Store) Room(_ context.Context, id string) (storage.Room, error) {
	e, ok := s.lookup(id, "", roomsBucket)
	if !ok {
		return storage.Room{}, fmt.Errorf("room %s: %w", id, storage.ErrNotFound)
	}
	return e.room, nil
}

// Join implements storage.Memberships.
func (s *Store) Join(ctx context.Context, roomID, user string, role storage.Role) (bool, error) {
	return s.join(ctx, roomID, user, role, time.Now().UTC())
}

func (s *Store) join(ctx context.Context, roomID, user string, role storage.Role, at time.Time) (bool, error) {
	if _, ok := s.lookup(roomID, user, membersBucket); ok {
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
	var rev uint64
	err = s.retry(ctx, "add member", func(ctx context.Context) error {
		var err error
		rev, err = s.members.Create(ctx, key(roomID, user), val)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) {
		e, gerr := s.members.Get(ctx, key(roomID, user))
		if gerr != nil {
			return false, fmt.Errorf("read membership %s/%s: %w", roomID, user, gerr)
		}
		cur, derr := decodeMember(user, e.Value())
		if derr != nil {
			return false, fmt.Errorf("read membership %s/%s: %w", roomID, user, derr)
		}
		s.mu.Lock()
		s.apply(roomID, user, entry{rev: e.Revision(), present: true, member: cur}, membersBucket)
		s.mu.Unlock()
		return false, nil
	}
	if err == nil {
		err = s.bus.SyncBucket(ctx, natsbus.MembersBucket)
	}
	if err != nil {
		return false, fmt.Errorf("add member %s to %s: %w", user, roomID, err)
	}
	s.mu.Lock()
	s.apply(roomID, user, entry{rev: rev, present: true, member: mem}, membersBucket)
	s.mu.Unlock()
	return true, nil
}

// Leave implements storage.Memberships.
func (s *Store) Leave(ctx context.Context, roomID, user string) error {
	err := s.retry(ctx, "remove member", func(ctx context.Context) error {
		return s.members.Delete(ctx, key(roomID, user))
	})
	if err == nil {
		err = s.bus.SyncBucket(ctx, natsbus.MembersBucket)
	}
	if err != nil {
		return fmt.Errorf("remove member %s from %s: %w", user, roomID, err)
	}
	ended := false
	s.mu.Lock()
	if r := s.rooms[roomID]; r != nil {
		if e, ok := r.members[user]; ok && e.present {
			// The revision stays, so the watcher's delete event (a newer
			// one) still lands, and finds nothing more to end.
			e.present = false
			r.members[user] = e
			s.unindex(user, roomID)
			ended = true
		}
	}
	s.mu.Unlock()
	if ended {
		s.Left(roomID, user)
	}
	return nil
}

// IsMember implements storage.Memberships.
func (s *Store) IsMember(_ context.Context, roomID, user string) (bool, error) {
	_, ok := s.lookup(roomID, user, membersBucket)
	return ok, nil
}

// Membership implements storage.Memberships.
func (s *Store) Membership(_ context.Context, roomID, user string) (storage.Member, bool, error) {
	e, ok := s.lookup(roomID, user, membersBucket)
	return e.member, ok, nil
}

// Members implements storage.Memberships.
func (s *Store) Members(_ context.Context, roomID string) ([]storage.Member, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.rooms[roomID]
	if r == nil {
		return nil, nil
	}
	out := make([]storage.Member, 0, len(r.members))
	for _, e := range r.members {
		if e.present {
			out = append(out, e.member)
		}
	}
	slices.SortFunc(out, func(a, b storage.Member) int { return strings.Compare(a.User, b.User) })
	return out, nil
}

// UserRooms implements storage.Memberships.
func (s *Store) UserRooms(_ context.Context, user string) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.userRooms[user]))
	for id := range s.userRooms[user] {
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

// MarkRead implements storage.ReadMarks with a compare-and-set loop, so
// concurrent marks from several nodes only ever move the position forward.
func (s *Store) MarkRead(ctx context.Context, roomID, user string, id uint64) (uint64, error) {
	k := key(roomID, user)
	for attempt := 0; attempt < 20; attempt++ {
		if e, ok := s.lookup(roomID, user, readsBucket); ok && e.pos >= id {
			return e.pos, nil
		}
		val := []byte(strconv.FormatUint(id, 10))
		var cur jetstream.KeyValueEntry
		err := s.retry(ctx, "read position", func(ctx context.Context) error {
			var err error
			cur, err = s.reads.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
				cur, err = nil, nil
			}
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("read position %s/%s: %w", roomID, user, err)
		}
		var rev uint64
		if cur != nil {
			pos, perr := strconv.ParseUint(string(cur.Value()), 10, 64)
			if perr == nil && pos >= id {
				s.mu.Lock()
				s.apply(roomID, user, entry{rev: cur.Revision(), present: true, pos: pos}, readsBucket)
				s.mu.Unlock()
				return pos, nil
			}
		}
		// A retried write that had in fact landed comes back as a
		// conflict, and the loop reads again.
		err = s.retry(ctx, "store read position", func(ctx context.Context) error {
			var err error
			if cur == nil {
				rev, err = s.reads.Create(ctx, k, val)
			} else {
				rev, err = s.reads.Update(ctx, k, val, cur.Revision())
			}
			return err
		})
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
				continue // lost a race with another writer: read again
			}
			return 0, fmt.Errorf("store read position %s/%s: %w", roomID, user, err)
		}
		if err := s.bus.SyncBucket(ctx, natsbus.ReadsBucket); err != nil {
			return 0, fmt.Errorf("store read position %s/%s: %w", roomID, user, err)
		}
		s.mu.Lock()
		s.apply(roomID, user, entry{rev: rev, present: true, pos: id}, readsBucket)
		s.mu.Unlock()
		return id, nil
	}
	return 0, fmt.Errorf("store read position %s/%s: too much contention", roomID, user)
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// ReadMark implements storage.ReadMarks.
func (s *Store) ReadMark(_ context.Context, roomID, user string) (uint64, error) {
	e, _ := s.lookup(roomID, user, readsBucket)
	return e.pos, nil
}

// Unread implements storage.ReadMarks.
func (s *Store) Unread(_ context.Context, roomID string, msgs []storage.MessageRef) ([]int, error) {
	out := make([]int, len(msgs))
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.rooms[roomID]
	if r == nil {
		return out, nil
	}
	for u, m := range r.members {
		if !m.present {
			continue
		}
		pos := r.reads[u].pos
		for i, msg := range msgs {
			if u != msg.Sender && pos < msg.ID {
				out[i]++
			}
		}
	}
	return out, nil
}

// kvWriteWait bounds a KV operation's wait for its bucket's leader, long
// enough for a cluster to replace one that died.
const kvWriteWait = 30 * time.Second

// retry runs a KV operation again while its bucket has no leader.
func (s *Store) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	return natsbus.RetryFor(ctx, s.log, what, kvWriteWait, fn)
}

// Close stops the watchers.
func (s *Store) Close() error {
	s.cancel()
	s.done.Wait()
	return nil
}
