// Package archiver copies every room message from the message log
// (JetStream, through natsbus) into the PostgreSQL archive
// (storage/postgres), where history beyond the log's retention and search
// read it.
package archiver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/postgres"
	"golang.org/x/sync/singleflight"
)

// Consumer is the durable JetStream consumer the archivers of every node
// share: each message goes to one of them, and is acknowledged only once
// it is committed in PostgreSQL.
const Consumer = "chatd-archive"

// Config tunes an Archiver; zero values take the defaults.
type Config struct {
	// Batch is the most messages written in one INSERT (default 500).
	Batch int
	// FetchWait is how long a fetch waits to fill a batch (default 250ms):
	// the archive trails the log by about this much when it is quiet.
	FetchWait time.Duration
	// AckWait is how long a batch a node took may stay unacknowledged
	// before JetStream hands it out again (default 30s): the time to
	// recover a batch whose node died. A node still retrying keeps it.
	AckWait time.Duration
	// LagEvery is how often the lag is measured (default 5s).
	LagEvery time.Duration
	// LagWarn is the lag past which a warning is logged, once a minute
	// while it lasts (default 30s).
	LagWarn time.Duration
	Logger  *slog.Logger
}

// Archiver copies every room message into the archive. A message is
// acknowledged only after the INSERT that holds it has committed, and its
// room and id (the sequence of its partition's stream) are the primary
// key, so a message redelivered after a crash, or handled by two nodes, is
// stored once. While PostgreSQL is down the archiver holds its batch and
// retries; the log keeps the rest, and chat goes on.
type Archiver struct {
	archive *postgres.Archive
	cons    *natsbus.Consumer
	cfg     Config
	log     *slog.Logger

	// reach is the consumer's ack floors as last asked (*reachSnap); reaches
	// makes one ask for all callers at a time.
	reach   atomic.Pointer[reachSnap]
	reaches singleflight.Group

	archived atomic.Uint64 // rows this node inserted
	failures atomic.Uint64 // failed INSERTs
	pending  atomic.Uint64 // messages not yet archived, cluster-wide
	lag      atomic.Int64  // age of the oldest of them, in nanoseconds
}

