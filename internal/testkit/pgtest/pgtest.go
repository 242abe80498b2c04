// Package pgtest gives tests a PostgreSQL database of their own, on the
// server that CHATD_TEST_POSTGRES_URL names.
//
// Without CHATD_TEST_POSTGRES_URL the tests that need PostgreSQL skip,
// saying so; with CHATD_REQUIRE_POSTGRES set (as .ci/run does) they fail
// instead, so CI never skips them silently.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables the tests read.
const (
	// EnvURL names a PostgreSQL server and a database to connect to
	// there, as postgres://postgres@127.0.0.1:5432/postgres; the user
	// must be allowed to create databases.
	EnvURL = "CHATD_TEST_POSTGRES_URL"
	// EnvRequire turns a missing EnvURL into a failure.
	EnvRequire = "CHATD_REQUIRE_POSTGRES"
)

// ServerURL returns EnvURL, or skips (fails, with EnvRequire) without it.
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%s is set but %s is not: these tests need PostgreSQL", EnvRequire, EnvURL)
		}
		t.Skipf("PostgreSQL tests skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run them", EnvURL)
	}
	return u
}

// NewDatabase creates an empty database, dropped when the test ends, and
// returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server := ServerURL(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "chatd_test_" + hex.EncodeToString(b[:])
	admin := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close(ctx) }()
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := admin("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create test database on %s: %v", redacted(server), err)
	}
	t.Cleanup(func() {
		// FORCE ends connections the test left open.
		if err := admin("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return withDatabase(t, server, name)
}

// withDatabase returns the connection URL u for database name instead.
func withDatabase(t testing.TB, u, name string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "postgres" && p.Scheme != "postgresql" {
		t.Fatalf("%s must be a postgres:// URL", EnvURL)
	}
	p.Path = "/" + name
	return p.String()
}

// WithHost returns the connection URL u for host:port instead.
func WithHost(t testing.TB, u, hostPort string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatalf("parse %s: %v", redacted(u), err)
	}
	p.Host = hostPort
	return p.String()
}

// ServerAddr is the host:port of the PostgreSQL server of URL u.
func ServerAddr(t testing.TB, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		t.Fatalf("%s must be a postgres:// URL with a host", EnvURL)
	}
	if p.Port() == "" {
		return net.JoinHostPort(p.Hostname(), "5432")
	}
	return p.Host
}

func redacted(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return "(unparsable URL)"
}
