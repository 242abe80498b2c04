package postgres_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/tcpproxy"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/chatd/chatd/storage/postgres"
)

// Two nodes mark the same positions at once, many callers each, in
// batches: every call returns a position at least the one it asked for,
// positions never go back, and both nodes' working sets end at what the
// table holds, the highest asked for.
func TestConcurrentMarksMoveForwardOnly(t *testing.T) {
	url := pgtest.NewDatabase(t)
	nodes := []*postgres.Store{openStore(t, openDB(t, url)), openStore(t, openDB(t, url))}
	c := ctx(t)
	const rooms, users, callers, marks = 4, 5, 8, 60
	for r := range rooms {
		for _, s := range nodes { // each node holds every room
			if _, err := s.Unread(c, "r"+strconv.Itoa(r), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	highest := map[[2]string]uint64{}
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*callers)
	for i, s := range nodes {
		for g := range callers {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
			wg.Go(func() {
				last := map[[2]string]uint64{}
				for range marks {
					k := [2]string{"r" + strconv.Itoa(rng.IntN(rooms)), "u" + strconv.Itoa(rng.IntN(users))}
					id := 1 + rng.Uint64N(1000)
					pos, err := s.MarkRead(c, k[0], k[1], id)
					if err != nil {
						errs <- err
						return
					}
					if pos < id || pos < last[k] {
						errs <- fmt.Errorf("node %d: MarkRead(%v, %d) = %d, after %d from this caller", i, k, id, pos, last[k])
						return
					}
					last[k] = pos
					mu.Lock()
					highest[k] = max(highest[k], id)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	db := sqlConn(t, url)
	for k, want := range highest {
		var got uint64
		if err := db.QueryRow(c, "SELECT pos FROM read_positions WHERE room_id = $1 AND user_id = $2", k[0], k[1]).Scan(&got); err != nil || got != want {
			t.Fatalf("table holds %d for %v (%v), want %d", got, k, err, want)
		}
		for i, s := range nodes {
			wait.Until(t, fmt.Sprintf("node %d holds %v at %d", i, k, want), readMark(s, k[0], k[1], want))
		}
	}
	var written, batches uint64
	for _, s := range nodes {
		w, b := s.ReadPositions()
		written, batches = written+w, batches+b
	}
	t.Logf("%d calls wrote %d positions in %d transactions", len(nodes)*callers*marks, written, batches)
	if written == 0 || batches == 0 || batches > written {
		t.Fatalf("stats: %d positions in %d transactions", written, batches)
	}
}

// A MarkRead made while the store closes fails; none waits for ever.
func TestMarkReadAfterClose(t *testing.T) {
	s, err := postgres.NewStore(ctx(t), openDB(t, pgtest.NewDatabase(t)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkRead(ctx(t), "r", "ann", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.MarkRead(ctx(t), "r", "ann", 4)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("MarkRead after Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("MarkRead after Close did not return")
	}
}

// A deployment that kept read positions in JetStream KV has them moved into
// PostgreSQL once: positions already further on stay, malformed keys are
// skipped, and a second node to start takes nothing again.
func TestImportReadPositionsFromKV(t *testing.T) {
	url := pgtest.NewDatabase(t)
	bus, _ := startBus(t)
	c := ctx(t)
	kv := kvstore.Config{Logger: testlog.New()}
	seed, err := kvstore.OpenSeeder(c, bus, kv)
	if err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]uint64{}
	for r := range 30 {
		for u := range 7 {
			room, user := "room-"+strconv.Itoa(r), "user"+strconv.Itoa(u)+"@example.com"
			if err := seed.ReadMark(c, room, user, uint64(10*r+u+1)); err != nil {
				t.Fatal(err)
			}
			want[[2]string{room, user}] = uint64(10*r + u + 1)
		}
	}
	db := openDB(t, url)
	// Written in PostgreSQL already (a node that started first): further
	// on than KV for one position, behind it for another.
	s := openStore(t, db)
	for _, m := range []struct {
		room, user string
		pos        uint64
	}{{"room-0", "user0@example.com", 500}, {"room-1", "user0@example.com", 2}} {
		if _, err := s.MarkRead(c, m.room, m.user, m.pos); err != nil {
			t.Fatal(err)
		}
	}
	want[[2]string{"room-0", "user0@example.com"}] = 500
	from := func(fn func(room, user string, pos uint64) error) error {
		n, err := kvstore.EachReadMark(c, bus, kv, fn)
		if err == nil && n != 1 {
			err = fmt.Errorf("read %d buckets, want 1", n)
		}
		return err
	}
	n, skipped, done, err := db.ImportReadPositions(c, "test import", from)
	if err != nil || !done || n != len(want) || skipped != 0 {
		t.Fatalf("import: %d positions, %d skipped, done %v, %v; want %d", n, skipped, done, err, len(want))
	}
	conn := sqlConn(t, url)
	var count int
	if err := conn.QueryRow(c, "SELECT count(*) FROM read_positions").Scan(&count); err != nil || count != len(want) {
		t.Fatalf("%d rows (%v), want %d", count, err, len(want))
	}
	for k, w := range want {
		wait.Until(t, fmt.Sprintf("%v at %d", k, w), readMark(s, k[0], k[1], w))
	}
	// Done once: a later call takes nothing, whatever KV holds.
	if err := seed.ReadMark(c, "room-2", "user0@example.com", 900); err != nil {
		t.Fatal(err)
	}
	n, _, done, err = db.ImportReadPositions(c, "test import", from)
	if err != nil || done || n != 0 {
		t.Fatalf("second import: %d positions, done %v, %v; want nothing", n, done, err)
	}
	// What the table refuses is skipped, and counted.
	n, skipped, done, err = db.ImportReadPositions(c, "malformed", func(fn func(room, user string, pos uint64) error) error {
		return errors.Join(fn("no spaces", "ann", 3), fn("ok", "", 3), fn("ok", "ann", 3))
	})
	if err != nil || !done || n != 1 || skipped != 2 {
		t.Fatalf("import of malformed keys: %d positions, %d skipped, done %v, %v; want 1 and 2", n, skipped, done, err)
	}
	var _ storage.Store = s
}

// A read receipt made while PostgreSQL is unreachable waits for it and is
// stored once it is back, rather than failing (and ending the client's
// session).
func TestMarkReadWaitsOutAnOutage(t *testing.T) {
	url := pgtest.NewDatabase(t)
	proxy := tcpproxy.New(t, pgtest.ServerAddr(t, url))
	s := openStore(t, openDB(t, pgtest.WithHost(t, url, proxy.Addr())))
	c := ctx(t)
	if _, err := s.MarkRead(c, "r", "ann", 3); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	done := make(chan error, 1)
	go func() {
		pos, err := s.MarkRead(c, "r", "ann", 7)
		if err == nil && pos != 7 {
			err = fmt.Errorf("position %d, want 7", pos)
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("MarkRead returned while PostgreSQL was cut off: %v", err)
	case <-time.After(time.Second):
	}
	proxy.Restore()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("MarkRead did not return once PostgreSQL was back")
	}
	var pos int64
	if err := sqlConn(t, url).QueryRow(c, "SELECT pos FROM read_positions WHERE room_id = 'r' AND user_id = 'ann'").Scan(&pos); err != nil || pos != 7 {
		t.Fatalf("stored %d (%v), want 7", pos, err)
	}
}
