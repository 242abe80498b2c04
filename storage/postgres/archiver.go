package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/chatd/chatd/natsbus"
	"github.com/nats-io/nats.go/jetstream"
)

// ArchiveConsumer is the durable JetStream consumer the archivers of every
// node share: each message goes to one of them, and is acknowledged only
// once it is committed in PostgreSQL.
const ArchiveConsumer = "chatd-archive"

// ArchiverConfig tunes an Archiver; zero values take the defaults.
type ArchiverConfig struct {
	// Batch is the most messages written in one INSERT (default 500).
	Batch int
	// FetchWait is how long a fetch waits to fill a batch (default 250ms):
	// the archive trails the stream by about this much when it is quiet.
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

// Archiver copies every room message from the stream into the messages
// table. A message is acknowledged only after the INSERT that holds it
// has committed, and the id (the stream sequence) is the primary key, so
// a message redelivered after a crash, or handled by two nodes, is stored
// once. While PostgreSQL is down the archiver holds its batch and retries;
// the stream keeps the rest, and chat goes on.
type Archiver struct {
	db   *DB
	js   jetstream.JetStream
	cfg  ArchiverConfig
	log  *slog.Logger
	cons jetstream.Consumer // Run's alone, once it runs

	archived atomic.Uint64 // rows this node inserted
	failures atomic.Uint64 // failed INSERTs
	pending  atomic.Uint64 // messages not yet archived, cluster-wide
	lag      atomic.Int64  // age of the oldest of them, in nanoseconds
}

// NewArchiver creates or updates the durable consumer; Run does the work.
func NewArchiver(ctx context.Context, db *DB, js jetstream.JetStream, cfg ArchiverConfig) (*Archiver, error) {
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
		cfg.Logger = db.log
	}
	a := &Archiver{db: db, js: js, cfg: cfg, log: cfg.Logger}
	if err := a.consumer(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// consumer creates or updates the durable consumer. Every node asks with
// the same settings, so whichever asks first makes it.
func (a *Archiver) consumer(ctx context.Context) error {
	return natsbus.Retry(ctx, a.log, "archive consumer", func(ctx context.Context) error {
		c, err := a.js.CreateOrUpdateConsumer(ctx, natsbus.MessagesStream, jetstream.ConsumerConfig{
			Durable:       ArchiveConsumer,
			Description:   "chatd: copies every room message into PostgreSQL",
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       a.cfg.AckWait,
			MaxDeliver:    -1,
			// Each node holds one batch at a time; room for many nodes.
			MaxAckPending: 16 * a.cfg.Batch,
		})
		if err == nil {
			a.cons = c
		}
		return err
	})
}

// Archived is how many messages this node has written to the archive.
func (a *Archiver) Archived() uint64 { return a.archived.Load() }

// Failures is how many archive writes failed (each is retried).
func (a *Archiver) Failures() uint64 { return a.failures.Load() }

// Lag is the archive's backlog, as last measured: how many messages of the
// stream are not archived yet (by any node), and the age of the oldest.
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
		msgs, err := a.fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("archive: fetch from JetStream failed; retrying", "err", err)
			sleep(ctx, wait)
			wait = min(2*wait, 5*time.Second)
			// The consumer may be gone (the stream was rebuilt, or someone
			// deleted it): making it again is harmless if it is not.
			if err := a.consumer(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("archive: consumer", "err", err)
			}
			continue
		}
		wait = 100 * time.Millisecond
		if len(msgs) == 0 {
			continue
		}
		if err := a.store(ctx, msgs); err != nil {
			for _, m := range msgs {
				_ = m.Nak() // best effort: redelivered at once rather than after AckWait
			}
			return
		}
		for _, m := range msgs {
			// Fire and forget: a lost ack means one redelivery, which the
			// primary key absorbs.
			_ = m.Ack()
		}
	}
}

// fetch takes up to a batch of messages, waiting at most FetchWait.
func (a *Archiver) fetch(ctx context.Context) ([]jetstream.Msg, error) {
	fctx, cancel := context.WithTimeout(ctx, a.cfg.FetchWait)
	defer cancel()
	batch, err := a.cons.Fetch(a.cfg.Batch, jetstream.FetchContext(fctx))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && len(msgs) == 0 && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, jetstream.ErrNoMessages) {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return msgs, nil
}

// archiveRow is one row of the messages table.
type archiveRow struct {
	id                  int64
	room, user, text    string
	createdAt, storedAt time.Time
	data                []byte
}

