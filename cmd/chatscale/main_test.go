package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/chatd/chatd/storage/postgres"
)

// TestSeed: the deployment chatscale writes is the one it says, as chatd's
// own store reads it back: every user in its rooms, every room with its
// members, the wide user in the first rooms, a read position for each;
// and a second run changes nothing. With partitions, the read positions
// are in the buckets of their rooms' partitions, where chatd reads them;
// with PostgreSQL, memberships and read positions are in its tables, and
// NATS is not needed.
func TestSeed(t *testing.T) {
	for _, parts := range []int{1, 3} {
		t.Run("partitions="+strconv.Itoa(parts), func(t *testing.T) { testSeed(t, parts, false) })
	}
	t.Run("postgres", func(t *testing.T) {
		testSeed(t, 1, true)
	})
}

func testSeed(t *testing.T, parts int, pg bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	listen := "127.0.0.1:" + strconv.Itoa(port.Free(t))
	bus, err := natsbus.Start(ctx, natsbus.Options{DataDir: t.TempDir(), ClientListen: listen, Partitions: parts,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bus.Close(context.Background()) }()
	p := plan{Users: 30, RoomsPerUser: 4, RoomSize: 5, WideRooms: 7}
	args := []string{"--nats-url", "nats://" + listen, "--partitions", strconv.Itoa(parts), "--users", "30", "--rooms-per-user", "4", "--room-size", "5", "--wide-rooms", "7", "--concurrency", "8"}
	var db *postgres.DB
	if pg {
		url := pgtest.NewDatabase(t)
		if db, err = postgres.Open(ctx, postgres.Options{URL: url, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
			t.Fatal(err) // and migrated, as chatd does
		}
		defer db.Close()
		args = append(args[2:], "--postgres-url", url) // no --nats-url
	}
	for run := range 2 {
		var out, errs strings.Builder
		if code := runMain(ctx, args, &out, &errs); code != 0 {
			t.Fatalf("run %d: exit %d: %s", run, code, errs.String())
		}
		if !strings.Contains(out.String(), "31 users, 24 rooms, 127 memberships") {
			t.Fatalf("run %d says %q", run, out.String())
		}
	}

	var store storage.Store
	if pg {
		if store, err = postgres.NewStore(ctx, db, 0); err != nil {
			t.Fatal(err)
		}
	} else if store, err = kvstore.Open(ctx, bus, kvstore.Config{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = store.Close() }()
	for u := range p.Users {
		rooms, err := store.UserRooms(ctx, user(u))
		if err != nil || len(rooms) != p.RoomsPerUser {
			t.Fatalf("%s is in %v (%v), want %d rooms", user(u), rooms, err, p.RoomsPerUser)
		}
		for _, r := range rooms {
			if r.Read != 1 {
				t.Fatalf("%s's read position in %s: %d", user(u), r.ID, r.Read)
			}
			if m, err := store.ReadMark(ctx, r.ID, user(u)); err != nil || m != 1 {
				t.Fatalf("%s's read position in %s, read alone: %d %v", user(u), r.ID, m, err)
			}
		}
	}
	for r := range p.rooms() {
		room := "s" + strconv.Itoa(r)
		want := p.RoomSize
		if r < p.WideRooms {
			want++
		}
		if ms, err := store.Members(ctx, room); err != nil || len(ms) != want {
			t.Fatalf("%s has %d members (%v), want %d", room, len(ms), err, want)
		}
	}
	if rooms, err := store.UserRooms(ctx, wideUser); err != nil || len(rooms) != p.WideRooms {
		t.Fatalf("the wide user is in %v (%v)", rooms, err)
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--nats-url", "nats://127.0.0.1:1", "--users", "0"},
		{"--nats-url", "nats://127.0.0.1:1", "--users", "10", "--room-size", "10", "--rooms-per-user", "1", "--wide-rooms", "2"},
	} {
		var out, errs strings.Builder
		if code := runMain(context.Background(), args, &out, &errs); code != 2 || errs.Len() == 0 {
			t.Errorf("%v: exit %d, %q", args, code, errs.String())
		}
	}
}
