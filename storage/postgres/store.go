package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/workingset"
	"github.com/jackc/pgx/v5"
)

// Store implements storage.Store: rooms, memberships and read positions in
// PostgreSQL.
//
// A node holds the rooms in use on it (storage/workingset), each loaded
// with one query when first used, so that the checks made on every SEND
// (IsMember, Unread) cost no round trip. The working set changes through
// the change feed: one connection LISTENs to the NOTIFYs that the tables'
// triggers send, which arrive in commit order, and reloads the rooms held
// whenever it reconnects. A writer ends its transaction with a marker on
// the same feed and returns once the feed has brought the marker back, so
// a node reads its own writes, and every change made before them.
type Store struct {
	db     *DB
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	// MarkRead's queue and its writers (reads.go).
	markq                     chan *markReq
	closing                   chan struct{} // closed when Close begins
	stopMarks                 context.CancelFunc
	markersDone               chan struct{} // closed once the writers (and the queue watch) are gone
	marksWritten, markBatches atomic.Uint64
	notifyQueue               atomic.Uint64 // float64 bits (NotifyQueueUsage)
	// set tells its OnLeave callbacks of every membership that ends,
	// whichever node or SQL session ended it.
	set *workingset.Set

	wmu     sync.Mutex
	waiters map[uint64]chan struct{} // transaction id -> closed once the working set holds it
}

var (
	_ storage.Store         = (*Store)(nil)
	_ storage.LeaveNotifier = (*Store)(nil)
	_ storage.Keeper        = (*Store)(nil)
)

// Timings of the change feed.
const (
	// feedIdle is how long the feed waits for a notification before it
	// checks that its connection still works.
	feedIdle = 30 * time.Second
	// feedWait bounds a writer's wait for its change to come back
	// through the feed, which is down while it reconnects.
	feedWait = 10 * time.Second
)

// NewStore starts following changes, and returns once the change feed
// listens. maxEntries bounds the working set (0:
// workingset.DefaultMaxEntries).
func NewStore(ctx context.Context, db *DB, maxEntries int) (*Store, error) {
	fctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		db: db, log: db.log, cancel: cancel, done: make(chan struct{}),
		markq: make(chan *markReq, maxMarkBatch), closing: make(chan struct{}), markersDone: make(chan struct{}),
		waiters: map[uint64]chan struct{}{},
	}
	s.notifyQueue.Store(math.Float64bits(-1))
	s.set = workingset.New(workingset.Config{Load: s.load, MaxEntries: maxEntries})
	listening := make(chan struct{})
	go s.follow(fctx, listening)
	select {
	case <-listening:
	case <-ctx.Done():
		cancel()
		<-s.done
		return nil, fmt.Errorf("start the change feed: %w", ctx.Err())
	}
	mctx, stopMarks := context.WithCancel(context.Background())
	s.stopMarks = stopMarks
	var wg sync.WaitGroup
	for range markWriters {
		wg.Go(func() { s.markWriter(mctx) })
	}
	wg.Go(func() { s.watchNotifyQueue(mctx, notifyQueueEvery) })
	go func() {
		wg.Wait()
		close(s.markersDone)
	}()
	return s, nil
}

