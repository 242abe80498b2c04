package kvstore

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
)

// BenchmarkUserRooms: a room list's store part for a user in 500 rooms,
// among 100,000 other memberships with their read positions, and its
// three reads alone (USER_ROOMS, the rooms' records, the read positions).
func BenchmarkUserRooms(b *testing.B) {
	ctx := context.Background()
	bus := startBus(b)
	seed, err := OpenSeeder(ctx, bus, Config{})
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(ctx, bus, Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	const wide, others = 500, 100_000
	var rooms []string
	for r := range wide {
		room := "w" + strconv.Itoa(r)
		rooms = append(rooms, room)
		if err := seed.Member(ctx, room, "wide", storage.RoleMember, time.Now()); err != nil {
			b.Fatal(err)
		}
		if err := seed.ReadMark(ctx, room, "wide", 1); err != nil {
			b.Fatal(err)
		}
	}
	for i := range others {
		room, user := "o"+strconv.Itoa(i/10), "u"+strconv.Itoa(i)
		if err := seed.Member(ctx, room, user, storage.RoleMember, time.Now()); err != nil {
			b.Fatal(err)
		}
		if err := seed.ReadMark(ctx, room, user, 1); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.userRooms.Indexed(ctx, natsbus.UserRoomKey("u"+strconv.Itoa(others-1), "o"+strconv.Itoa((others-1)/10)), true); err != nil {
		b.Fatal(err)
	}
	b.Run("whole", func(b *testing.B) {
		for b.Loop() {
			if rs, err := s.UserRooms(ctx, "wide"); err != nil || len(rs) != wide {
				b.Fatalf("%d rooms, %v", len(rs), err)
			}
		}
	})
	b.Run("index", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.userRooms.Under(ctx, "wide"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("records", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.rooms.GetMany(ctx, rooms); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reads", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.marks.Of(ctx, "wide", rooms); err != nil {
				b.Fatal(err)
			}
		}
	})
}
