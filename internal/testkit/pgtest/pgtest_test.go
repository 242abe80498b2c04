package pgtest

import (
	"context"
	"os"
	"regexp"
	"strings"
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

// TestCIAndREADMEAgree: the server URL .ci/run gives the tests is the one
// the README tells a developer to set.
func TestCIAndREADMEAgree(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(EnvURL + `:-(postgres://[^}"]+)`).FindSubmatch(ci)
	if m == nil {
		t.Fatalf(".ci/run gives no default %s", EnvURL)
	}
	if !strings.Contains(string(readme), "`"+string(m[1])+"`") {
		t.Fatalf(".ci/run's %s, %s, is not the README's", EnvURL, m[1])
	}
}
