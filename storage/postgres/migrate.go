package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationFiles are the schema changes, applied in the order of their
// numbers: NNNN_what.sql. A released file never changes; a new change is a
// new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the embedded migrations in order.
func migrations() ([]migration, error) {
	paths, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var out []migration
	for _, p := range paths {
		name := strings.TrimSuffix(path.Base(p), ".sql")
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must start with its number, as 0001_init.sql", p)
		}
		body, err := migrationFiles.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", p, err)
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share a number", out[i-1].name, out[i].name)
		}
	}
	return out, nil
}

// migrate applies, in one transaction, every migration the database lacks.
// DDL is transactional in PostgreSQL: a failure leaves the schema as it was.
// A transaction-scoped advisory lock makes nodes that start at once take
// turns: the second waits, then finds nothing left to do.
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }() // after Commit, a no-op
	// One lock per schema, so deployments in different schemas of one
	// database do not wait for each other.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('chatd migrations ' || current_schema(), 0))"); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS chatd_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	rows, err := tx.Query(ctx, "SELECT version FROM chatd_migrations")
	if err != nil {
		return fmt.Errorf("migrate: applied versions: %w", err)
	}
	applied := map[int]bool{}
	newest := 0
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("migrate: applied versions: %w", err)
		}
		applied[v], newest = true, max(newest, v)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate: applied versions: %w", err)
	}
	var done []string
	for _, m := range all {
		if applied[m.version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migrate: %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO chatd_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return fmt.Errorf("migrate: record %s: %w", m.name, err)
		}
		done = append(done, m.name)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	if len(done) > 0 {
		log.Info("PostgreSQL schema migrated", "applied", done)
	}
	if latest := all[len(all)-1].version; newest > latest {
		// A newer chatd migrated during a rolling upgrade; migrations only
		// add, so this one goes on with what it knows.
		log.Warn("PostgreSQL schema is newer than this chatd", "database", newest, "chatd", latest)
	}
	return nil
}
