package postgres

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Read positions are written in batches: every MarkRead waiting when a
// writer is free goes into its one transaction. Read receipts come far
// more often than messages (one per member who reads along), and a
// transaction that notifies holds PostgreSQL's notify lock from before its
// commit to after it, so notifying transactions commit one at a time:
// throughput comes from the size of each, not from their number.
const (
	// markWriters is how many batches are written at once: one commits
	// while the next is built and sent.
	markWriters = 2
	// maxMarkBatch bounds the positions of one transaction.
	maxMarkBatch = 1000
	// markTimeout bounds one batch's transaction, which its callers share.
	markTimeout = 30 * time.Second
)

// errClosed answers a MarkRead made while, or after, the store closes.
var errClosed = errors.New("store closed")

type markReq struct {
	room, user string
	id         uint64
	done       chan markResult // buffered: the writer never waits for its caller
}

type markResult struct {
	pos uint64
	err error
}

// MarkRead implements storage.ReadMarks: the position moves forward only,
// and the call returns the position after it, once stored and once this
// node's working set holds it (as every write, through the change feed).
func (s *Store) MarkRead(ctx context.Context, roomID, user string, id uint64) (uint64, error) {
	req := &markReq{room: roomID, user: user, id: id, done: make(chan markResult, 1)}
	select {
	case s.markq <- req:
	case <-s.closing:
		return 0, fmt.Errorf("mark read %s/%s: %w", roomID, user, errClosed)
	case <-ctx.Done():
		return 0, fmt.Errorf("mark read %s/%s: %w", roomID, user, ctx.Err())
	}
	select {
	case r := <-req.done:
		if r.err != nil {
			return 0, fmt.Errorf("mark read %s/%s: %w", roomID, user, r.err)
		}
		return r.pos, nil
	case <-s.markersDone:
		return 0, fmt.Errorf("mark read %s/%s: %w", roomID, user, errClosed)
	case <-ctx.Done():
		// The batch goes on; the position may be stored all the same.
		return 0, fmt.Errorf("mark read %s/%s: %w", roomID, user, ctx.Err())
	}
}

// markWriter writes batches of positions until ctx ends.
func (s *Store) markWriter(ctx context.Context) {
	batch := make([]*markReq, 0, maxMarkBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case r := <-s.markq:
			batch = append(batch, r)
		}
	more:
		for len(batch) < maxMarkBatch {
			select {
			case r := <-s.markq:
				batch = append(batch, r)
			default:
				break more
			}
		}
		s.writeMarks(ctx, batch)
	}
}

type markKey struct{ room, user string }

// writeMarks stores a batch in one transaction and answers its callers.
func (s *Store) writeMarks(ctx context.Context, batch []*markReq) {
	want := make(map[markKey]uint64, len(batch))
	for _, r := range batch {
		k := markKey{r.room, r.user}
		want[k] = max(want[k], r.id)
	}
	keys := slices.Collect(maps.Keys(want)) // the statement orders them (moveForward)
	rooms, users, ids := make([]string, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
	for i, k := range keys {
		rooms[i], users[i], ids[i] = k.room, k.user, int64(min(want[k], 1<<63-1))
	}
	got := make(map[markKey]uint64, len(keys))
	wctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	// While PostgreSQL is unreachable the batch is written again, up to
	// markTimeout, as a KV write waits for its bucket's leader: a read
	// receipt made during a short outage is stored late, not refused.
	// Writing it again is safe, whether or not a lost commit landed.
	attempt := func() error {
		return s.write(wctx, func(tx pgx.Tx) error { return upsertMarks(wctx, tx, keys, rooms, users, ids, got) })
	}
	err := attempt()
	for wait := 100 * time.Millisecond; err != nil && transient(err) && wctx.Err() == nil; wait = min(2*wait, 2*time.Second) {
		s.log.Debug("read positions not written yet; retrying", "err", err, "retry_in", wait)
		select {
		case <-wctx.Done():
		case <-time.After(wait):
			err = attempt()
		}
	}
	if err == nil {
		s.marksWritten.Add(uint64(len(keys)))
		s.markBatches.Add(1)
	}
	for _, r := range batch {
		res := markResult{err: err}
		if err == nil {
			res.pos = got[markKey{r.room, r.user}]
		}
		r.done <- res
	}
}

// moveForward moves positions ($1 rooms, $2 users, $3 positions) forward,
// creating those that are missing, and leaves those already at or past the
// one given as they are (no new row version, no notification). Rows are
// locked in one order in every statement, so that two that share
// positions never deadlock.
const moveForward = `INSERT INTO read_positions AS p (room_id, user_id, pos)
	SELECT room, "user", pos FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(room, "user", pos)
	ORDER BY room COLLATE "C", "user" COLLATE "C"
	ON CONFLICT (room_id, user_id) DO UPDATE SET pos = excluded.pos WHERE p.pos < excluded.pos`

// upsertMarks moves the positions keys (rooms, users, ids, in that order)
// forward in tx and reads every one into got.
func upsertMarks(ctx context.Context, tx pgx.Tx, keys []markKey, rooms, users []string, ids []int64, got map[markKey]uint64) error {
	clear(got) // of an attempt that failed
	// Positions already at or past the one asked for are read after.
	rows, err := tx.Query(ctx, moveForward+" RETURNING room_id, user_id, pos", rooms, users, ids)
	if err != nil {
		return err
	}
	if err := scanMarks(rows, got); err != nil {
		return err
	}
	if len(got) == len(keys) {
		return nil
	}
	var lr, lu []string
	for _, k := range keys {
		if _, ok := got[k]; !ok {
			lr, lu = append(lr, k.room), append(lu, k.user)
		}
	}
	rows, err = tx.Query(ctx, `SELECT p.room_id, p.user_id, p.pos FROM read_positions p
		JOIN unnest($1::text[], $2::text[]) AS v(room, "user") ON p.room_id = v.room AND p.user_id = v."user"`, lr, lu)
	if err != nil {
		return err
	}
	return scanMarks(rows, got)
}

// scanMarks reads rows of (room, user, pos) into got.
func scanMarks(rows pgx.Rows, got map[markKey]uint64) error {
	defer rows.Close()
	for rows.Next() {
		var k markKey
		var pos int64
		if err := rows.Scan(&k.room, &k.user, &pos); err != nil {
			return err
		}
		got[k] = uint64(pos)
	}
	return rows.Err()
}

// ReadMark implements storage.ReadMarks: from the working set where it
// holds the room, else from the table.
func (s *Store) ReadMark(ctx context.Context, roomID, user string) (uint64, error) {
	if pos, ok := s.set.Mark(roomID, user); ok {
		return pos, nil
	}
	var pos int64
	err := s.db.pool.QueryRow(ctx, "SELECT pos FROM read_positions WHERE room_id = $1 AND user_id = $2", roomID, user).Scan(&pos)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read position %s/%s: %w", roomID, user, err)
	}
	return uint64(pos), nil
}