// follow runs the change feed until ctx ends, reconnecting as needed.
func (s *Store) follow(ctx context.Context, loaded chan<- struct{}) {
	defer close(s.done)
	wait := 100 * time.Millisecond
	for {
		err := s.feed(ctx, func() {
			if loaded != nil {
				close(loaded)
				loaded = nil
			} else {
				s.log.Info("PostgreSQL change feed back; rooms in use reloaded")
			}
			wait = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("PostgreSQL change feed lost; rooms in use served from memory until it is back", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// feed connects, listens, reloads the rooms held (then calls ready) and
// applies changes until the connection fails.
func (s *Store) feed(ctx context.Context, ready func()) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, s.db.listen.Copy())
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	// LISTEN before the reload: every change committed after it is then
	// sure to be notified.
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.db.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	snap, err := s.reload(ctx, conn)
	if err != nil {
		return err
	}
	ready()
	for {
		wctx, cancel := context.WithTimeout(ctx, feedIdle)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
				return fmt.Errorf("wait for changes: %w", err)
			}
			// Quiet for a while: make sure the connection is alive, as a
			// dropped one may not say so.
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			continue
		}
		var c change
		if err := json.Unmarshal([]byte(n.Payload), &c); err != nil {
			s.log.Warn("ignoring malformed change notification", "payload", n.Payload, "err", err)
			continue
		}
		xid, err := strconv.ParseUint(c.XID, 10, 64)
		if err != nil {
			s.log.Warn("ignoring change notification without a transaction id", "payload", n.Payload)
			continue
		}
		switch {
		case snap.holds(xid):
			// Committed before the snapshot: the rooms loaded since hold it.
		case c.Truncate:
			if snap, err = s.reload(ctx, conn); err != nil {
				return err
			}
		default:
			s.apply(c)
		}
		if c.Commit {
			s.wake(xid)
		}
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// change is one notification: a row of rooms, room_members or
// read_positions changed, a table was truncated, or a writer's transaction
// ends (Commit).
type change struct {
	XID      string `json:"xid"`
	Table    string `json:"table"`
	Old      *row   `json:"old"`
	New      *row   `json:"new"`
	Truncate bool   `json:"truncate"`
	Commit   bool   `json:"commit"`
}

// row is a changed row as the trigger describes it: ID, Name and CreatedBy
// for rooms; Room, User and Role for room_members; Room, User and Pos for
// read_positions; At in Unix microseconds.
type row struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedBy string `json:"createdBy"`
	Room      string `json:"room"`
	User      string `json:"user"`
	Role      string `json:"role"`
	At        int64  `json:"at"`
	Pos       uint64 `json:"pos"`
}

// snapshot tells which transactions a loaded snapshot holds (the rules of
// pg_visible_in_snapshot).
type snapshot struct {
	xmin, xmax uint64
	xip        map[uint64]bool
}

func (sn snapshot) holds(xid uint64) bool {
	return xid < sn.xmin || xid < sn.xmax && !sn.xip[xid]
}

// reload takes a snapshot of which transactions have committed, reloads
// every room the working set holds (each read after the snapshot, so
// holding at least what it holds), tells of memberships that ended
// meanwhile, and releases the writers the snapshot holds.
func (s *Store) reload(ctx context.Context, conn *pgx.Conn) (snapshot, error) {
	var sn snapshot
	var xmin, xmax string
	var xip []string
	if err := conn.QueryRow(ctx, `SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text,
		ARRAY(SELECT pg_snapshot_xip(s)::text) FROM pg_current_snapshot() s`).Scan(&xmin, &xmax, &xip); err != nil {
		return sn, fmt.Errorf("reload: snapshot: %w", err)
	}
	sn.xip = make(map[uint64]bool, len(xip))
	var err error
	if sn.xmin, err = strconv.ParseUint(xmin, 10, 64); err == nil {
		sn.xmax, err = strconv.ParseUint(xmax, 10, 64)
	}
	for _, x := range xip {
		if err != nil {
			break
		}
		var id uint64
		id, err = strconv.ParseUint(x, 10, 64)
		sn.xip[id] = true
	}
	if err != nil {
		return sn, fmt.Errorf("reload: snapshot: %w", err)
	}
	if err := s.set.Refresh(ctx); err != nil {
		return sn, fmt.Errorf("reload: %w", err)
	}
	s.wmu.Lock()
	for xid, ch := range s.waiters {
		if sn.holds(xid) {
			close(ch)
			delete(s.waiters, xid)
		}
	}
	s.wmu.Unlock()
	return sn, nil
}

// load reads one room for the working set: its record, members and read
// positions in one round trip.
func (s *Store) load(ctx context.Context, room string) (workingset.Snapshot, error) {
	var snap workingset.Snapshot
	batch := &pgx.Batch{}
	batch.Queue("SELECT id, name, created_by, created_at FROM rooms WHERE id = $1", room)
	batch.Queue("SELECT user_id, role, joined_at FROM room_members WHERE room_id = $1", room)
	batch.Queue("SELECT user_id, pos FROM read_positions WHERE room_id = $1", room)
	br := s.db.pool.SendBatch(ctx, batch)
	defer func() { _ = br.Close() }()
	var rm storage.Room
	switch err := br.QueryRow().Scan(&rm.ID, &rm.Name, &rm.CreatedBy, &rm.CreatedAt); {
	case err == nil:
		rm.CreatedAt = rm.CreatedAt.UTC()
		snap.Room = &rm
	case !errors.Is(err, pgx.ErrNoRows):
		return snap, fmt.Errorf("load room %s: %w", room, err)
	}
	rows, err := br.Query()
	if err != nil {
		return snap, fmt.Errorf("load members of %s: %w", room, err)
	}
	for rows.Next() {
		var m workingset.Member
		if err := rows.Scan(&m.User, &m.Role, &m.JoinedAt); err != nil {
			rows.Close()
			return snap, fmt.Errorf("load members of %s: %w", room, err)
		}
		m.JoinedAt = m.JoinedAt.UTC()
		if !m.Role.Valid() {
			m.Role = storage.RoleMember
		}
		snap.Members = append(snap.Members, m)
	}
	if err := rows.Err(); err != nil {
		return snap, fmt.Errorf("load members of %s: %w", room, err)
	}
	if rows, err = br.Query(); err != nil {
		return snap, fmt.Errorf("load read positions of %s: %w", room, err)
	}
	for rows.Next() {
		var mk workingset.Mark
		var pos int64
		if err := rows.Scan(&mk.User, &pos); err != nil {
			rows.Close()
			return snap, fmt.Errorf("load read positions of %s: %w", room, err)
		}
		mk.Pos = uint64(pos)
		snap.Marks = append(snap.Marks, mk)
	}
	if err := rows.Err(); err != nil {
		return snap, fmt.Errorf("load read positions of %s: %w", room, err)
	}
	return snap, nil
}

// apply brings one row change into the working set.
func (s *Store) apply(c change) {
	switch c.Table {
	case "rooms":
		if c.Old != nil && (c.New == nil || c.Old.ID != c.New.ID) {
			s.set.DeleteRoom(c.Old.ID, 0)
		}
		if n := c.New; n != nil {
			s.set.PutRoom(storage.Room{ID: n.ID, Name: n.Name, CreatedBy: n.CreatedBy, CreatedAt: time.UnixMicro(n.At).UTC()}, 0)
		}
	case "room_members":
		if o := c.Old; o != nil && (c.New == nil || o.Room != c.New.Room || o.User != c.New.User) {
			s.set.DeleteMember(o.Room, o.User, 0)
		}
		if n := c.New; n != nil {
			role := storage.Role(n.Role)
			if !role.Valid() {
				role = storage.RoleMember
			}
			s.set.PutMember(n.Room, storage.Member{User: n.User, Role: role, JoinedAt: time.UnixMicro(n.At).UTC()}, 0)
		}
	case "read_positions":
		// Moved in SQL by hand, a position may go back, or away (0).
		if o := c.Old; o != nil && (c.New == nil || o.Room != c.New.Room || o.User != c.New.User) {
			s.set.PutMark(o.Room, o.User, 0, 0)
		}
		if n := c.New; n != nil {
			s.set.PutMark(n.Room, n.User, n.Pos, 0)
		}
	}
}

// wake releases the writer waiting for transaction xid, if any.
func (s *Store) wake(xid uint64) {
	s.wmu.Lock()
	if ch, ok := s.waiters[xid]; ok {
		close(ch)
		delete(s.waiters, xid)
	}
	s.wmu.Unlock()
}

// write runs fn in a transaction that ends with a marker on the change
// feed, and returns once this node's working set holds the outcome (or, if
// the feed is down, after feedWait: the change is stored all the same).
func (s *Store) write(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.db.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }() // after Commit, a no-op
	if err := fn(tx); err != nil {
		return err
	}
	var xidText string
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text FROM (SELECT pg_notify($1,
		jsonb_build_object('xid', pg_current_xact_id()::text, 'commit', true)::text)) AS marker`,
		s.db.channel).Scan(&xidText); err != nil {
		return fmt.Errorf("change marker: %w", err)
	}
	xid, err := strconv.ParseUint(xidText, 10, 64)
	if err != nil {
		return fmt.Errorf("change marker: transaction id %q: %w", xidText, err)
	}
	seen := make(chan struct{})
	s.wmu.Lock()
	s.waiters[xid] = seen
	s.wmu.Unlock()
	forget := func() {
		s.wmu.Lock()
		delete(s.waiters, xid)
		s.wmu.Unlock()
	}
	if err := tx.Commit(ctx); err != nil {
		forget()
		return fmt.Errorf("commit: %w", err)
	}
	timer := time.NewTimer(feedWait)
	defer timer.Stop()
	select {
	case <-seen:
	case <-ctx.Done():
		forget()
	case <-timer.C:
		forget()
		s.log.Warn("change stored, but this node has not seen it come back yet (is the change feed down?)", "waited", feedWait)
	}
	return nil
}

// CreateRoom implements storage.Rooms.
func (s *Store) CreateRoom(ctx context.Context, rm storage.Room) error {
	at := rm.CreatedAt
	if at.IsZero() {
		at = time.Now()
	}
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO rooms (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO NOTHING`, rm.ID, rm.Name, rm.CreatedBy, at)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return storage.ErrExists
		}
		_, err = tx.Exec(ctx, `INSERT INTO room_members (room_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)
			ON CONFLICT (room_id, user_id) DO UPDATE SET role = 'owner'`, rm.ID, rm.CreatedBy, at)
		return err
	})
	if err != nil {
		return fmt.Errorf("create room %s: %w", rm.ID, err)
	}
	return nil
}

