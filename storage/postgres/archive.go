package postgres

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/jackc/pgx/v5"
)

// Archive reads the message archive: every room message, kept after the
// stream has dropped it. Messages come back as the stream held them.
type Archive struct{ db *DB }

// Archive returns the database's message archive.
func (db *DB) Archive() *Archive { return &Archive{db: db} }

// id passes a message id as a bigint: ids are stream sequences, far below
// 2^63; a larger bound means "no bound".
func id(n uint64) int64 { return int64(min(n, math.MaxInt64)) }

// Before returns up to limit of the room's archived messages with ids below
// before (0: the newest), oldest first.
func (a *Archive) Before(ctx context.Context, room string, before uint64, limit int) ([]natsbus.StoredMsg, error) {
	if before == 0 {
		before = math.MaxUint64
	}
	msgs, err := a.query(ctx, `SELECT id, room_id, data, stored_at FROM messages
		WHERE room_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`, room, id(before), limit)
	if err != nil {
		return nil, fmt.Errorf("archive of %s before %d: %w", room, before, err)
	}
	slices.Reverse(msgs)
	return msgs, nil
}

// Between returns up to limit of the room's archived messages with ids
// above after and below below, oldest first.
func (a *Archive) Between(ctx context.Context, room string, after, below uint64, limit int) ([]natsbus.StoredMsg, error) {
	msgs, err := a.query(ctx, `SELECT id, room_id, data, stored_at FROM messages
		WHERE room_id = $1 AND id > $2 AND id < $3 ORDER BY id LIMIT $4`, room, id(after), id(below), limit)
	if err != nil {
		return nil, fmt.Errorf("archive of %s after %d: %w", room, after, err)
	}
	return msgs, nil
}

// Search returns up to limit of the room's archived messages that match
// query, newest first, with ids below before (0: any). The query is read
// by websearch_to_tsquery, which takes any text: words must all appear,
// "quoted words" in that order, -word must not; anything else is text, never
// syntax. Words match as written, case aside (the 'simple' configuration).
func (a *Archive) Search(ctx context.Context, room, query string, before uint64, limit int) ([]natsbus.StoredMsg, error) {
	if before == 0 {
		before = math.MaxUint64
	}
	msgs, err := a.query(ctx, `SELECT id, room_id, data, stored_at FROM messages
		WHERE room_id = $1 AND id < $2 AND search @@ websearch_to_tsquery('simple', $3)
		ORDER BY id DESC LIMIT $4`, room, id(before), query, limit)
	if err != nil {
		return nil, fmt.Errorf("search archive of %s: %w", room, err)
	}
	return msgs, nil
}

func (a *Archive) query(ctx context.Context, sql string, args ...any) ([]natsbus.StoredMsg, error) {
	rows, err := a.db.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (natsbus.StoredMsg, error) {
		var m natsbus.StoredMsg
		var seq int64
		var at time.Time
		if err := r.Scan(&seq, &m.Room, &m.Data, &at); err != nil {
			return m, err
		}
		m.Seq, m.Time = uint64(seq), at.UTC()
		return m, nil
	})
}