// New creates or updates the durable consumer on msgs; Run does the work.
func New(ctx context.Context, archive *postgres.Archive, msgs *natsbus.MessageLog, cfg Config) (*Archiver, error) {
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.FetchWait <= 0 {
		cfg.FetchWait = 250 * time.Millisecond
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.LagEvery <= 0 {
		cfg.LagEvery = 5 * time.Second
	}
	if cfg.LagWarn <= 0 {
		cfg.LagWarn = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cons, err := msgs.Consumer(ctx, natsbus.ConsumerConfig{
		Name:        Consumer,
		Description: "chatd: copies every room message into PostgreSQL",
		AckWait:     cfg.AckWait,
		// Each node holds one batch at a time; room for many nodes.
		MaxAckPending: 16 * cfg.Batch,
	})
	if err != nil {
		return nil, err
	}
	a := &Archiver{archive: archive, cons: cons, cfg: cfg, log: cfg.Logger}
	if err := a.verify(ctx); err != nil {
		return nil, fmt.Errorf("archive consumer: %w", err)
	}
	return a, nil
}

// The Archiver is the archive as chat reads it (chat.Archive): the rows
// in PostgreSQL, and how far they reach without a gap. Chat reads what the
// archive holds from there, and only the rest from the log.
var _ chat.Archive = (*Archiver)(nil)

// Before returns up to limit of the room's archived messages with ids
// below before (0: the newest), oldest first.
func (a *Archiver) Before(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error) {
	return a.archive.Before(ctx, room, before, limit)
}

// Between returns up to limit of the room's archived messages with ids
// above after and below below, oldest first.
func (a *Archiver) Between(ctx context.Context, room string, after, below uint64, limit int) ([]storage.Message, error) {
	return a.archive.Between(ctx, room, after, below, limit)
}

// Search returns up to limit of the room's archived messages matching
// query, newest first, with ids below before (0: any).
func (a *Archiver) Search(ctx context.Context, room, query string, before uint64, limit int) ([]storage.Message, error) {
	return a.archive.Search(ctx, room, query, before, limit)
}

// Count returns, for each span, how many of its room's archived messages
// have ids in it, counting no further than limit.
func (a *Archiver) Count(ctx context.Context, spans []storage.RoomSpan, limit int) ([]int, error) {
	return a.archive.Count(ctx, spans, limit)
}

// reachFresh is how long an answer of where the consumer stands is used
// before it is asked again. Older floors are still right, only lower: a
// read then takes more from the log.
const reachFresh = 100 * time.Millisecond

// reachWait bounds an ask of the consumer's state: a read waits for it.
const reachWait = 2 * time.Second

type reachSnap struct {
	at     time.Time
	states natsbus.ConsumerStates
}

// Reach returns, for each room, the id up to which the archive holds every
// message of the room: a message is acknowledged only once committed here,
// so the consumer's ack floor is such an id (for the database New found
// the consumer's work in: verify). It trails the archive by up to
// reachFresh; messages above it may be archived too.
func (a *Archiver) Reach(ctx context.Context, rooms []string) ([]uint64, error) {
	snap := a.reach.Load()
	if snap == nil || time.Since(snap.at) >= reachFresh {
		ch := a.reaches.DoChan("", func() (any, error) {
			// The ask outlives a caller that gives up: others wait on it.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reachWait)
			defer cancel()
			s := &reachSnap{at: time.Now()}
			var err error
			if s.states, err = a.cons.States(rctx); err != nil {
				old := a.reach.Load()
				if old == nil {
					return nil, err
				}
				// Floors only rise: the last answer still holds. Ask again
				// after reachFresh, not on every read meanwhile.
				a.log.Debug("archive: consumer state not read; the last one serves", "err", err)
				s.states = old.states
			}
			a.reach.Store(s)
			return s, nil
		})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-ch:
			if r.Err != nil {
				return nil, fmt.Errorf("archive reach: %w", r.Err)
			}
			snap = r.Val.(*reachSnap)
		}
	}
	out := make([]uint64, len(rooms))
	for i, room := range rooms {
		out[i] = snap.states.Of(room).AckFloor
	}
	return out, nil
}

// verify makes sure the archive holds what each partition's consumer has
// acknowledged, as far as the log can show it: the message at the ack
// floor. A database that lacks it was not filled by this consumer (a new
// one, one restored from a backup older than the floor, another
// deployment's): the consumer is made again, to archive every message the
// log still holds, so that its floor speaks for this database.
func (a *Archiver) verify(ctx context.Context) error {
	states, err := a.cons.States(ctx)
	if err != nil {
		return err
	}
	for _, st := range states.All() {
		m, err := a.cons.FloorMessage(ctx, st)
		if err != nil {
			return err
		}
		if m == nil {
			continue // nothing acknowledged, or the log no longer holds it
		}
		has, err := a.archive.Has(ctx, m.Room, m.ID)
		if err != nil {
			return err
		}
		if has {
			continue
		}
		a.log.Warn("archive: the database lacks messages the log's archive consumer acknowledged (a new or restored database?); archiving every message the log holds again",
			"stream", st.Stream, "room", m.Room, "id", m.ID)
		if err := a.cons.Remake(ctx, st.Stream); err != nil {
			return err
		}
	}
	return nil
}

// Archived is how many messages this node has written to the archive.
func (a *Archiver) Archived() uint64 { return a.archived.Load() }

// Failures is how many archive writes failed (each is retried).
func (a *Archiver) Failures() uint64 { return a.failures.Load() }

// Lag is the archive's backlog, as last measured: how many messages of the
// log are not archived yet (by any node), and the age of the oldest.
func (a *Archiver) Lag() (pending uint64, age time.Duration) {
	return a.pending.Load(), time.Duration(a.lag.Load())
}

// Run archives until ctx ends. A batch not yet committed then is handed
// back to JetStream for another node, or the next start.
func (a *Archiver) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { a.watchLag(ctx) })
	defer wg.Wait()
	wait := 100 * time.Millisecond
	for ctx.Err() == nil {
		msgs, err := a.cons.Fetch(ctx, a.cfg.Batch, a.cfg.FetchWait)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			// Some partitions failed: what the others gave is archived
			// below, and the failed ones' consumers made again if gone.
			a.log.Warn("archive: fetch from JetStream failed; retrying", "err", err)
			if len(msgs) == 0 {
				sleep(ctx, wait)
				wait = min(2*wait, 5*time.Second)
			}
			if err := a.cons.Ensure(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("archive: consumer", "err", err)
			}
		default:
			wait = 100 * time.Millisecond
		}
		if len(msgs) == 0 {
			continue
		}
		if err := a.store(ctx, msgs); err != nil {
			for _, m := range msgs {
				m.Nak() // redelivered at once rather than after AckWait
			}
			return
		}
		for _, m := range msgs {
			m.Ack()
		}
	}
}