// toRow reads a stream message. The body is chatd's JSON (docs/protocol.md);
// one that is not is archived as it is, with empty text.
func toRow(m jetstream.Msg) (archiveRow, error) {
	md, err := m.Metadata()
	if err != nil {
		return archiveRow{}, fmt.Errorf("message metadata: %w", err)
	}
	room, _ := natsbus.RoomFromSubject(m.Subject())
	var body struct {
		UserID    string `json:"userId"`
		Message   string `json:"message"`
		CreatedAt string `json:"createdAt"`
	}
	_ = json.Unmarshal(m.Data(), &body)
	created, err := time.Parse(time.RFC3339Nano, body.CreatedAt)
	if err != nil {
		created = md.Timestamp
	}
	return archiveRow{
		id: int64(md.Sequence.Stream), room: room, user: text(body.UserID), text: text(body.Message),
		createdAt: created, storedAt: md.Timestamp, data: m.Data(),
	}, nil
}

// text makes s storable as PostgreSQL text, which refuses NUL and invalid
// UTF-8; data keeps the original bytes.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, string(utf8.RuneError)), "\x00", "")
}

// store inserts the batch, retrying until it commits or ctx ends. While it
// retries it keeps the batch its own (InProgress), so that JetStream does
// not hand it to another node only for that node to wait too.
func (a *Archiver) store(ctx context.Context, msgs []jetstream.Msg) error {
	rows := make([]archiveRow, 0, len(msgs))
	for _, m := range msgs {
		r, err := toRow(m)
		if err != nil {
			// Not a JetStream message: there is nothing to archive.
			a.log.Error("archive: skipping message", "subject", m.Subject(), "err", err)
			continue
		}
		rows = append(rows, r)
	}
	wait := 100 * time.Millisecond
	held := time.Now()
	for attempt := 1; ; attempt++ {
		n, err := a.insert(ctx, rows)
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
				_ = m.InProgress()
			}
			held = time.Now()
		}
	}
}

// insert writes the rows in one statement; rows already archived are
// left as they are.
func (a *Archiver) insert(ctx context.Context, rows []archiveRow) (int64, error) {
	n := len(rows)
	ids, rooms, users, texts := make([]int64, n), make([]string, n), make([]string, n), make([]string, n)
	created, stored, data := make([]time.Time, n), make([]time.Time, n), make([][]byte, n)
	for i, r := range rows {
		ids[i], rooms[i], users[i], texts[i] = r.id, r.room, r.user, r.text
		created[i], stored[i], data[i] = r.createdAt, r.storedAt, r.data
	}
	tag, err := a.db.pool.Exec(ctx, `INSERT INTO messages (id, room_id, user_id, message, created_at, stored_at, data)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bytea[])
		ON CONFLICT (id) DO NOTHING`, ids, rooms, users, texts, created, stored, data)
	if err != nil {
		return 0, fmt.Errorf("insert %d messages: %w", n, err)
	}
	return tag.RowsAffected(), nil
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
		pending, age, err := a.measure(mctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Debug("archive: lag not measured", "err", err)
			}
			continue
		}
		a.pending.Store(pending)
		a.lag.Store(int64(age))
		switch {
		case age >= a.cfg.LagWarn && time.Since(warned) >= time.Minute:
			a.log.Warn("archive behind the stream", "pending", pending, "lag", age.Round(time.Second))
			warned = time.Now()
		case age < a.cfg.LagWarn && !warned.IsZero():
			a.log.Info("archive caught up", "pending", pending, "lag", age.Round(time.Millisecond))
			warned = time.Time{}
		}
	}
}

// measure reads the consumer's backlog and the time the oldest message
// still unacknowledged was stored.
func (a *Archiver) measure(ctx context.Context) (uint64, time.Duration, error) {
	// Not a.cons, which only Run's goroutine touches.
	cons, err := a.js.Consumer(ctx, natsbus.MessagesStream, ArchiveConsumer)
	if err != nil {
		return 0, 0, fmt.Errorf("consumer info: %w", err)
	}
	info := cons.CachedInfo()
	pending := info.NumPending + uint64(info.NumAckPending)
	if pending == 0 {
		return 0, 0, nil
	}
	st, err := a.js.Stream(ctx, natsbus.MessagesStream)
	if err != nil {
		return pending, 0, fmt.Errorf("stream: %w", err)
	}
	oldest, err := st.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(natsbus.RoomSubject("*")))
	if err != nil {
		return pending, 0, fmt.Errorf("oldest unarchived message: %w", err)
	}
	return pending, time.Since(oldest.Time), nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
