package archiver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/archiver"
	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/internal/testkit/tcpproxy"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage/postgres"
	"github.com/jackc/pgx/v5"
)

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// archiveEnv is a message log on an embedded NATS server, and a database
// to archive it in. Archivers run on NATS connections of their own, each
// through a proxy, so that a test can cut one off.
type archiveEnv struct {
	t       testing.TB
	natsURL string
	bus     *natsbus.Bus
	log     *natsbus.MessageLog
	commit  *natsbus.Committer
	url     string
	sql     *pgx.Conn
	sent    []uint64
	bodies  map[uint64][]byte
}

func newArchiveEnv(t testing.TB) *archiveEnv {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(port.Free(t))
	bus, err := natsbus.Start(ctx(t), natsbus.Options{DataDir: t.TempDir(), ServerName: "archivetest", ClientListen: addr, Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	log, err := bus.OpenMessageLog(ctx(t), natsbus.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	commit := log.NewCommitter(nil)
	t.Cleanup(func() { _ = commit.Close(context.Background()) })
	url := pgtest.NewDatabase(t)
	openDB(t, url) // migrated
	return &archiveEnv{t: t, natsURL: addr, bus: bus, log: log, commit: commit, url: url, sql: sqlConn(t, url), bodies: map[uint64][]byte{}}
}

// sqlConn is a plain connection, for looking at what was archived and for
// holding locks.
func sqlConn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
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

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(ctx(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// post stores a message as chat's Post does and remembers its id.
func (e *archiveEnv) post(room, user, text string) uint64 {
	e.t.Helper()
	data, _ := json.Marshal(map[string]any{"roomId": room, "userId": user, "message": text,
		"createdAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), "unread": 0})
	return e.store(room, data)
}

func (e *archiveEnv) store(room string, data []byte) uint64 {
	e.t.Helper()
	type result struct {
		id  uint64
		err error
	}
	done := make(chan result, 1)
	e.commit.Submit(room, data, "", "", nil, func(id uint64, err error) { done <- result{id, err} })
	var r result
	select {
	case r = <-done:
	case <-ctx(e.t).Done():
		e.t.Fatalf("store in %s: no acknowledgement", room)
	}
	if r.err != nil {
		e.t.Fatalf("store in %s: %v", room, r.err)
	}
	e.sent = append(e.sent, r.id)
	e.bodies[r.id] = data
	return r.id
}

func (e *archiveEnv) postMany(n int) {
	e.t.Helper()
	for i := range n {
		e.post("room"+strconv.Itoa(i%3), "user"+strconv.Itoa(i%5), "message number "+strconv.Itoa(i))
	}
}

// archived lists the ids in the archive, checking none is there twice.
func (e *archiveEnv) archived() []uint64 {
	e.t.Helper()
	rows, err := e.sql.Query(ctx(e.t), "SELECT id FROM messages ORDER BY id")
	if err != nil {
		e.t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = uint64(id)
	}
	return out
}

// waitComplete waits until the archive holds exactly the messages sent.
func (e *archiveEnv) waitComplete() {
	e.t.Helper()
	wait.Until(e.t, "archive complete", func() error {
		if got := e.archived(); !slices.Equal(got, e.sent) {
			return fmt.Errorf("archive holds %d messages, want the %d sent", len(got), len(e.sent))
		}
		return nil
	})
}

// waitAcked waits until the archiver has every message acknowledged.
func (e *archiveEnv) waitAcked(a *runner) {
	e.t.Helper()
	wait.Until(e.t, "every message acknowledged", func() error {
		if pending, age := a.Lag(); pending != 0 || age != 0 {
			return fmt.Errorf("%d messages unacknowledged, the oldest %s old", pending, age)
		}
		return nil
	})
}

// runner runs an Archiver on a NATS connection of its own, through a
// proxy, so that a test can cut it off: nothing it holds is acknowledged
// then.
type runner struct {
	*archiver.Archiver
	bus    *natsbus.Bus
	proxy  *tcpproxy.Proxy
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *archiveEnv) startArchiver(db *postgres.DB, cfg archiver.Config) *runner {
	e.t.Helper()
	proxy := tcpproxy.New(e.t, e.natsURL)
	bus, err := natsbus.Start(ctx(e.t), natsbus.Options{URL: "nats://" + proxy.Addr(), Logger: testlog.New()})
	if err != nil {
		e.t.Fatal(err)
	}
	log, err := bus.OpenMessageLog(ctx(e.t), natsbus.LogConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Logger = testlog.New()
	a, err := archiver.New(ctx(e.t), db.Archive(), log, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	r := &runner{Archiver: a, bus: bus, proxy: proxy, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		a.Run(rctx)
	}()
	e.t.Cleanup(r.stop)
	return r
}

// stop stops the archiver, then its connection; a cut connection is
// given up after a moment.
func (r *runner) stop() {
	r.cancel()
	<-r.done
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = r.bus.Close(cctx)
}

// kill cuts the archiver off from NATS first, so it cannot acknowledge or
// hand back anything, then stops it.
func (r *runner) kill() {
	r.proxy.Cut()
	r.stop()
}

// fast settings for tests: small batches, quick redelivery.
func fast() archiver.Config {
	return archiver.Config{Batch: 40, FetchWait: 50 * time.Millisecond, AckWait: 2 * time.Second, LagEvery: 100 * time.Millisecond}
}

func TestArchiveEveryMessageOnce(t *testing.T) {
	e := newArchiveEnv(t)
	e.postMany(150)
	// Bodies chatd would never write, as a backend might publish them.
	hostile := e.post("room0", "mallory", "nul\x00byte and bad utf-8 \xff, 'quotes'\"")
	raw := e.store("room1", []byte("not json at all"))
	db := openDB(t, e.url)
	a := e.startArchiver(db, fast())
	e.waitComplete()
	e.postMany(60) // and live ones, while it runs
	e.waitComplete()
	if n := a.Archived(); n != uint64(len(e.sent)) {
		t.Fatalf("archiver counted %d, sent %d", n, len(e.sent))
	}
	rows, err := e.sql.Query(ctx(t), "SELECT id, room_id, user_id, message, data FROM messages")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var room, user, text string
		var data []byte
		if err := rows.Scan(&id, &room, &user, &text, &data); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, e.bodies[uint64(id)]) {
			t.Fatalf("message %d archived as %q, stored as %q", id, data, e.bodies[uint64(id)])
		}
		switch uint64(id) {
		case hostile:
			if text != "nulbyte and bad utf-8 \uFFFD, 'quotes'\"" || user != "mallory" {
				t.Fatalf("hostile message archived as %q by %q", text, user)
			}
		case raw:
			if room != "room1" || text != "" {
				t.Fatalf("raw body archived in %q with text %q", room, text)
			}
		default:
			if !strings.HasPrefix(text, "message number ") || !strings.HasPrefix(room, "room") {
				t.Fatalf("message %d: %q in %q", id, text, room)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "lag back to zero", func() error {
		if p, age := a.Lag(); p != 0 || age != 0 {
			return fmt.Errorf("lag %d messages, %s", p, age)
		}
		return nil
	})
}

// waitBlocked waits until an archiver's INSERT waits for a lock the test holds.
func (e *archiveEnv) waitBlocked() {
	e.t.Helper()
	wait.Until(e.t, "archiver's INSERT waits for the lock", func() error {
		var n int
		err := e.sql.QueryRow(ctx(e.t), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO messages%'`).Scan(&n)
		if err != nil || n == 0 {
			return fmt.Errorf("%d waiting %v", n, err)
		}
		return nil
	})
}

// lockArchive holds the messages table until the returned func is called.
func (e *archiveEnv) lockArchive() func() { return e.lock("ACCESS EXCLUSIVE") }

// lockWrites holds the messages table against writes, not reads, until
// the returned func is called.
func (e *archiveEnv) lockWrites() func() { return e.lock("SHARE") }

func (e *archiveEnv) lock(mode string) func() {
	e.t.Helper()
	c := sqlConn(e.t, e.url)
	tx, err := c.Begin(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx(e.t), "LOCK TABLE messages IN "+mode+" MODE"); err != nil {
		e.t.Fatal(err)
	}
	return func() {
		if err := tx.Commit(ctx(e.t)); err != nil {
			e.t.Fatal(err)
		}
	}
}

func TestArchiverKilledMidBatch(t *testing.T) {
	t.Run("before commit", func(t *testing.T) {
		e := newArchiveEnv(t)
		e.postMany(100)
		db := openDB(t, e.url)
		unlock := e.lockArchive()
		first := e.startArchiver(db, fast())
		e.waitBlocked() // it holds a batch, its INSERT under way
		first.kill()
		// A dead client's statement runs on in the server until it
		// finishes; end it there too, as a crash of the database session
		// would.
		exec(t, e.sql, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO messages%'")
		unlock()
		if got := e.archived(); len(got) != 0 {
			t.Fatalf("a killed archiver's batch is in the archive: %d rows", len(got))
		}
		second := e.startArchiver(db, fast())
		e.waitComplete()
		if second.Archived() != 100 {
			t.Fatalf("second archiver wrote %d", second.Archived())
		}
	})
	t.Run("after commit, before ack", func(t *testing.T) {
		e := newArchiveEnv(t)
		e.postMany(100)
		db := openDB(t, e.url)
		unlock := e.lockArchive()
		first := e.startArchiver(db, fast())
		e.waitBlocked()
		first.proxy.Cut() // it can no longer acknowledge anything
		unlock()          // its INSERT commits
		wait.Until(t, "the first batch committed", func() error {
			if n := len(e.archived()); n != 40 {
				return fmt.Errorf("%d rows", n)
			}
			return nil
		})
		first.stop()
		// JetStream redelivers the unacknowledged batch to the next
		// archiver: stored once all the same.
		second := e.startArchiver(db, fast())
		e.waitComplete()
		e.waitAcked(second)
		if second.Archived() != 60 {
			t.Fatalf("second archiver inserted %d rows, want 60 (40 were there)", second.Archived())
		}
	})
}

// PostgreSQL unreachable while messages keep coming: the archiver holds
// on, reports its lag, and catches up once it is back.
func TestArchiveCatchesUpAfterOutage(t *testing.T) {
	e := newArchiveEnv(t)
	proxy := tcpproxy.New(t, pgtest.ServerAddr(t, e.url))
	db := openDB(t, pgtest.WithHost(t, e.url, proxy.Addr()))
	a := e.startArchiver(db, fast())
	e.postMany(50)
	e.waitComplete()
	// Rows are visible once committed, which may be before the archiver
	// has the COMMIT's reply: cut then, it retries that batch (rightly) and
	// the lag counts it too.
	e.waitAcked(a)
	proxy.Cut()
	e.postMany(80)
	wait.Until(t, "lag reported", func() error {
		if p, age := a.Lag(); p != 80 || age <= 0 {
			return fmt.Errorf("lag %d messages, %s", p, age)
		}
		if a.Failures() == 0 {
			return fmt.Errorf("no failed write counted")
		}
		return nil
	})
	proxy.Restore()
	e.waitComplete()
	// And again with the server ending the archiver's sessions itself.
	e.postMany(50)
	if _, err := e.sql.Exec(ctx(t), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'chatd'"); err != nil {
		t.Fatal(err)
	}
	e.postMany(50)
	e.waitComplete()
}

// reach is the archiver's reach for each of the rooms postMany uses.
func reach(t *testing.T, a *archiver.Archiver) []uint64 {
	t.Helper()
	r, err := a.Reach(ctx(t), []string{"room0", "room1", "room2"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitReach waits until every room's reach is want, the newest message:
// the archive has caught up and the reach asked again.
func waitReach(t *testing.T, a *archiver.Archiver, want uint64) {
	t.Helper()
	wait.Until(t, "reach at the newest", func() error {
		if r := reach(t, a); slices.Min(r) != want || slices.Max(r) != want {
			return fmt.Errorf("reach %v, want %d", r, want)
		}
		return nil
	})
}

// archivedOnce is an archive of n messages, every one acknowledged, and
// no archiver running.
func archivedOnce(t *testing.T, n int) *archiveEnv {
	t.Helper()
	e := newArchiveEnv(t)
	e.postMany(n)
	first := e.startArchiver(openDB(t, e.url), fast())
	e.waitComplete()
	e.waitAcked(first)
	first.stop()
	return e
}

// TestReach: the reach never claims a message the archive lacks, and comes
// to the newest message once everything is archived.
func TestReach(t *testing.T) {
	e := newArchiveEnv(t)
	e.postMany(30)
	a := e.startArchiver(openDB(t, e.url), fast())
	e.waitComplete()
	newest := e.sent[len(e.sent)-1]
	waitReach(t, a.Archiver, newest)
	unlock := e.lockWrites()
	e.postMany(30)
	e.waitBlocked()
	// Long enough for a fresh ask of the consumer: it must not have moved.
	time.Sleep(300 * time.Millisecond)
	if r := reach(t, a.Archiver); slices.Max(r) != newest {
		t.Fatalf("reach %v with nothing more archived, want %d", r, newest)
	}
	unlock()
	e.waitComplete()
	waitReach(t, a.Archiver, e.sent[len(e.sent)-1])
	// Cut off from NATS, the archiver answers with the floors it last
	// had: they still hold.
	a.proxy.Cut()
	time.Sleep(200 * time.Millisecond)
	if r := reach(t, a.Archiver); slices.Min(r) != e.sent[len(e.sent)-1] {
		t.Fatalf("reach cut off from NATS %v, want the last known %d", r, e.sent[len(e.sent)-1])
	}
}

// TestReachOfAnotherDatabase: an archiver given a database that lacks
// what its consumer acknowledged, here a new one, makes the consumer
// again: the database gets every message the log holds, and the reach is
// never the old consumer's. A database that holds it keeps the consumer.
func TestReachOfAnotherDatabase(t *testing.T) {
	e := archivedOnce(t, 30)

	other := pgtest.NewDatabase(t)
	otherSQL := sqlConn(t, other)
	openDB(t, other) // migrated
	// Writes held, so that the reach is seen before anything is archived.
	unlock := (&archiveEnv{t: t, url: other}).lockWrites()
	moved := e.startArchiver(openDB(t, other), fast())
	if r := reach(t, moved.Archiver); slices.Max(r) >= e.sent[0] {
		t.Fatalf("reach on a new database before anything is archived: %v, the first message %d", r, e.sent[0])
	}
	unlock()
	wait.Until(t, "the new database holds every message", func() error {
		var n int
		if err := otherSQL.QueryRow(ctx(t), "SELECT count(*) FROM messages").Scan(&n); err != nil || n != len(e.sent) {
			return fmt.Errorf("%d of %d (%v)", n, len(e.sent), err)
		}
		return nil
	})
	e.waitAcked(moved)
	moved.stop()

	// The first database holds every message the consumer acknowledged
	// (into the other): it is taken as it is, nothing archived twice.
	back := e.startArchiver(openDB(t, e.url), fast())
	if r := reach(t, back.Archiver); slices.Min(r) != e.sent[len(e.sent)-1] {
		t.Fatalf("reach %v, want %d", r, e.sent[len(e.sent)-1])
	}
	e.postMany(3)
	e.waitComplete()
	e.waitAcked(back)
	if back.Archived() != 3 {
		t.Fatalf("archived %d, want the 3 new", back.Archived())
	}
}

// TestReachOfARestoredDatabase: a database restored from a backup taken
// before the last messages were archived lacks them: they are archived
// again, and the reach waits for them.
func TestReachOfARestoredDatabase(t *testing.T) {
	e := archivedOnce(t, 30)
	exec(t, e.sql, "DELETE FROM messages WHERE id > $1", int64(e.sent[19]))
	unlock := e.lockWrites()
	second := e.startArchiver(openDB(t, e.url), fast())
	if r := reach(t, second.Archiver); slices.Max(r) >= e.sent[0] {
		t.Fatalf("reach %v before the lost messages are archived again, the first message %d", r, e.sent[0])
	}
	unlock()
	e.waitComplete()
	e.waitAcked(second)
	if second.Archived() != 10 {
		t.Fatalf("archived %d again, want the 10 lost", second.Archived())
	}
	waitReach(t, second.Archiver, e.sent[len(e.sent)-1])
}

// BenchmarkArchive measures the archiver: b.N messages are stored in the
// log first, then the time from the archiver's start until the last is
// committed is what counts (default batches of 500).
//
//	go test -run '^$' -bench Archive -benchtime 50000x ./archiver
func BenchmarkArchive(b *testing.B) {
	e := newArchiveEnv(b)
	errs := make(chan error, b.N)
	for i := range b.N {
		room := "room" + strconv.Itoa(i%50)
		data, _ := json.Marshal(map[string]any{"roomId": room, "userId": "user" + strconv.Itoa(i%200),
			"message":   "benchmark message number " + strconv.Itoa(i) + " with a few more words in it",
			"createdAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), "unread": 3})
		e.commit.Submit(room, data, "", "", nil, func(_ uint64, err error) { errs <- err })
	}
	for range b.N {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	db := openDB(b, e.url)
	b.ResetTimer()
	start := time.Now()
	e.startArchiver(db, archiver.Config{})
	for {
		var n int
		if err := e.sql.QueryRow(ctx(b), "SELECT count(*) FROM messages").Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n == b.N {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
