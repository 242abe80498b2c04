package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
)

// Seeder writes memberships and read positions straight into the
// buckets, as a backend may (docs/protocol.md), in the store's own
// encoding, without the working set a Store keeps: for tools that build a
// large deployment (cmd/chatscale).
type Seeder struct {
	members *natsbus.Bucket
	reads   *ReadMarks
}

// OpenSeeder opens the buckets as Open does.
func OpenSeeder(ctx context.Context, bus *natsbus.Bus, cfg Config) (*Seeder, error) {
	s := &Seeder{}
	var err error
	if s.members, err = bus.OpenBucket(ctx, MembersBucket, membersDescription, cfg.Replicas); err != nil {
		return nil, err
	}
	if s.reads, err = OpenReadMarks(ctx, bus, cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Member adds user to room; one already there is left as it is.
func (s *Seeder) Member(ctx context.Context, room, user string, role storage.Role, at time.Time) error {
	val, err := json.Marshal(memberValue{Role: role, JoinedAt: at.UTC()})
	if err != nil {
		return fmt.Errorf("encode membership: %w", err)
	}
	if _, err := s.members.Create(ctx, natsbus.RoomUserKey(room, user), val); err != nil && !errors.Is(err, natsbus.ErrKeyExists) {
		return fmt.Errorf("add member %s to %s: %w", user, room, err)
	}
	return nil
}

// ReadMark sets user's read position in room where it has none.
func (s *Seeder) ReadMark(ctx context.Context, room, user string, id uint64) error {
	val := []byte(strconv.FormatUint(id, 10))
	if _, err := s.reads.bucket(room).Create(ctx, natsbus.RoomUserKey(room, user), val); err != nil && !errors.Is(err, natsbus.ErrKeyExists) {
		return fmt.Errorf("read position %s/%s: %w", room, user, err)
	}
	return nil
}
