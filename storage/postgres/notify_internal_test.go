package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/jackc/pgx/v5"
)

// A listener that stops reading holds PostgreSQL's notification queue
// back: the store sees the queue fill, and empty again once it reads.
func TestNotifyQueueUsage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := pgtest.NewDatabase(t)
	db, err := Open(ctx, Options{URL: url, Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := NewStore(ctx, db, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	// The queue is the server's, shared with every other database's
	// listeners (other tests'), so the test compares readings rather than
	// expect exactly 0.
	wait.Until(t, "the first reading", func() error {
		if u := s.NotifyQueueUsage(); u < 0 {
			return fmt.Errorf("usage %v: not read yet", u)
		}
		return nil
	})
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.watchNotifyQueue(wctx, 50*time.Millisecond)

	// A listener inside a transaction is sent nothing until it ends.
	stuck, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stuck.Close(context.Background()) }()
	for _, q := range []string{"LISTEN " + pgx.Identifier{db.channel}.Sanitize(), "BEGIN"} {
		if _, err := stuck.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.pool.Exec(ctx, `INSERT INTO read_positions (room_id, user_id, pos)
		SELECT 'r', 'u' || g, 1 FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	var held float64
	wait.Until(t, "the queue held back", func() error {
		if held = s.NotifyQueueUsage(); held <= 0 {
			return fmt.Errorf("usage %v", held)
		}
		return nil
	})
	if _, err := stuck.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	_ = stuck.Close(ctx)
	wait.Until(t, "the queue emptied", func() error {
		if u := s.NotifyQueueUsage(); u >= held/2 {
			return fmt.Errorf("usage %v, held back %v", u, held)
		}
		return nil
	})
}