// ReadPositions counts the read positions this store has written (each
// once per transaction) and the transactions that wrote them.
func (s *Store) ReadPositions() (written, transactions uint64) {
	return s.marksWritten.Load(), s.markBatches.Load()
}

// notifyQueueEvery is how often the store reads how full PostgreSQL's
// notification queue is.
const notifyQueueEvery = 15 * time.Second

// NotifyQueueUsage is how full PostgreSQL's notification queue was when
// last read (0 to 1), or -1 before the first read succeeds. PostgreSQL
// keeps every notification until each listener has read it; a listener
// that stops reading (a node paused but still connected) holds the queue
// back, and once it is full every write that notifies fails: every read
// receipt and membership change, on every node.
func (s *Store) NotifyQueueUsage() float64 {
	return math.Float64frombits(s.notifyQueue.Load())
}

// watchNotifyQueue reads the queue's usage every notifyQueueEvery until ctx
// ends.
func (s *Store) watchNotifyQueue(ctx context.Context, every time.Duration) {
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var usage float64
		err := s.db.pool.QueryRow(qctx, "SELECT pg_notification_queue_usage()").Scan(&usage)
		cancel()
		switch {
		case err == nil:
			s.notifyQueue.Store(math.Float64bits(usage))
			if usage >= 0.5 {
				s.log.Warn("PostgreSQL's notification queue is filling: a listener is not reading (a node paused but connected?); when full, read receipts and membership changes fail",
					"usage", usage)
			}
		case ctx.Err() == nil:
			s.log.Debug("notification queue usage unknown", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// importBatch is how many positions ImportReadPositions writes in one
// transaction.
const importBatch = 5000

// ImportReadPositions takes read positions over from where they were kept
// before (name says where), once per database: each calls its argument
// with every position. A position already further on in the table stays.
// Once all are in, the import is recorded under name, and later calls, on
// any node, return at once with done false. Two nodes that start together
// may both import, to the same effect. Positions whose room or user the
// table's checks refuse are skipped and counted.
func (db *DB) ImportReadPositions(ctx context.Context, name string, each func(fn func(room, user string, pos uint64) error) error) (n, skipped int, done bool, err error) {
	var seen bool
	if err := db.pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM chatd_imports WHERE name = $1)", name).Scan(&seen); err != nil {
		return 0, 0, false, fmt.Errorf("import %s: %w", name, err)
	}
	if seen {
		return 0, 0, false, nil
	}
	var rooms, users []string
	var ids []int64
	flush := func() error {
		if len(rooms) == 0 {
			return nil
		}
		_, err := db.pool.Exec(ctx, moveForward, rooms, users, ids)
		if err != nil {
			return err
		}
		n += len(rooms)
		rooms, users, ids = rooms[:0], users[:0], ids[:0]
		return nil
	}
	var bad int
	err = each(func(room, user string, pos uint64) error {
		if !validMarkKey(room, user) {
			bad++
			return nil
		}
		rooms, users, ids = append(rooms, room), append(users, user), append(ids, int64(min(pos, 1<<63-1)))
		if len(rooms) < importBatch {
			return nil
		}
		return flush()
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		_, err = db.pool.Exec(ctx, "INSERT INTO chatd_imports (name, rows) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, n)
	}
	if err != nil {
		return n, bad, false, fmt.Errorf("import %s: %w", name, err)
	}
	return n, bad, true, nil
}

// validMarkKey is read_positions' checks: a room id as chatd makes them, a
// user id that is not empty and at most 1,024 bytes.
func validMarkKey(room, user string) bool {
	if room == "" || len(room) > 64 || user == "" || len(user) > 1024 {
		return false
	}
	for _, c := range []byte(room) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
