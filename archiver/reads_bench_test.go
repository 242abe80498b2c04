package archiver_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/archiver"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/testkit/latency"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/chatd/chatd/storage/postgres"
)

// The deployment BenchmarkReadsScale reads: 100,000 rooms of three
// messages, eight rooms of 400 and 500 rooms of 25, all interleaved over
// one stream, as natsbus's HistoryScale and RoomListScale lay it out.
const (
	readsRooms = 100_000
	readsPer   = 3
	hotRooms   = 8
	hotMsgs    = 400
	listRooms  = 500
	listMsgs   = 25
	reader     = "reader"
)

// readsMsg is a stored chat message of typical size.
const readsMsg = `{"roomId":"bench","userId":"alice","message":"#cb1;run;0;1;1795320202978319000;hello there","createdAt":"2026-11-22T04:03:26.851Z","unread":0}`

// submit stores a message through the committer and calls done with its
// id and the time it took.
func submit(e *archiveEnv, room string, done func(uint64, time.Duration, error)) {
	began := time.Now()
	e.commit.Submit(room, []byte(readsMsg), "", "", nil, func(id uint64, err error) { done(id, time.Since(began), err) })
}

// seedReads lays the deployment out in the log, and returns every hot
// and list room's ids.
func seedReads(b *testing.B, e *archiveEnv) map[string][]uint64 {
	b.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	ids := map[string][]uint64{}
	sem := make(chan struct{}, 512)
	total := readsRooms * readsPer
	hotEvery, listEvery := total/(hotRooms*hotMsgs), total/(listRooms*listMsgs)
	put := func(room string, keep bool) {
		sem <- struct{}{}
		wg.Add(1)
		submit(e, room, func(id uint64, _ time.Duration, err error) {
			defer wg.Done()
			<-sem
			if err != nil {
				b.Error(err)
				return
			}
			if keep {
				mu.Lock()
				ids[room] = append(ids[room], id)
				mu.Unlock()
			}
		})
	}
	n, hot, list := 0, 0, 0
	for r := range readsPer {
		for i := range readsRooms {
			put(fmt.Sprintf("room-%d", (i*7919+r)%readsRooms), false)
			n++
			if n%hotEvery == 0 && hot < hotRooms*hotMsgs {
				put(fmt.Sprintf("hot-%d", hot%hotRooms), true)
				hot++
			}
			if n%listEvery == 0 && list < listRooms*listMsgs {
				put(fmt.Sprintf("list-%d", list%listRooms), true)
				list++
			}
		}
	}
	wg.Wait()
	for _, v := range ids {
		slices.Sort(v)
	}
	return ids
}

