package postgres_test

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

	"github.com/chatd/chatd/internal/pgtest"
	"github.com/chatd/chatd/internal/wait"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage/postgres"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// archiveEnv is a JetStream stream of room messages and a database to
// archive them in.
type archiveEnv struct {
	t       testing.TB
	bus     *natsbus.Bus
	natsURL string
	log     *natsbus.MessageLog
	url     string
	sql     *pgx.Conn
	sent    []uint64
	bodies  map[uint64][]byte
}

func newArchiveEnv(t testing.TB) *archiveEnv {
	bus, natsURL := startBus(t)
	log, err := bus.OpenMessageLog(ctx(t), natsbus.LogConfig{})
	if err != nil {
		t.Fatal(err)
	}
	url := pgtest.NewDatabase(t)
	openDB(t, url) // migrated
	return &archiveEnv{t: t, bus: bus, natsURL: natsURL, log: log, url: url, sql: sqlConn(t, url), bodies: map[uint64][]byte{}}
}

// post stores a message as chat.post does and remembers its id.
func (e *archiveEnv) post(room, user, text string) uint64 {
	e.t.Helper()
	data, _ := json.Marshal(map[string]any{"roomId": room, "userId": user, "message": text,
		"createdAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), "unread": 0})
	return e.store(room, data)
}

func (e *archiveEnv) store(room string, data []byte) uint64 {
	e.t.Helper()
	fut, err := e.log.PublishAsync(room, nil, data, "")
	if err != nil {
		e.t.Fatal(err)
	}
	var id uint64
	select {
	case ack := <-fut.Ok():
		id = ack.Sequence
	case err := <-fut.Err():
		e.t.Fatalf("store in %s: %v", room, err)
	case <-ctx(e.t).Done():
		e.t.Fatalf("store in %s: no acknowledgement", room)
	}
	e.sent = append(e.sent, id)
	e.bodies[id] = data
	return id
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

// archiver runs an Archiver on a NATS connection of its own, so that a
// test can kill it: its connection gone, nothing it held is acknowledged.
type archiver struct {
	*postgres.Archiver
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

func (e *archiveEnv) startArchiver(db *postgres.DB, cfg postgres.ArchiverConfig) *archiver {
	e.t.Helper()
	nc, err := nats.Connect(e.natsURL)
	if err != nil {
		e.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.Logger = testLogger()
	a, err := postgres.NewArchiver(ctx(e.t), db, js, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	ar := &archiver{Archiver: a, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ar.done)
		a.Run(rctx)
	}()
	e.t.Cleanup(ar.stop)
	return ar
}

func (a *archiver) stop() {
	a.cancel()
	<-a.done
	a.nc.Close()
}

// kill cuts the archiver off from NATS first, so it cannot acknowledge or
// hand back anything, then stops it.
func (a *archiver) kill() {
	a.nc.Close()
	a.stop()
}

// fast settings for tests: small batches, quick redelivery.
func fast() postgres.ArchiverConfig {
	return postgres.ArchiverConfig{Batch: 40, FetchWait: 50 * time.Millisecond, AckWait: 2 * time.Second, LagEvery: 100 * time.Millisecond}
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
func (e *archiveEnv) lockArchive() func() {
	e.t.Helper()
	c := sqlConn(e.t, e.url)
	tx, err := c.Begin(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := tx.Exec(ctx(e.t), "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"); err != nil {
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
		first.nc.Close() // it can no longer acknowledge anything
		unlock()         // its INSERT commits
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
		wait.Until(t, "every message acknowledged", func() error {
			info, err := e.bus.JS.Consumer(ctx(t), natsbus.MessagesStream, postgres.ArchiveConsumer)
			if err != nil {
				return err
			}
			ci := info.CachedInfo()
			if ci.NumAckPending != 0 || ci.NumPending != 0 || ci.AckFloor.Stream != e.sent[len(e.sent)-1] {
				return fmt.Errorf("ack pending %d, pending %d, ack floor %d", ci.NumAckPending, ci.NumPending, ci.AckFloor.Stream)
			}
			return nil
		})
		if second.Archived() != 60 {
			t.Fatalf("second archiver inserted %d rows, want 60 (40 were there)", second.Archived())
		}
	})
}

// PostgreSQL unreachable while messages keep coming: the archiver holds
// on, reports its lag, and catches up once it is back.
func TestArchiveCatchesUpAfterOutage(t *testing.T) {
	e := newArchiveEnv(t)
	proxy := pgtest.NewProxy(t, pgtest.ServerAddr(t, e.url))
	db := openDB(t, pgtest.WithHost(t, e.url, proxy.Addr()))
	a := e.startArchiver(db, fast())
	e.postMany(50)
	e.waitComplete()
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

func TestArchiveReads(t *testing.T) {
	e := newArchiveEnv(t)
	var ids []uint64
	words := []string{"alpha beta", "Gamma delta", "beta gamma", "epsilon", "the beta release", "zeta"}
	for _, w := range words {
		ids = append(ids, e.post("r", "alice", w))
		e.post("other", "bob", w) // another room's, never returned
	}
	db := openDB(t, e.url)
	e.startArchiver(db, fast())
	e.waitComplete()
	arch := db.Archive()
	seqs := func(msgs []natsbus.StoredMsg, err error) []uint64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]uint64, len(msgs))
		for i, m := range msgs {
			if m.Room != "r" || m.Time.IsZero() || !bytes.Equal(m.Data, e.bodies[m.Seq]) {
				t.Fatalf("archived message %+v", m)
			}
			out[i] = m.Seq
		}
		return out
	}
	c := ctx(t)
	if got := seqs(arch.Before(c, "r", 0, 4)); !slices.Equal(got, ids[2:]) {
		t.Fatalf("newest 4: %v, want %v", got, ids[2:])
	}
	if got := seqs(arch.Before(c, "r", ids[3], 10)); !slices.Equal(got, ids[:3]) {
		t.Fatalf("before %d: %v, want %v", ids[3], got, ids[:3])
	}
	if got := seqs(arch.Between(c, "r", ids[0], ids[4], 2)); !slices.Equal(got, ids[1:3]) {
		t.Fatalf("between: %v, want %v", got, ids[1:3])
	}
	for q, want := range map[string][]uint64{
		"beta":            {ids[4], ids[2], ids[0]},
		"GAMMA":           {ids[2], ids[1]},
		"beta gamma":      {ids[2]},
		`"gamma delta"`:   {ids[1]},
		"beta -gamma":     {ids[4], ids[0]},
		"beta OR epsilon": {ids[4], ids[3], ids[2], ids[0]},
		"bet":             nil, // words, not prefixes
	} {
		if got := seqs(arch.Search(c, "r", q, 0, 10)); !slices.Equal(got, want) {
			t.Fatalf("search %q: %v, want %v", q, got, want)
		}
	}
	if got := seqs(arch.Search(c, "r", "beta", ids[4], 1)); !slices.Equal(got, []uint64{ids[2]}) {
		t.Fatalf("second page of beta: %v", got)
	}
}

// BenchmarkArchive measures the archiver: b.N messages are stored in the
// stream first, then the time from the archiver's start until the last is
// committed is what counts (default batches of 500).
//
//	go test -run '^$' -bench Archive -benchtime 50000x ./storage/postgres
func BenchmarkArchive(b *testing.B) {
	e := newArchiveEnv(b)
	futs := make([]jetstream.PubAckFuture, 0, 1024)
	flush := func() {
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		futs = futs[:0]
	}
	for i := range b.N {
		room := "room" + strconv.Itoa(i%50)
		data, _ := json.Marshal(map[string]any{"roomId": room, "userId": "user" + strconv.Itoa(i%200),
			"message":   "benchmark message number " + strconv.Itoa(i) + " with a few more words in it",
			"createdAt": time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), "unread": 3})
		f, err := e.log.PublishAsync(room, nil, data, "")
		if err != nil {
			b.Fatal(err)
		}
		if futs = append(futs, f); len(futs) == cap(futs) {
			flush()
		}
	}
	flush()
	db := openDB(b, e.url)
	b.ResetTimer()
	start := time.Now()
	e.startArchiver(db, postgres.ArchiverConfig{})
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
