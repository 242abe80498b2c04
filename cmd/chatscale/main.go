// Command chatscale builds a large deployment in chatd's store, as a
// backend may write it (docs/protocol.md): users x rooms each, every
// membership with a read position, plus one user in many rooms, so that
// scripts/bench scale can measure what a node pays for them at start, in
// memory and on a room list. It writes through a NATS client port (chatd's
// --nats-listen, or an external NATS), or to PostgreSQL with
// --postgres-url (a database chatd has migrated), and never deletes
// anything.
//
//	chatscale --nats-url nats://127.0.0.1:4333 --users 100000 --rooms-per-user 20
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/chatd/chatd/storage/postgres"
	"golang.org/x/sync/errgroup"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(runMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// plan is the deployment to build. Room r ("s<r>") holds RoomSize
// consecutive users of one of each user's RoomsPerUser slots, so every
// user is in RoomsPerUser rooms and every room has RoomSize members; the
// user "wide" is also in the first WideRooms rooms.
type plan struct {
	Users, RoomsPerUser, RoomSize, WideRooms int
}

func (p plan) rooms() int { return (p.Users*p.RoomsPerUser + p.RoomSize - 1) / p.RoomSize }

// room is the room of user u's k-th slot.
func (p plan) room(u, k int) string { return "s" + strconv.Itoa((k*p.Users+u)/p.RoomSize) }

func user(u int) string { return "u" + strconv.Itoa(u) }

// wideUser is the user in WideRooms rooms, whose room list scale measures.
const wideUser = "wide"

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chatscale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", "", "NATS client `URL` of the deployment (chatd's --nats-listen)")
	prefix := fs.String("nats-prefix", natsbus.DefaultPrefix, "the deployment's --nats-prefix")
	parts := fs.Int("partitions", 1, "the deployment's --partitions: read positions in NATS are in its partitions' buckets")
	var p plan
	fs.IntVar(&p.Users, "users", 100000, "users")
	fs.IntVar(&p.RoomsPerUser, "rooms-per-user", 20, "rooms each user is in")
	fs.IntVar(&p.RoomSize, "room-size", 10, "members per room")
	fs.IntVar(&p.WideRooms, "wide-rooms", 500, "rooms the user \"wide\" is in as well")
	workers := fs.Int("concurrency", 64, "writes in flight")
	pgURL := fs.String("postgres-url", "", "the deployment's --postgres-url: memberships and read positions go there; the role must be allowed to skip triggers (a superuser)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case *url == "" && *pgURL == "":
		_, _ = fmt.Fprintln(stderr, "chatscale: --nats-url or --postgres-url is required")
		return 2
	case *parts < 1 || *parts > natsbus.MaxPartitions:
		_, _ = fmt.Fprintf(stderr, "chatscale: --partitions %d: 1 to %d\n", *parts, natsbus.MaxPartitions)
		return 2
	case p.Users < 1 || p.RoomsPerUser < 1 || p.RoomSize < 1 || p.WideRooms < 0 || *workers < 1:
		_, _ = fmt.Fprintln(stderr, "chatscale: --users, --rooms-per-user, --room-size and --concurrency must be positive, --wide-rooms not negative")
		return 2
	case p.WideRooms > p.rooms():
		_, _ = fmt.Fprintf(stderr, "chatscale: --wide-rooms %d: the plan has only %d rooms\n", p.WideRooms, p.rooms())
		return 2
	}
	start := time.Now()
	n, err := seed(ctx, *url, *prefix, *parts, *pgURL, p, *workers)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatscale:", err)
		return 1
	}
	d := time.Since(start)
	_, _ = fmt.Fprintf(stdout, "chatscale: %d users, %d rooms, %d memberships and as many read positions written in %s (%.0f writes/s)\n",
		p.Users+1, p.rooms(), n, d.Round(time.Millisecond), float64(2*n)/d.Seconds())
	return 0
}

// seed writes the plan's memberships and read positions and returns how
// many memberships it wrote: to PostgreSQL where pgURL is set, else to
// NATS.
func seed(ctx context.Context, url, prefix string, parts int, pgURL string, p plan, workers int) (int, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var s *kvstore.Seeder
	var db *postgres.DB
	if pgURL != "" {
		var err error
		if db, err = postgres.Open(ctx, postgres.Options{URL: pgURL, Logger: log}); err != nil {
			return 0, err
		}
		defer db.Close()
	} else {
		bus, err := natsbus.Start(ctx, natsbus.Options{URL: url, Prefix: prefix, Partitions: parts, ClientName: "chatscale", Logger: log})
		if err != nil {
			return 0, err
		}
		defer func() { _ = bus.Close(context.Background()) }()
		if s, err = kvstore.OpenSeeder(ctx, bus, kvstore.Config{}); err != nil {
			return 0, err
		}
	}
	at := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	var rooms, users []string
	flush := func() {
		rs, us := rooms, users
		rooms, users = nil, nil
		g.Go(func() error { return db.SeedMembers(gctx, rs, us, storage.RoleMember, at, 1) })
	}
	put := func(room, u string) {
		if db != nil {
			if rooms, users = append(rooms, room), append(users, u); len(rooms) == seedChunk {
				flush()
			}
			return
		}
		g.Go(func() error {
			if err := s.Member(gctx, room, u, storage.RoleMember, at); err != nil {
				return err
			}
			return s.ReadMark(gctx, room, u, 1)
		})
	}
	for u := range p.Users {
		for k := range p.RoomsPerUser {
			put(p.room(u, k), user(u))
		}
	}
	for r := range p.WideRooms {
		put("s"+strconv.Itoa(r), wideUser)
	}
	if len(rooms) > 0 {
		flush()
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return p.Users*p.RoomsPerUser + p.WideRooms, nil
}

// seedChunk is how many memberships one PostgreSQL statement adds.
const seedChunk = 10_000
