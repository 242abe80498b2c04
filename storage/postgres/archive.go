package postgres

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/chatd/chatd/storage"
	"github.com/jackc/pgx/v5"
)

// Archive is the message archive: every room message, kept after the
// message log has dropped it. Messages come back as the log held them.
// archiver fills it (Insert); chat reads it.
type Archive struct{ db *DB }

// Archive returns the database's message archive.
func (db *DB) Archive() *Archive { return &Archive{db: db} }

// id passes a message id as a bigint: ids are stream sequences, far below
// 2^63; a larger bound means "no bound".
func id(n uint64) int64 { return int64(min(n, math.MaxInt64)) }

// Before returns up to limit of the room's archived messages with ids below
// before (0: the newest), oldest first.
func (a *Archive) Before(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error) {
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
func (a *Archive) Between(ctx context.Context, room string, after, below uint64, limit int) ([]storage.Message, error) {
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
func (a *Archive) Search(ctx context.Context, room, query string, before uint64, limit int) ([]storage.Message, error) {
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

// Count returns, for each span in order, how many of its room's archived
// messages have ids in it, counting no further than limit: one statement
// for all, each an index range of (room_id, id) as long as its count.
func (a *Archive) Count(ctx context.Context, spans []storage.RoomSpan, limit int) ([]int, error) {
	if len(spans) == 0 {
		return nil, nil
	}
	rooms, after, upTo := make([]string, len(spans)), make([]int64, len(spans)), make([]int64, len(spans))
	for i, sp := range spans {
		rooms[i], after[i], upTo[i] = sp.Room, id(sp.After), id(sp.UpTo)
	}
	rows, err := a.db.pool.Query(ctx, `SELECT s.i, (SELECT count(*) FROM (SELECT 1 FROM messages m
			WHERE m.room_id = s.room AND m.id > s.after AND m.id <= s.up_to LIMIT $4) c)
		FROM unnest($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS s(room, after, up_to, i)`,
		rooms, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("count archived messages of %d rooms: %w", len(spans), err)
	}
	out := make([]int, len(spans))
	var i, n int64
	_, err = pgx.ForEachRow(rows, []any{&i, &n}, func() error {
		if i < 1 || int(i) > len(out) {
			return fmt.Errorf("row %d of %d", i, len(out))
		}
		out[i-1] = int(n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("count archived messages of %d rooms: %w", len(spans), err)
	}
	return out, nil
}

// Has reports whether the archive holds the room's message id.
func (a *Archive) Has(ctx context.Context, room string, msg uint64) (bool, error) {
	var has bool
	if err := a.db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE room_id = $1 AND id = $2)`,
		room, id(msg)).Scan(&has); err != nil {
		return false, fmt.Errorf("archive of %s holds %d: %w", room, msg, err)
	}
	return has, nil
}

func (a *Archive) query(ctx context.Context, sql string, args ...any) ([]storage.Message, error) {
	rows, err := a.db.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (storage.Message, error) {
		var m storage.Message
		var seq int64
		var at time.Time
		if err := r.Scan(&seq, &m.Room, &m.Data, &at); err != nil {
			return m, err
		}
		m.ID, m.Time = uint64(seq), at.UTC()
		return m, nil
	})
}

// Row is one message as the archive keeps it: the log's bytes, and what
// search and people reading the table need of them.
type Row struct {
	ID        uint64
	Room      string
	User      string
	Text      string
	CreatedAt time.Time
	StoredAt  time.Time
	Data      []byte
}

// Insert writes the rows in one statement; rows already archived (by room
// and id) are left as they are. It returns how many it wrote.
func (a *Archive) Insert(ctx context.Context, rows []Row) (int64, error) {
	n := len(rows)
	ids, rooms, users, texts := make([]int64, n), make([]string, n), make([]string, n), make([]string, n)
	created, stored, data := make([]time.Time, n), make([]time.Time, n), make([][]byte, n)
	for i, r := range rows {
		ids[i], rooms[i], users[i], texts[i] = id(r.ID), r.Room, text(r.User), text(r.Text)
		created[i], stored[i], data[i] = r.CreatedAt, r.StoredAt, r.Data
	}
	tag, err := a.db.pool.Exec(ctx, `INSERT INTO messages (id, room_id, user_id, message, created_at, stored_at, data)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bytea[])
		ON CONFLICT (room_id, id) DO NOTHING`, ids, rooms, users, texts, created, stored, data)
	if err != nil {
		return 0, fmt.Errorf("insert %d messages: %w", n, err)
	}
	return tag.RowsAffected(), nil
}

// text makes s storable as PostgreSQL text, which refuses NUL and invalid
// UTF-8; the row's data keeps the original bytes.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, string(utf8.RuneError)), "\x00", "")
}
