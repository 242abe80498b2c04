// Package postgres keeps chatd's rooms, memberships, read positions and
// message archive in PostgreSQL, through pgx.
//
//   - DB is the connection pool, with the schema migrated at Open.
//   - Store implements storage.Store: rooms, memberships and read positions
//     in PostgreSQL, the rooms in use on a node held in memory
//     (storage/workingset) and kept current by LISTEN/NOTIFY, so that
//     membership checks and unread counts cost no round trip.
//   - Archiver copies every room message from the JetStream stream into the
//     messages table through a durable consumer; Archive reads it back for
//     history beyond the stream's retention, and for search.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options says where PostgreSQL is.
type Options struct {
	// URL is a libpq connection string, URL or keyword/value form
	// (postgres://user@host:5432/chatd?sslmode=verify-full). Unset parts
	// come from the PG* environment variables, as with libpq.
	URL string
	// ConnectTimeout bounds how long Open waits for an unreachable server
	// (default 1 minute). Refusals such as a wrong password fail at once.
	ConnectTimeout time.Duration
	Logger         *slog.Logger
}

// DB is chatd's PostgreSQL database.
type DB struct {
	pool *pgxpool.Pool
	// listen configures the Store's own connection, which LISTENs.
	listen *pgx.ConnConfig
	// channel is the NOTIFY channel of this schema's changes.
	channel string
	log     *slog.Logger
}

// Open connects, waiting for the server while it is unreachable, and
// applies the schema migrations this chatd has that the database lacks.
func Open(ctx context.Context, opts Options) (*DB, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = time.Minute
	}
	cfg, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("parse connection string: %w", err) // pgx hides the password
	}
	app := cfg.ConnConfig.RuntimeParams["application_name"]
	if app == "" {
		app = "chatd"
		cfg.ConnConfig.RuntimeParams["application_name"] = app
	}
	listen := cfg.ConnConfig.Copy()
	listen.RuntimeParams["application_name"] = app + " change feed" // to find it in pg_stat_activity
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connection pool: %w", err)
	}
	db := &DB{pool: pool, listen: listen, log: log}
	if err := db.connect(ctx, opts.ConnectTimeout); err != nil {
		pool.Close()
		return nil, err
	}
	if err := migrate(ctx, pool, log); err != nil {
		pool.Close()
		return nil, err
	}
	// The triggers name the channel after the schema the tables are in,
	// which is the first schema of the search path.
	if err := pool.QueryRow(ctx, "SELECT 'chatd:' || left(current_schema(), 57)").Scan(&db.channel); err != nil {
		pool.Close()
		return nil, fmt.Errorf("schema: %w", err)
	}
	return db, nil
}

// connect pings until the server answers, it refuses for good, or wait
// passes.
func (db *DB) connect(ctx context.Context, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err := db.pool.Ping(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		if !transient(err) {
			return fmt.Errorf("connect: %w", err)
		}
		if attempt == 1 || attempt%10 == 0 {
			db.log.Warn("PostgreSQL not reachable yet; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect: not reachable within %s: %w", wait, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// transient reports errors that may pass: the server unreachable,
// starting, shutting down or out of connections. A server that answers
// with any other error (a wrong password, no such database) will say the
// same again.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return true
	}
	return strings.HasPrefix(pgErr.Code, "08") || // connection exception
		strings.HasPrefix(pgErr.Code, "53") || // insufficient resources
		pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" // shutting down, or starting
}

// Close closes the pool; close the Store and stop the Archiver first.
func (db *DB) Close() { db.pool.Close() }
