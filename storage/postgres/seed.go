package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/jackc/pgx/v5"
)

// SeedMembers adds each users[i] to rooms[i] with role, and with read
// position read (0: none), in one transaction, as a backend importing a
// deployment would; pairs already there are left as they are. No change
// notification is sent (the rows' triggers are skipped), so it is for
// tools that build a deployment before any node runs on it
// (cmd/chatscale). Skipping triggers takes a role that may set
// session_replication_role: a superuser, or one granted it.
func (db *DB) SeedMembers(ctx context.Context, rooms, users []string, role storage.Role, at time.Time, read uint64) error {
	if len(rooms) != len(users) {
		return fmt.Errorf("seed members: %d rooms for %d users", len(rooms), len(users))
	}
	if !role.Valid() {
		return fmt.Errorf("seed members: invalid role %q", role)
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return fmt.Errorf("skip the change notifications (session_replication_role needs a superuser): %w", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO room_members (room_id, user_id, role, joined_at)
			SELECT room, "user", $3, $4 FROM unnest($1::text[], $2::text[]) AS m(room, "user")
			ON CONFLICT (room_id, user_id) DO NOTHING`, rooms, users, string(role), at)
		if err != nil || read == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO read_positions (room_id, user_id, pos)
			SELECT room, "user", $3 FROM unnest($1::text[], $2::text[]) AS m(room, "user")
			ON CONFLICT (room_id, user_id) DO NOTHING`, rooms, users, int64(min(read, 1<<63-1)))
		return err
	})
	if err != nil {
		return fmt.Errorf("seed %d members: %w", len(rooms), err)
	}
	return nil
}