// BenchmarkReadsScale is chat's history pages and room lists on a log of
// 100,000 rooms, read from the log alone and with the archive: PostgreSQL
// as far as its reach, the log above it. A page is 20 messages of one of
// eight rooms of 400, every other one the newest and the rest before a
// random message; beside a writer, that writer stores one message at a
// time through group commit, one in ten into those eight rooms, so that
// their newest pages cross the reach. A room list is a user's 500 rooms of
// 25 messages: all read, each with one unread message, and each with 20.
// Rooms and memberships are where each deployment keeps them: JetStream
// KV for the log alone, PostgreSQL with the archive (--postgres-url).
//
//	go test ./archiver/ -run '^$' -bench ReadsScale -benchtime 2000x
func BenchmarkReadsScale(b *testing.B) {
	e := newArchiveEnv(b)
	ctx := context.Background()
	began := time.Now()
	ids := seedReads(b, e)
	b.Logf("seeded %d messages in %s", readsRooms*readsPer+hotRooms*hotMsgs+listRooms*listMsgs, time.Since(began).Round(time.Millisecond))
	ar := e.startArchiver(openDB(b, e.url), archiver.Config{})
	began = time.Now()
	e.waitCount(readsRooms*readsPer + hotRooms*hotMsgs + listRooms*listMsgs)
	b.Logf("archived in %s", time.Since(began).Round(time.Millisecond))
	// What autovacuum does to an archive that inserts keep growing (since
	// PostgreSQL 13), done now rather than whenever it comes round: the
	// visibility map lets counts read the index alone.
	if _, err := e.sql.Exec(ctx, "VACUUM (ANALYZE) messages"); err != nil {
		b.Fatal(err)
	}
	// Each as deployed: rooms, memberships and read positions in JetStream
	// KV without PostgreSQL, in PostgreSQL with it.
	kv, err := kvstore.Open(ctx, e.bus, kvstore.Config{Logger: testlog.New()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = kv.Close() })
	pg, err := postgres.NewStore(ctx, openDB(b, e.url), 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = pg.Close() })
	stores := []storage.Store{kv, pg}
	for room := range ids {
		for _, st := range stores {
			if _, err := st.Join(ctx, room, reader, storage.RoleMember); err != nil {
				b.Fatal(err)
			}
		}
	}
	services := map[string]*chat.Service{
		"log":     chat.NewService(e.log, e.commit, e.bus, kv, chat.Config{Logger: testlog.New()}),
		"archive": chat.NewService(e.log, e.commit, e.bus, pg, chat.Config{Archive: ar.Archiver, Logger: testlog.New()}),
	}
	for _, s := range services {
		b.Cleanup(s.Close)
	}
	page := func(s *chat.Service, i int, lat *latency.Recorder) {
		room := fmt.Sprintf("hot-%d", i%hotRooms)
		before := uint64(0)
		if i%2 == 1 {
			before = ids[room][(i*131)%hotMsgs]
		}
		t0 := time.Now()
		msgs, err := s.History(ctx, reader, room, before, 20)
		lat.Add(time.Since(t0))
		if err != nil || len(msgs) == 0 && before != ids[room][0] {
			b.Fatalf("page of %s before %d: %d messages, %v", room, before, len(msgs), err)
		}
	}
	writer := func(stop <-chan struct{}, lat *latency.Recorder) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			room := fmt.Sprintf("room-%d", (i*104729)%readsRooms)
			if i%10 == 0 {
				room = fmt.Sprintf("hot-%d", i/10%hotRooms)
			}
			done := make(chan error, 1)
			submit(e, room, func(_ uint64, d time.Duration, err error) {
				lat.Add(d)
				done <- err
			})
			if err := <-done; err != nil {
				b.Error(err)
				return
			}
		}
	}
	for _, mode := range []string{"log", "archive"} {
		s := services[mode]
		b.Run("page/"+mode, func(b *testing.B) {
			latency.Loop(b, "page", func(i int, r *latency.Recorder) { page(s, i, r) }, "", nil)
		})
		b.Run("page-beside-writer/"+mode, func(b *testing.B) {
			latency.Loop(b, "page", func(i int, r *latency.Recorder) { page(s, i, r) }, "publish", writer)
		})
	}
	b.Run("publish-alone", func(b *testing.B) { latency.Loop(b, "", nil, "publish", writer) })
	for _, c := range []struct {
		name   string
		unread int
	}{{"20-unread", 20}, {"one-unread", 1}, {"all-read", 0}} { // read positions only move on
		for room, v := range ids {
			if len(room) > 5 && room[:5] == "list-" {
				for _, st := range stores {
					if _, err := st.MarkRead(ctx, room, reader, v[len(v)-1-c.unread]); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		for _, mode := range []string{"log", "archive"} {
			s := services[mode]
			b.Run("rooms/"+c.name+"/"+mode, func(b *testing.B) {
				var lat latency.Recorder
				for b.Loop() {
					t0 := time.Now()
					rooms, err := s.UserRooms(ctx, reader)
					lat.Add(time.Since(t0))
					if err != nil {
						b.Fatal(err)
					}
					for _, r := range rooms {
						if r.ID[:5] == "list-" && r.UnreadCount != uint64(c.unread) {
							b.Fatalf("room %s: %d unread, want %d", r.ID, r.UnreadCount, c.unread)
						}
					}
				}
				lat.Report(b, "list")
			})
		}
	}
}

// waitCount waits until the archive holds n messages.
func (e *archiveEnv) waitCount(n int) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var got int
		if err := e.sql.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&got); err != nil {
			e.t.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("archive holds %d of %d messages", got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
