package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/mirror"
	"github.com/jackc/pgx/v5"
)

// ReadMarks is where a Store keeps read positions: kvstore.ReadMarks, whose
// ReadMark is a lookup in memory.
type ReadMarks interface {
	MarkRead(ctx context.Context, room, user string, id uint64) (uint64, error)
	ReadMark(ctx context.Context, room, user string) (uint64, error)
	Close() error
}

// Store implements storage.Store: rooms and memberships in PostgreSQL, read
// positions in marks.
//
// Every node mirrors the rooms and room_members tables in memory, so that
// the checks made on every SEND (IsMember, Unread) cost no round trip. The
// mirror changes only through the change feed: one connection LISTENs to
// the NOTIFYs that the tables' triggers send, which arrive in commit order,
// and loads a snapshot whenever it (re)connects. A writer ends its
// transaction with a marker on the same feed and returns once the feed has
// brought the marker back, so a node reads its own writes, and every
// change made before them.
type Store struct {
	db     *DB
	marks  ReadMarks
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	// mirror tells its OnLeave callbacks of every membership that ends,
	// whichever node or SQL session ended it.
	mirror *mirror.Mirror

	wmu     sync.Mutex
	waiters map[uint64]chan struct{} // transaction id -> closed once the mirror holds it
}

var (
	_ storage.Store         = (*Store)(nil)
	_ storage.LeaveNotifier = (*Store)(nil)
)

// Timings of the change feed.
const (
	// feedIdle is how long the feed waits for a notification before it
	// checks that its connection still works.
	feedIdle = 30 * time.Second
	// mirrorWait bounds a writer's wait for its change to come back
	// through the feed, which is down while it reconnects.
	mirrorWait = 10 * time.Second
)