// row reads a log message. The body is chat's JSON (docs/protocol.md); one
// that is not is archived as it is, with empty text.
func row(d natsbus.Delivery) postgres.Row {
	ar := chat.DecodeArchived(d.Data)
	created := ar.CreatedAt
	if created.IsZero() {
		created = d.Time
	}
	return postgres.Row{ID: d.ID, Room: d.Room, User: ar.UserID, Text: ar.Text, CreatedAt: created, StoredAt: d.Time, Data: d.Data}
}

// store inserts the batch, retrying until it commits or ctx ends. While it
// retries it keeps the batch its own (InProgress), so that JetStream does
// not hand it to another node only for that node to wait too.
func (a *Archiver) store(ctx context.Context, msgs []natsbus.Delivery) error {
	rows := make([]postgres.Row, len(msgs))
	for i, m := range msgs {
		rows[i] = row(m)
	}
	wait := 100 * time.Millisecond
	held := time.Now()
	for attempt := 1; ; attempt++ {
		n, err := a.archive.Insert(ctx, rows)
		if err == nil {
			a.archived.Add(uint64(n))
			if attempt > 1 {
				a.log.Info("archive: writing again", "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.failures.Add(1)
		if attempt == 1 {
			a.log.Warn("archive: write to PostgreSQL failed; retrying until it succeeds (chat goes on)",
				"messages", len(rows), "err", err)
		} else {
			a.log.Debug("archive: write failed again", "attempt", attempt, "err", err)
		}
		sleep(ctx, wait)
		wait = min(2*wait, 5*time.Second)
		if time.Since(held) > a.cfg.AckWait/3 {
			for _, m := range msgs {
				m.InProgress()
			}
			held = time.Now()
		}
	}
}

// watchLag measures the backlog every LagEvery, and logs while it is large.
func (a *Archiver) watchLag(ctx context.Context) {
	t := time.NewTicker(a.cfg.LagEvery)
	defer t.Stop()
	var warned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		pending, oldest, err := a.cons.Backlog(mctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Debug("archive: lag not measured", "err", err)
			}
			continue
		}
		var age time.Duration
		if !oldest.IsZero() {
			age = time.Since(oldest)
		}
		a.pending.Store(pending)
		a.lag.Store(int64(age))
		switch {
		case age >= a.cfg.LagWarn && time.Since(warned) >= time.Minute:
			a.log.Warn("archive behind the log", "pending", pending, "lag", age.Round(time.Second))
			warned = time.Now()
		case age < a.cfg.LagWarn && !warned.IsZero():
			a.log.Info("archive caught up", "pending", pending, "lag", age.Round(time.Millisecond))
			warned = time.Time{}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
