package postgres_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/tcpproxy"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/postgres"
	"github.com/chatd/chatd/storage/storetest"
	"github.com/jackc/pgx/v5"
)

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// startBus embeds a NATS server with JetStream and a client port, so that
// a test can give a component a connection of its own.
func startBus(t testing.TB) (*natsbus.Bus, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	bus, err := natsbus.Start(ctx(t), natsbus.Options{DataDir: t.TempDir(), ServerName: "pgtest", ClientListen: addr, Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	return bus, "nats://" + addr
}

func openDB(t testing.TB, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(ctx(t), postgres.Options{URL: url, Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func openStore(t testing.TB, db *postgres.DB) *postgres.Store {
	t.Helper()
	s, err := postgres.NewStore(ctx(t), db, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// sqlConn is a plain connection, for changes made in SQL by hand and for
// looking at what chatd stored.
func sqlConn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(ctx(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestMigrations(t *testing.T) {
	url := pgtest.NewDatabase(t)
	// Nodes starting at once, on an empty database.
	const nodes = 4
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i := range nodes {
		wg.Go(func() {
			db, err := postgres.Open(ctx(t), postgres.Options{URL: url, Logger: testlog.New()})
			if err == nil {
				db.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	c := sqlConn(t, url)
	applied := func() map[int]time.Time {
		rows, err := c.Query(ctx(t), "SELECT version, applied_at FROM chatd_migrations")
		if err != nil {
			t.Fatal(err)
		}
		out := map[int]time.Time{}
		for rows.Next() {
			var v int
			var at time.Time
			if err := rows.Scan(&v, &at); err != nil {
				t.Fatal(err)
			}
			out[v] = at
		}
		return out
	}
	first := applied()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) < 2 {
		t.Fatalf("migration files %v %v", files, err)
	}
	if len(first) != len(files) {
		t.Fatalf("applied migrations %v, want each of %d once", first, len(files))
	}
	for v := 1; v <= len(files); v++ {
		if first[v].IsZero() {
			t.Fatalf("migration %d not applied: %v", v, first)
		}
	}
	var tables []string
	rows, _ := c.Query(ctx(t), "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(tables, []string{"chatd_imports", "chatd_migrations", "messages", "read_positions", "room_members", "rooms"}) {
		t.Fatalf("tables %v %v", tables, err)
	}
	// Again: nothing to do (re-running 0001 would fail on its CREATE TABLEs).
	openDB(t, url)
	if again := applied(); !maps.EqualFunc(again, first, time.Time.Equal) {
		t.Fatalf("second start changed the migrations: %v, was %v", again, first)
	}
}

// TestMigrateArchive: an archive made by a chatd whose messages were keyed
// by id alone is migrated to (room, id), its messages kept, so that rooms
// of different partitions may archive the same id.
func TestMigrateArchive(t *testing.T) {
	url := pgtest.NewDatabase(t)
	c := sqlConn(t, url)
	v1, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	exec(t, c, string(v1))
	exec(t, c, `CREATE TABLE chatd_migrations (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`)
	exec(t, c, "INSERT INTO chatd_migrations (version, name) VALUES (1, '0001_init')")
	exec(t, c, `INSERT INTO messages (id, room_id, user_id, message, created_at, stored_at, data)
		VALUES (7, 'a', 'alice', 'kept', now(), now(), '{}')`)
	if _, err := c.Exec(ctx(t), `INSERT INTO messages (id, room_id, user_id, message, created_at, stored_at, data)
		VALUES (7, 'b', 'bob', 'same id', now(), now(), '{}')`); err == nil {
		t.Fatal("the old schema took a second message 7: the test does not start from it")
	}

	arch := openDB(t, url).Archive()
	now := time.Now()
	n, err := arch.Insert(ctx(t), []postgres.Row{{ID: 7, Room: "b", User: "bob", Text: "same id", CreatedAt: now, StoredAt: now, Data: []byte("{}")}})
	if err != nil || n != 1 {
		t.Fatalf("message 7 of another room: %d rows, %v", n, err)
	}
	for room, user := range map[string]string{"a": "alice", "b": "bob"} {
		var got string
		if err := c.QueryRow(ctx(t), "SELECT user_id FROM messages WHERE room_id = $1 AND id = 7", room).Scan(&got); err != nil || got != user {
			t.Fatalf("room %s message 7: %q %v", room, got, err)
		}
	}
	var indexes []string
	rows, _ := c.Query(ctx(t), "SELECT indexname FROM pg_indexes WHERE tablename = 'messages' ORDER BY 1")
	if indexes, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil || !slices.Equal(indexes, []string{"messages_pkey", "messages_search"}) {
		t.Fatalf("indexes %v %v, want the primary key and search", indexes, err)
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storage.Store {
		return openStore(t, openDB(t, pgtest.NewDatabase(t)))
	})
}

type leave struct{ room, user string }

func leaves(s *postgres.Store) chan leave {
	c := make(chan leave, 16)
	s.OnLeave(func(room, user string) { c <- leave{room, user} })
	return c
}

func expectLeave(t *testing.T, name string, c chan leave, want leave) {
	t.Helper()
	select {
	case got := <-c:
		if got != want {
			t.Fatalf("%s: OnLeave %v, want %v", name, got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no OnLeave for %v", name, want)
	}
}

// expectLeaves waits for every one of want, in any order, among others.
func expectLeaves(t *testing.T, name string, c chan leave, want ...leave) {
	t.Helper()
	missing := map[leave]bool{}
	for _, w := range want {
		missing[w] = true
	}
	timeout := time.After(10 * time.Second)
	for len(missing) > 0 {
		select {
		case got := <-c:
			delete(missing, got)
		case <-timeout:
			t.Fatalf("%s: no OnLeave for %v", name, missing)
		}
	}
}

// readMark is the read position s gives for user in room, which it holds.
func readMark(s *postgres.Store, room, user string, want uint64) func() error {
	return func() error {
		if _, err := s.Unread(context.Background(), room, nil); err != nil { // holds the room
			return err
		}
		got, err := s.ReadMark(context.Background(), room, user)
		if err != nil || got != want {
			return fmt.Errorf("read position of %s in %s: %d %v, want %d", user, room, got, err, want)
		}
		return nil
	}
}

func member(s *postgres.Store, room, user string, role storage.Role) func() error {
	return func() error {
		m, ok, err := s.Membership(context.Background(), room, user)
		if err != nil || !ok || m.Role != role {
			return fmt.Errorf("membership of %s in %s: %+v %v %v, want %s", user, room, m, ok, err, role)
		}
		return nil
	}
}

// Two stores on one database stand for two nodes: each follows the
// other's changes, and changes made in SQL by hand, through the feed.
func TestWorkingSetFollowsOtherNodesAndSQL(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := openStore(t, openDB(t, url)), openStore(t, openDB(t, url))
	aLeft, bLeft := leaves(a), leaves(b)
	c := ctx(t)
	if err := a.CreateRoom(c, storage.Room{ID: "team", Name: "Team", CreatedBy: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Join(c, "team", "bob", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "b sees the room", func() error {
		rm, err := b.Room(c, "team")
		if err != nil || rm.Name != "Team" || rm.CreatedBy != "alice" {
			return fmt.Errorf("room %+v %v", rm, err)
		}
		return member(b, "team", "alice", storage.RoleOwner)()
	})
	wait.Until(t, "b sees bob", member(b, "team", "bob", storage.RoleMember))

	db := sqlConn(t, url)
	exec(t, db, "INSERT INTO room_members (room_id, user_id) VALUES ('team', 'carol@example.com')")
	exec(t, db, "UPDATE room_members SET role = 'admin' WHERE user_id = 'carol@example.com'")
	for name, s := range map[string]*postgres.Store{"a": a, "b": b} {
		wait.Until(t, name+" sees carol, made admin in SQL", member(s, "team", "carol@example.com", storage.RoleAdmin))
		wait.Until(t, name+" lists carol's rooms", func() error {
			want := []storage.UserRoom{{ID: "team", Name: "Team", Role: storage.RoleAdmin}}
			if rooms, _ := s.UserRooms(c, "carol@example.com"); !slices.Equal(rooms, want) {
				return fmt.Errorf("rooms %v", rooms)
			}
			return nil
		})
	}
	// Removals, by a node or in SQL, are told on every node.
	exec(t, db, "DELETE FROM room_members WHERE user_id = 'bob'")
	expectLeave(t, "a", aLeft, leave{"team", "bob"})
	expectLeave(t, "b", bLeft, leave{"team", "bob"})
	if err := b.Leave(c, "team", "carol@example.com"); err != nil {
		t.Fatal(err)
	}
	expectLeave(t, "b", bLeft, leave{"team", "carol@example.com"})
	expectLeave(t, "a", aLeft, leave{"team", "carol@example.com"})
	if ok, _ := b.IsMember(c, "team", "carol@example.com"); ok {
		t.Fatal("b's own Leave is not in its working set when Leave returns")
	}
	// A membership moved to another user in SQL ends the old one.
	exec(t, db, "UPDATE room_members SET user_id = 'alice2' WHERE user_id = 'alice'")
	expectLeave(t, "a", aLeft, leave{"team", "alice"})
	wait.Until(t, "a sees alice2", member(a, "team", "alice2", storage.RoleOwner))
	// Unread counts: members and read positions from PostgreSQL.
	if _, err := a.Join(c, "team", "dave", storage.RoleMember); err != nil {
		t.Fatal(err)
	}
	if _, err := a.MarkRead(c, "team", "dave", 10); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "b counts unread", func() error {
		got, err := b.Unread(c, "team", []storage.MessageRef{{ID: 10, Sender: "alice2"}, {ID: 11, Sender: "alice2"}})
		if err != nil || !slices.Equal(got, []int{0, 1}) {
			return fmt.Errorf("unread %v %v, want [0 1]", got, err)
		}
		return nil
	})
	if got, err := a.ReadMark(c, "team", "dave"); err != nil || got != 10 {
		t.Fatalf("a's own MarkRead not in its working set when it returns: %d %v", got, err)
	}
	// A position moved back in SQL by hand, then deleted.
	exec(t, db, "UPDATE read_positions SET pos = 4 WHERE user_id = 'dave'")
	wait.Until(t, "b sees dave's position moved back", readMark(b, "team", "dave", 4))
	exec(t, db, "DELETE FROM read_positions WHERE user_id = 'dave'")
	wait.Until(t, "a sees dave's position gone", readMark(a, "team", "dave", 0))
	if _, err := b.MarkRead(c, "team", "dave", 12); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "a sees dave's new position", readMark(a, "team", "dave", 12))
	exec(t, db, "TRUNCATE read_positions")
	wait.Until(t, "b reloads after TRUNCATE read_positions", readMark(b, "team", "dave", 0))
	// TRUNCATE fires no row triggers; the nodes reload.
	exec(t, db, "TRUNCATE room_members")
	expectLeaves(t, "b after TRUNCATE", bLeft, leave{"team", "alice2"}, leave{"team", "dave"})
	wait.Until(t, "a's working set empty", func() error {
		if ms, _ := a.Members(c, "team"); len(ms) != 0 {
			return fmt.Errorf("members %v", ms)
		}
		return nil
	})
}

// The feed's connection is cut; changes made meanwhile reach the working
// set, removals included, once it is back.
func TestWorkingSetReloadsAfterReconnect(t *testing.T) {
	url := pgtest.NewDatabase(t)
	proxy := tcpproxy.New(t, pgtest.ServerAddr(t, url))
	s := openStore(t, openDB(t, pgtest.WithHost(t, url, proxy.Addr())))
	left := leaves(s)
	c := ctx(t)
	for _, u := range []string{"alice", "bob"} {
		if _, err := s.Join(c, "r", u, storage.RoleMember); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Cut()
	db := sqlConn(t, url) // not through the proxy
	exec(t, db, "DELETE FROM room_members WHERE user_id = 'bob'")
	exec(t, db, "INSERT INTO room_members (room_id, user_id) VALUES ('r', 'carol')")
	// Meanwhile the working set serves what it had.
	if ok, _ := s.IsMember(c, "r", "bob"); !ok {
		t.Fatal("the working set lost bob while the feed is down")
	}
	proxy.Restore()
	expectLeave(t, "after reload", left, leave{"r", "bob"})
	wait.Until(t, "carol loaded", member(s, "r", "carol", storage.RoleMember))

	// Killing the feed's backend from the server side works the same.
	exec(t, db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chatd change feed'")
	exec(t, db, "DELETE FROM room_members WHERE user_id = 'carol'")
	expectLeave(t, "after terminate", left, leave{"r", "carol"})
	if rooms, _ := s.UserRooms(c, "alice"); len(rooms) != 1 || rooms[0].ID != "r" {
		t.Fatalf("alice's rooms %v", rooms)
	}
}

// A Join that is already in PostgreSQL, made by a node whose feed has not
// brought it yet, still reads back at once.
func TestWritesReadBack(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a, b := openStore(t, openDB(t, url)), openStore(t, openDB(t, url))
	c := ctx(t)
	for i := range 20 {
		room := "r" + strconv.Itoa(i)
		if _, err := a.Join(c, room, "alice", storage.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		// b writes right after a: whatever b's working set had, its own write
		// returns once the feed has passed a's change too.
		added, err := b.Join(c, room, "alice", storage.RoleMember)
		if err != nil || added {
			t.Fatalf("b's Join of %s: added %v %v, want an existing membership", room, added, err)
		}
		if err := member(b, room, "alice", storage.RoleAdmin)(); err != nil {
			t.Fatal(err)
		}
	}
}