// Room implements storage.Rooms, from the working set.
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
	if !role.Valid() {
		return false, fmt.Errorf("add member %s to %s: invalid role %q", user, roomID, role)
	}
	if ok, _ := s.IsMember(ctx, roomID, user); ok {
		return false, nil
	}
	added := false
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, $3)
			ON CONFLICT (room_id, user_id) DO NOTHING`, roomID, user, string(role))
		added = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("add member %s to %s: %w", user, roomID, err)
	}
	return added, nil
}

// Leave implements storage.Memberships. The feed brings the removal back to
// every node, this one included, which tells the OnLeave callbacks.
func (s *Store) Leave(ctx context.Context, roomID, user string) error {
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", roomID, user)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove member %s from %s: %w", user, roomID, err)
	}
	return nil
}

// IsMember implements storage.Memberships, from the working set.
func (s *Store) IsMember(ctx context.Context, roomID, user string) (bool, error) {
	_, ok, err := s.set.Member(ctx, roomID, user)
	return ok, err
}

// Others implements storage.Memberships, from the working set.
func (s *Store) Others(ctx context.Context, roomID, user string) (int, error) {
	return s.set.Others(ctx, roomID, user)
}

// Membership implements storage.Memberships, from the working set.
func (s *Store) Membership(ctx context.Context, roomID, user string) (storage.Member, bool, error) {
	return s.set.Member(ctx, roomID, user)
}

// Members implements storage.Memberships, from the working set.
func (s *Store) Members(ctx context.Context, roomID string) ([]storage.Member, error) {
	return s.set.Members(ctx, roomID)
}

// UserRooms implements storage.Memberships: one query by the members'
// user index, with each room's record and read position by primary key.
// None of the rooms is loaded.
func (s *Store) UserRooms(ctx context.Context, user string) ([]storage.UserRoom, error) {
	rows, err := s.db.pool.Query(ctx, `SELECT m.room_id, coalesce(r.name, ''), m.role, coalesce(p.pos, 0)
		FROM room_members m LEFT JOIN rooms r ON r.id = m.room_id
		LEFT JOIN read_positions p ON p.room_id = m.room_id AND p.user_id = m.user_id
		WHERE m.user_id = $1 ORDER BY m.room_id`, user)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	var out []storage.UserRoom
	for rows.Next() {
		var ur storage.UserRoom
		var read int64
		if err := rows.Scan(&ur.ID, &ur.Name, &ur.Role, &read); err != nil {
			rows.Close()
			return nil, fmt.Errorf("rooms of %s: %w", user, err)
		}
		if !ur.Role.Valid() {
			ur.Role = storage.RoleMember
		}
		ur.Read = uint64(read)
		out = append(out, ur)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	return out, nil
}

// OnLeave implements storage.LeaveNotifier.
func (s *Store) OnLeave(fn func(room, user string)) { s.set.OnLeave(fn) }

// Unread implements storage.ReadMarks: the members and their positions
// from the working set.
func (s *Store) Unread(ctx context.Context, roomID string, msgs []storage.MessageRef) ([]int, error) {
	return s.set.Unread(ctx, roomID, msgs)
}

// Keep implements storage.Keeper: room stays in the working set until
// release.
func (s *Store) Keep(room string) (release func()) { return s.set.Keep(room) }

// WorkingSet reports what the node holds.
func (s *Store) WorkingSet() workingset.Stats { return s.set.Stats() }

// Close stops the read position writers, then the change feed. A
// MarkRead still waiting fails.
func (s *Store) Close() error {
	close(s.closing)
	s.stopMarks()
	<-s.markersDone
	s.cancel()
	<-s.done
	return nil
}