// NewStore loads the mirror and starts following changes; marks belongs to
// the store from now on and is closed with it.
func NewStore(ctx context.Context, db *DB, marks ReadMarks) (*Store, error) {
	fctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		db: db, marks: marks, log: db.log, cancel: cancel, done: make(chan struct{}),
		mirror: mirror.New(), waiters: map[uint64]chan struct{}{},
	}
	loaded := make(chan struct{})
	go s.follow(fctx, loaded)
	select {
	case <-loaded:
		return s, nil
	case <-ctx.Done():
		cancel()
		<-s.done
		return nil, fmt.Errorf("load rooms and memberships: %w", ctx.Err())
	}
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
				s.log.Info("PostgreSQL change feed back; memberships reloaded")
			}
			wait = 100 * time.Millisecond
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("PostgreSQL change feed lost; memberships served from memory until it is back", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// feed connects, listens, loads a snapshot (then calls ready) and applies
// changes until the connection fails.
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
	// LISTEN before the snapshot: every change committed after the snapshot
	// is then sure to be notified.
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.db.channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	snap, err := s.load(ctx, conn)
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
			// Committed before the snapshot: the mirror has it already.
		case c.Truncate:
			if snap, err = s.load(ctx, conn); err != nil {
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

// change is one notification: a row of rooms or room_members changed, a
// table was truncated, or a writer's transaction ends (Commit).
type change struct {
	XID      string `json:"xid"`
	Table    string `json:"table"`
	Old      *row   `json:"old"`
	New      *row   `json:"new"`
	Truncate bool   `json:"truncate"`
	Commit   bool   `json:"commit"`
}

// row is a changed row as the trigger describes it: ID, Name and CreatedBy
// for rooms; Room, User and Role for room_members; At in Unix microseconds.
type row struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	CreatedBy string `json:"createdBy"`
	Room      string `json:"room"`
	User      string `json:"user"`
	Role      string `json:"role"`
	At        int64  `json:"at"`
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

// load replaces the mirror with a consistent snapshot of both tables and
// tells of memberships that ended meanwhile.
func (s *Store) load(ctx context.Context, conn *pgx.Conn) (snapshot, error) {
	var sn snapshot
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return sn, fmt.Errorf("load: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	var xmin, xmax string
	var xip []string
	// The first statement fixes the transaction's snapshot; both tables
	// are then read as of that same moment.
	if err := tx.QueryRow(ctx, `SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text,
		ARRAY(SELECT pg_snapshot_xip(s)::text) FROM pg_current_snapshot() s`).Scan(&xmin, &xmax, &xip); err != nil {
		return sn, fmt.Errorf("load: snapshot: %w", err)
	}
	sn.xip = make(map[uint64]bool, len(xip))
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
		return sn, fmt.Errorf("load: snapshot: %w", err)
	}
	var rooms []storage.Room
	rows, err := tx.Query(ctx, "SELECT id, name, created_by, created_at FROM rooms")
	if err != nil {
		return sn, fmt.Errorf("load rooms: %w", err)
	}
	for rows.Next() {
		var rm storage.Room
		if err := rows.Scan(&rm.ID, &rm.Name, &rm.CreatedBy, &rm.CreatedAt); err != nil {
			rows.Close()
			return sn, fmt.Errorf("load rooms: %w", err)
		}
		rm.CreatedAt = rm.CreatedAt.UTC()
		rooms = append(rooms, rm)
	}
	if err := rows.Err(); err != nil {
		return sn, fmt.Errorf("load rooms: %w", err)
	}
	rows, err = tx.Query(ctx, "SELECT room_id, user_id, role, joined_at FROM room_members")
	if err != nil {
		return sn, fmt.Errorf("load memberships: %w", err)
	}
	var members []mirror.Membership
	for rows.Next() {
		var ms mirror.Membership
		if err := rows.Scan(&ms.Room, &ms.Member.User, &ms.Member.Role, &ms.Member.JoinedAt); err != nil {
			rows.Close()
			return sn, fmt.Errorf("load memberships: %w", err)
		}
		ms.Member.JoinedAt = ms.Member.JoinedAt.UTC()
		members = append(members, ms)
	}
	if err := rows.Err(); err != nil {
		return sn, fmt.Errorf("load memberships: %w", err)
	}
	s.mirror.Replace(rooms, members)
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

// apply brings one row change into the mirror.
func (s *Store) apply(c change) {
	switch c.Table {
	case "rooms":
		if c.Old != nil && (c.New == nil || c.Old.ID != c.New.ID) {
			s.mirror.DeleteRoom(c.Old.ID, 0)
		}
		if n := c.New; n != nil {
			s.mirror.PutRoom(storage.Room{ID: n.ID, Name: n.Name, CreatedBy: n.CreatedBy, CreatedAt: time.UnixMicro(n.At).UTC()}, 0)
		}
	case "room_members":
		if o := c.Old; o != nil && (c.New == nil || o.Room != c.New.Room || o.User != c.New.User) {
			s.mirror.DeleteMember(o.Room, o.User, 0)
		}
		if n := c.New; n != nil {
			role := storage.Role(n.Role)
			if !role.Valid() {
				role = storage.RoleMember
			}
			s.mirror.PutMember(n.Room, storage.Member{User: n.User, Role: role, JoinedAt: time.UnixMicro(n.At).UTC()}, 0)
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
// feed, and returns once this node's mirror holds the outcome (or, if the
// feed is down, after mirrorWait: the change is stored all the same).
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
	timer := time.NewTimer(mirrorWait)
	defer timer.Stop()
	select {
	case <-seen:
	case <-ctx.Done():
		forget()
	case <-timer.C:
		forget()
		s.log.Warn("change stored, but this node's mirror has not seen it yet (is the change feed down?)", "waited", mirrorWait)
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

// Room implements storage.Rooms, from the mirror.
func (s *Store) Room(_ context.Context, id string) (storage.Room, error) {
	if rm, ok := s.mirror.Room(id); ok {
		return rm, nil
	}
	return storage.Room{}, fmt.Errorf("room %s: %w", id, storage.ErrNotFound)
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

// IsMember implements storage.Memberships, from the mirror.
func (s *Store) IsMember(_ context.Context, roomID, user string) (bool, error) {
	_, ok := s.mirror.Member(roomID, user)
	return ok, nil
}

// Others implements storage.Memberships, from the mirror.
func (s *Store) Others(_ context.Context, roomID, user string) (int, error) {
	return s.mirror.Others(roomID, user), nil
}

// Membership implements storage.Memberships, from the mirror.
func (s *Store) Membership(_ context.Context, roomID, user string) (storage.Member, bool, error) {
	m, ok := s.mirror.Member(roomID, user)
	return m, ok, nil
}

// Members implements storage.Memberships, from the mirror.
func (s *Store) Members(_ context.Context, roomID string) ([]storage.Member, error) {
	return s.mirror.Members(roomID), nil
}

// UserRooms implements storage.Memberships, from the mirror.
func (s *Store) UserRooms(_ context.Context, user string) ([]string, error) {
	return s.mirror.UserRooms(user), nil
}

// OnLeave implements storage.LeaveNotifier.
func (s *Store) OnLeave(fn func(room, user string)) { s.mirror.OnLeave(fn) }

// MarkRead implements storage.ReadMarks in marks.
func (s *Store) MarkRead(ctx context.Context, roomID, user string, id uint64) (uint64, error) {
	return s.marks.MarkRead(ctx, roomID, user, id)
}

// ReadMark implements storage.ReadMarks in marks.
func (s *Store) ReadMark(ctx context.Context, roomID, user string) (uint64, error) {
	return s.marks.ReadMark(ctx, roomID, user)
}

// Unread implements storage.ReadMarks: the members from the mirror, their
// positions from marks, both in memory.
func (s *Store) Unread(ctx context.Context, roomID string, msgs []storage.MessageRef) ([]int, error) {
	var perr error
	out := s.mirror.Unread(roomID, msgs, func(user string) uint64 {
		pos, err := s.marks.ReadMark(ctx, roomID, user)
		if err != nil && perr == nil {
			perr = fmt.Errorf("read position of %s in %s: %w", user, roomID, err)
		}
		return pos
	})
	if perr != nil {
		return nil, perr
	}
	return out, nil
}

// Close stops the change feed and closes the read marks.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	return s.marks.Close()
}
