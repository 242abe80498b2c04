package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestServerReachable is what .ci/run checks first: the server answers and
// a test may make a database of its own there.
func TestServerReachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, NewDatabase(t))
	if err != nil {
		t.Fatalf("connect to a new test database: %v", err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %s", v)
}

// TestProxyCutsAndRestores: connections through the proxy work, end when
// it is cut, are refused while it is, and work again after.
func TestProxyCutsAndRestores(t *testing.T) {
	url := NewDatabase(t)
	p := NewProxy(t, ServerAddr(t, url))
	through := WithHost(t, url, p.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, through)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a connection through a cut proxy still works")
	}
	if c, err := pgx.Connect(ctx, through); err == nil {
		_ = c.Close(ctx)
		t.Fatal("a cut proxy took a new connection")
	}
	p.Restore()
	again, err := pgx.Connect(ctx, through)
	if err != nil {
		t.Fatalf("after Restore: %v", err)
	}
	_ = again.Close(ctx)
}
