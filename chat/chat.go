// Package chat is chatd's domain: rooms and their members, messages and
// their history, replay after a reconnect, read positions and unread
// counts, user queues. It knows neither STOMP nor NATS: it works through
// the ports it defines (ports.go), and the adapters (stompapi, httpapi)
// turn protocols into calls of Service.
//
// Where things are: rooms.go (rooms and membership rules), post.go
// (storing a message), history.go (history pages and search), reads.go
// (read positions), subscribe.go (subscriptions and their end when a
// member is removed), feed.go, replay.go and replayshare.go (a room's
// live messages and the catch-up before them), topics.go (user queues
// and read events), registry.go (one feed or topic per key while it has
// subscribers).
package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/storage"
	"golang.org/x/sync/semaphore"
)

// Config tunes the chat service.
type Config struct {
	// AutoJoin makes a user a member of any room they send or subscribe to
	// (dev mode). Otherwise only members may use a room.
	AutoJoin bool
	// ProbeDelay is how long after a room's last live message a node checks
	// that it missed nothing at the end of the room (see roomFeed).
	ProbeDelay time.Duration
	// FlushWindow is how long a busy room's feed gathers messages before
	// it flushes them to its subscribers, so that each gets them in one
	// write; a room that has flushed nothing for as long flushes at once,
	// so quiet rooms wait for nothing (0: every burst at once).
	FlushWindow time.Duration
	Logger      *slog.Logger
	// Metrics is told of stored, delivered and dropped messages and of
	// replays; nil: nothing is.
	Metrics Metrics
	// Archive, if set, holds every message, also those the log has
	// dropped: history and replays read past the log's oldest message
	// from it, and rooms can be searched.
	Archive Archive
	// Fields names the JSON fields of messages (zero: chatd's own);
	// KeepClientFields keeps a SEND body's other fields with the message.
	Fields           Fields
	KeepClientFields bool
	// StoreReads bounds the reads of the message log and archive that
	// replays and history requests make at once on this node (0: 32).
	// More wait their turn, first come first served, without a timeout:
	// a storm of reconnecting clients makes replays slower, never failed,
	// and leaves the store free for writes.
	StoreReads int
	// ReplayShare bounds the bytes of history that the replays running on
	// this node hold for the other replays of their rooms (replayShare;
	// 0: 64 MiB, negative: none), and for how long after the last of a
	// room's replays ended (0: 10 s).
	ReplayShare       int64
	ReplayShareLinger time.Duration
}

// History page sizes.
const (
	DefaultLogLimit = 20
	MaxLogLimit     = 100
)

// Service is the chat domain, one per node.
type Service struct {
	msgs   MessageLog
	commit Committer
	bus    Bus
	store  Store
	cfg    Config
	log    *slog.Logger

	// reads admits store reads (Config.StoreReads).
	reads *semaphore.Weighted
	// replayHeld is what the rooms' replay shares hold (Config.ReplayShare).
	replayHeld atomic.Int64

	feeds  registry[*roomFeed]
	topics registry[*topic]
	// members holds the subscriptions to rooms and their read events by
	// member, so that a removed member's end at once.
	mu      sync.Mutex
	members map[roomUser]map[Subscriber]struct{}
	wg      sync.WaitGroup
}

type roomUser struct{ room, user string }

// NewService wires the domain to its ports.
func NewService(msgs MessageLog, commit Committer, bus Bus, store Store, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ProbeDelay <= 0 {
		cfg.ProbeDelay = time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = nopMetrics{}
	}
	cfg.Fields = *cfg.Fields.orDefault()
	if cfg.StoreReads <= 0 {
		cfg.StoreReads = defaultStoreReads
	}
	if cfg.ReplayShare == 0 {
		cfg.ReplayShare = defaultReplayShare
	}
	if cfg.ReplayShareLinger <= 0 {
		cfg.ReplayShareLinger = defaultReplayShareLinger
	}
	s := &Service{
		msgs: msgs, commit: commit, bus: bus, store: store, cfg: cfg, log: cfg.Logger,
		reads:   semaphore.NewWeighted(int64(cfg.StoreReads)),
		members: map[roomUser]map[Subscriber]struct{}{},
	}
	if n, ok := store.(storage.LeaveNotifier); ok {
		n.OnLeave(s.memberLeft)
	}
	return s
}

// defaultStoreReads is Config.StoreReads' default: enough to keep the
// store busy, few enough that writes still get through.
const defaultStoreReads = 32

// defaultReplayShare is Config.ReplayShare's default: a storm's replays
// of a few rooms' recent history, for a node's memory a little.
const defaultReplayShare = 64 << 20

// defaultReplayShareLinger is Config.ReplayShareLinger's default: long
// enough for a room's clients to come back, each after its own back-off.
const defaultReplayShareLinger = 10 * time.Second

// admitRead waits for a turn to read the store (Config.StoreReads) and
// returns its release; it fails only when ctx ends.
func (s *Service) admitRead(ctx context.Context) (release func(), err error) {
	if err := s.reads.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("waiting for a turn to read the store: %w", err)
	}
	return func() { s.reads.Release(1) }, nil
}

// authorize lets user use room: in dev mode by joining it (creating it,
// with user as owner, if it is new), otherwise only if a member.
func (s *Service) authorize(ctx context.Context, room, user string) error {
	ok, err := s.store.IsMember(ctx, room, user)
	if err != nil {
		return fmt.Errorf("membership of %s: %w", room, err)
	}
	if ok {
		return nil
	}
	if !s.cfg.AutoJoin {
		return notMember(room)
	}
	if err := checkUserID(user); err != nil {
		return err
	}
	err = s.store.CreateRoom(ctx, storage.Room{ID: room, Name: room, CreatedBy: user, CreatedAt: time.Now()})
	if errors.Is(err, storage.ErrExists) {
		_, err = s.store.Join(ctx, room, user, storage.RoleMember)
	}
	if err != nil {
		return fmt.Errorf("join %s: %w", room, err)
	}
	return nil
}

// async runs fn on a goroutine that Close waits for.
func (s *Service) async(fn func()) {
	s.wg.Go(fn)
}

// Close waits for work in flight (replays, probes' reads) and stops every
// feed and topic. Sessions must be ended first.
func (s *Service) Close() {
	s.wg.Wait()
	for _, f := range s.feeds.drain() {
		f.stop()
	}
	for _, t := range s.topics.drain() {
		t.stop()
	}
}
