package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// CommitMetrics is told how group commit goes. Its methods run on the
// partitions' committing goroutines, concurrently: they must be quick.
type CommitMetrics interface {
	// BatchCommitted: a batch of n messages was written, stored or not
	// (where chatd syncs, its submitters hear after the sync); atomic says
	// whether it went to JetStream as one atomic batch.
	BatchCommitted(n int, atomic bool)
	// BatchSplit: JetStream refused an atomic batch, storing none of it;
	// its messages were sent again in parts (halves on replicated streams,
	// single messages elsewhere) so that only the culprit fails.
	BatchSplit()
}

// Group commit bounds.
const (
	// maxBatch bounds the messages of one batch: JetStream takes at most
	// 1,000 in an atomic batch by default.
	maxBatch = 500
	// maxBatchBytes bounds the payload of one batch.
	maxBatchBytes = 4 << 20
	// commitTimeout bounds how long a message may wait to be stored,
	// retries while a cluster elects a stream leader included.
	commitTimeout = 20 * time.Second
	// batchAckWait bounds one wait for the acknowledgement of an atomic
	// batch, as jetstream.WithPublishAsyncTimeout bounds single ones.
	batchAckWait = 10 * time.Second
)

// atomicMin is the smallest batch written as a JetStream atomic batch;
// smaller ones go message by message, except on replicated streams where
// two share a sender (MessageLog.ordered). On one server syncing
// every write an atomic batch costs 3.5-4 ms up to 16 messages (JetStream
// stages it in a store of its own, with several syncs), a single synced
// message 0.36 ms: 16 cost the same either way (BenchmarkBatchWrite,
// docs/benchmarks.md, Group commit).
const atomicMin = 16

// ErrCommitterClosed is the error of a message submitted after Close.
var ErrCommitterClosed = errors.New("natsbus: committer closed")

// Committer is group commit on the publish path, one committer per
// partition of the log, so that the partitions' streams are written at
// once, each through its own leader.
type Committer struct {
	names Names
	parts []*committer
}

// committer is group commit for one partition: messages submitted close
// together, from any session and for any of its rooms, are written to its
// stream together, and each submitter hears of its own message when
// JetStream has acknowledged it. One goroutine owns the publishing and the
// waiting for acknowledgements; there is no goroutine per message.
//
// Batches are natural: while one batch is being stored, the next gathers
// whatever arrives meanwhile (up to maxBatch), so a lone message waits for
// at most the batch ahead of it and a busy node writes large batches. One
// batch at a time also keeps order: messages are stored in the order they
// were submitted. On replicated streams a batch with two messages of one
// sender goes to JetStream as one atomic batch (one Raft proposal instead
// of one per message), stored whole or not at all, so a change of leader
// cannot store a sender's later message before an earlier one; one that
// JetStream refuses (it stores none of it) is halved until the message at
// fault stands alone, each part stored before the next is sent. Elsewhere
// singles are pipelined, and a connection to an external server cut
// between two of them can store the later first (see MessageLog.await).
//
// A server that syncs every write takes batches of atomicMin or more
// atomically too (synced once, not per message); a batch it refuses is
// sent again message by message, so that only the message at fault fails.
// One unreplicated replica gains nothing: JetStream stages each atomic batch
// in a synced store of its own, which costs more than single publishes, so
// these are pipelined; with --durability fsync chatd then syncs the
// stream's block file once per batch (MessageLog.syncs), on a goroutine of
// its own so that the next batch is published meanwhile, and the batch's
// submitters hear after that sync.
type committer struct {
	msgs    *MessageLog
	part    *logPart
	metrics CommitMetrics
	timeout time.Duration // commitTimeout; shorter in tests
	log     *slog.Logger
	ctx     context.Context // ends when Close gives up waiting
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns

	mu     sync.Mutex
	queue  []*pending
	closed bool
	wake   chan struct{}
	ids    *nuid.NUID // msgIDs of chatd's own; used by the committing goroutine

	// Where chatd syncs (MessageLog.syncs), stored batches wait here for
	// their sync, so that the next batch is published while the disk
	// works; settled is closed when the goroutine draining it returns.
	unsynced chan unsynced
	settled  chan struct{}
}

// unsynced is a stored batch waiting for its sync: seqs and errs are its
// messages' ids and publish errors.
type unsynced struct {
	batch    []*pending
	seqs     []uint64
	errs     []error
	deadline time.Time
}

// maxUnsynced bounds the stored batches waiting for a sync: a disk that
// falls behind holds up publishing instead of queueing without bound.
const maxUnsynced = 8

// pending is one submitted message.
type pending struct {
	room     string
	sender   string
	data     []byte
	msgID    string
	deadline time.Time
	abandon  func() error // nil: never abandoned
	done     func(seq uint64, err error)
}

// abandoned is the error its submitter abandoned the message with, if it
// did: the message is then not written, and its submitter is told.
func (p *pending) abandoned() error {
	if p.abandon == nil {
		return nil
	}
	return p.abandon()
}

// NewCommitter starts group commit for the log; metrics (nil: none) hears
// how batches go. Close stops it.
func (l *MessageLog) NewCommitter(metrics CommitMetrics) *Committer {
	if metrics == nil {
		metrics = nopCommitMetrics{}
	}
	c := &Committer{names: l.names, parts: make([]*committer, len(l.parts))}
	for i, p := range l.parts {
		c.parts[i] = l.newCommitter(p, metrics)
	}
	return c
}

// newCommitter starts the committer of one partition.
func (l *MessageLog) newCommitter(part *logPart, metrics CommitMetrics) *committer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &committer{
		msgs: l, part: part, metrics: metrics, timeout: commitTimeout, log: l.log, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), wake: make(chan struct{}, 1), ids: nuid.New(),
	}
	if l.syncs {
		c.unsynced, c.settled = make(chan unsynced, maxUnsynced), make(chan struct{})
		go c.settle()
	}
	go c.run()
	return c
}

// Submit queues a message for the room. done is called once, from one of
// the committer's goroutines (in the order messages were stored), with the
// message's id when JetStream has stored it (and, with --durability fsync,
// it is on disk), or with the error that kept it from being stored (one
// that wraps storage.ErrTooLarge for a message over the stream's limit).
//
// A non-empty clientID is the sender's own id for the message: a repeat
// from the same sender within the duplicate window is acknowledged with
// the first copy's id and not stored again. Its JetStream msgID is
// "<sender token>:<clientID>" (UserToken); where publishes can go
// unanswered (MessageLog.failover) the committer gives messages ids of its
// own, NUIDs, which never contain a ':', so that it can send them again
// without storing them twice (commit).
//
// Messages of one partition, so of one room, are stored in the order of
// their Submit calls; a caller that submits from one goroutine keeps its
// own order. abandon (nil: none) is asked just before the message is
// written: an error leaves it unwritten, and done gets that error. A
// message that fails is reported to done before any later message of its
// partition is written, so that a submitter can abandon the ones it sent
// after it (chat.Sequence).
//
// An error for a store that cannot take writes for the moment (no leader
// or quorum, no answer in time, JetStream disabled) wraps
// storage.ErrUnavailable.
func (c *Committer) Submit(room string, data []byte, sender, clientID string, abandon func() error, done func(seq uint64, err error)) {
	c.parts[c.names.Partition(room)].submit(room, data, sender, clientID, abandon, done)
}

// Close stores what was submitted and stops. If ctx ends first, the
// messages still waiting fail.
func (c *Committer) Close(ctx context.Context) error {
	errs := make([]error, len(c.parts))
	var wg sync.WaitGroup
	for i, p := range c.parts {
		wg.Go(func() { errs[i] = p.close(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *committer) submit(room string, data []byte, sender, clientID string, abandon func() error, done func(seq uint64, err error)) {
	msgID := ""
	if clientID != "" {
		msgID = UserToken(sender) + ":" + clientID
	}
	p := &pending{room: room, sender: sender, data: data, msgID: msgID, deadline: time.Now().Add(c.timeout), abandon: abandon}
	p.done = func(seq uint64, err error) {
		switch {
		case err == nil:
		case errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
			err = fmt.Errorf("%w: %w", storage.ErrTooLarge, err)
		case unavailable(err):
			err = fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
		}
		done(seq, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		done(0, ErrCommitterClosed)
		return
	}
	c.queue = append(c.queue, p)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	select {
	case <-c.done:
		c.cancel()
		return nil
	case <-ctx.Done():
		c.cancel()
		<-c.done
		return fmt.Errorf("group commit: %w", ctx.Err())
	}
}

func (c *committer) run() {
	defer close(c.done)
	for {
		batch, ok := c.take()
		if !ok {
			break
		}
		c.commit(batch)
	}
	if c.unsynced != nil {
		close(c.unsynced)
		<-c.settled
	}
}

// syncLater hands a stored batch to the settle goroutine, which tells its
// submitters once a sync has covered it.
func (c *committer) syncLater(batch []*pending, seqs []uint64, errs []error) {
	c.unsynced <- unsynced{batch: slices.Clone(batch), seqs: seqs, errs: errs, deadline: batch[0].deadline}
}

// settle syncs the stored batches in the order they come and tells their
// submitters. One sync covers every batch waiting when it starts.
func (c *committer) settle() {
	defer close(c.settled)
	for u := range c.unsynced {
		waiting := []unsynced{u}
	more:
		for {
			select {
			case u, ok := <-c.unsynced:
				if !ok {
					break more
				}
				waiting = append(waiting, u)
			default:
				break more
			}
		}
		ctx, cancel := context.WithDeadline(c.ctx, waiting[0].deadline)
		err := c.msgs.sync(ctx, c.part)
		cancel()
		for _, u := range waiting {
			for i, p := range u.batch {
				if u.errs[i] == nil && err != nil {
					p.done(0, fmt.Errorf("room %s message %d: %w", p.room, u.seqs[i], err))
					continue
				}
				p.done(u.seqs[i], u.errs[i])
			}
		}
	}
}

// take waits for messages and returns the next batch: everything queued,
// up to maxBatch messages and maxBatchBytes. ok is false once the
// committer is closed and drained.
func (c *committer) take() (batch []*pending, ok bool) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			break
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil, false
		}
		<-c.wake
	}
	n, size := 0, 0
	for n < len(c.queue) && n < maxBatch {
		size += len(c.queue[n].data)
		if n > 0 && size > maxBatchBytes {
			break
		}
		n++
	}
	batch = c.queue[:n:n]
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil // let the next append start a fresh array
	}
	c.mu.Unlock()
	kept := batch[:0]
	for _, p := range batch {
		if err := p.abandoned(); err != nil {
			p.done(0, err)
			continue
		}
		kept = append(kept, p)
	}
	clear(batch[len(kept):])
	if len(kept) == 0 {
		return c.take()
	}
	return kept, true
}

// commit stores a batch and tells every message's submitter.
func (c *committer) commit(batch []*pending) {
	// The oldest message bounds the batch's retries.
	ctx, cancel := context.WithDeadline(c.ctx, batch[0].deadline)
	defer cancel()
	atomic := c.msgs.atomic && (len(batch) >= atomicMin || c.inOrder(batch))
	if atomic {
		c.commitAtomic(ctx, batch)
	} else {
		c.stamp(batch)
		c.commitEach(ctx, batch)
	}
	c.metrics.BatchCommitted(len(batch), atomic)
	// The queue's array may outlive the batch (take slices it): let the
	// messages and their callbacks go now.
	clear(batch)
}

// stamp gives every message of the batch that has no msgID one of
// chatd's own, where a publish can go unanswered (MessageLog.failover):
// each can then be sent again without being stored twice. JetStream
// checks and remembers every msgID on every replica (about 110 bytes per
// message for --dedupe-window), so atomic batches carry only one
// (commitAtomic).
func (c *committer) stamp(batch []*pending) {
	if !c.msgs.failover {
		return
	}
	for _, p := range batch {
		if p.msgID == "" {
			p.msgID = c.ids.Next()
		}
	}
}

// commitEach publishes every message of the batch on its own, all before
// waiting for the first acknowledgement, then waits for each in order.
// Each submitter hears as soon as its message is acknowledged, or, where
// chatd syncs (MessageLog.syncs), once the batch is synced.
func (c *committer) commitEach(ctx context.Context, batch []*pending) {
	if err := ctx.Err(); err != nil {
		for _, p := range batch {
			p.done(0, fmt.Errorf("publish to room %s: %w", p.room, err))
		}
		return
	}
	futs := make([]jetstream.PubAckFuture, len(batch))
	errs := make([]error, len(batch))
	resend := c.msgs.resendOn()
	for i, p := range batch {
		// A message that fails is told at once, so that its submitter
		// can abandon what it sent after it, later in this batch too.
		if errs[i] = p.abandoned(); errs[i] == nil {
			futs[i], errs[i] = c.msgs.publishAsync(p.room, p.data, p.msgID)
		}
		if errs[i] != nil {
			p.done(0, errs[i])
		}
	}
	// Where chatd syncs, stored messages wait for the sync; failed ones
	// are told now.
	var stored []*pending
	var seqs []uint64
	for i, p := range batch {
		if errs[i] != nil {
			continue // told
		}
		ack, err := c.msgs.await(ctx, futs[i], p, resend)
		switch {
		case err != nil:
			p.done(0, err)
		case c.msgs.syncs:
			stored, seqs = append(stored, p), append(seqs, ack.Sequence)
		default:
			p.done(ack.Sequence, nil)
		}
	}
	if len(stored) > 0 {
		c.syncLater(stored, seqs, make([]error, len(stored)))
	}
}

// commitAtomic stores the batch as one JetStream atomic batch: all of it
// or none. While a cluster elects a leader the whole batch is sent again
// (which keeps its order); a batch JetStream refused is split into single
// publishes; one whose fate is unknown is sent again only where that is
// safe (messages with a msgID), as await does.
//
// Where a publish can go unanswered (MessageLog.failover) the batch's
// first message carries a msgID of chatd's own, its marker: since the
// batch is stored whole or not at all, the marker alone tells whether it
// was (resolveMarked). A batch whose first message carries a client's msgID,
// which may repeat an earlier message, gets a msgID on every message
// instead.
func (c *committer) commitAtomic(ctx context.Context, batch []*pending) {
	marked := false
	if c.msgs.failover {
		if batch[0].msgID == "" {
			batch[0].msgID = c.ids.Next()
			marked = true
		} else {
			c.stamp(batch)
		}
	}
	wait := 50 * time.Millisecond
	for {
		last, err := c.msgs.publishBatch(ctx, batch)
		if err == nil {
			first := last + 1 - uint64(len(batch))
			seqs := make([]uint64, len(batch))
			for i := range seqs {
				seqs[i] = first + uint64(i)
			}
			c.stored(batch, seqs)
			return
		}
		notStored, lost := classify(err)
		var apiErr *jetstream.APIError
		switch {
		case notStored:
			// No leader or no quorum for the moment: wait and resend below.
		case marked && errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeBatchDuplicate:
			// The marker repeats a batch stored before (its
			// acknowledgement was lost), or a client's msgID repeats.
			if !c.resolveMarked(ctx, batch, err) {
				c.metrics.BatchSplit()
			}
			return
		case errors.As(err, &apiErr):
			// JetStream answered with an error: it stored nothing. A
			// message it refuses (too large, a duplicate msgID) or a batch
			// broken by a change of leader: smaller parts tell which.
			c.log.Debug("atomic batch refused: sending it again in parts", "messages", len(batch), "err", err)
			c.metrics.BatchSplit()
			c.split(ctx, batch)
			return
		case lost && marked:
			if errors.Is(err, errResend) {
				_ = c.msgs.bus.resend.waitSettled(ctx) // resolveMarked fails the batch if ctx ended
			}
			c.resolveMarked(ctx, batch, err)
			return
		case lost:
			if errors.Is(err, errResend) {
				_ = c.msgs.bus.resend.waitSettled(ctx) // the resend fails the batch if ctx ended
			}
			var again []*pending
			for _, p := range batch {
				if p.msgID != "" {
					again = append(again, p)
				} else {
					p.done(0, fmt.Errorf("publish to room %s: %w", p.room, err))
				}
			}
			// Sent again whole where order needs it (commitRest): if it
			// was stored before, it is refused as a repeat and split until
			// each message is acknowledged with its first id.
			c.commitRest(ctx, again)
			return
		default:
			for _, p := range batch {
				p.done(0, fmt.Errorf("publish to room %s: %w", p.room, err))
			}
			return
		}
		select {
		case <-ctx.Done():
			for _, p := range batch {
				p.done(0, fmt.Errorf("publish to room %s: %w (gave up: %v)", p.room, err, ctx.Err()))
			}
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// errCodeBatchDuplicate is JetStream's "atomic publish batch contains
// duplicate message id": it stored none of the batch.
const errCodeBatchDuplicate = 10201

// resolveMarked finds out whether a marked atomic batch (commitAtomic) whose
// outcome is unknown, or refused for a repeated msgID, was stored: its
// first message is sent again alone, with the marker. Acknowledged as a
// duplicate, the batch was stored before, whole, with consecutive ids;
// stored now, it was not, and the rest of it follows message by message,
// each with a msgID of its own. It reports whether the batch was stored
// before, or failed whole (its fate still unknown when ctx ended).
func (c *committer) resolveMarked(ctx context.Context, batch []*pending, cause error) (stored bool) {
	first := batch[0]
	fut, err := c.msgs.publishAsync(first.room, first.data, first.msgID)
	var ack *jetstream.PubAck
	if err == nil {
		ack, err = c.msgs.await(ctx, fut, first, c.msgs.resendOn())
	}
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr):
		// Refused alone (too large, say): it stored nothing, so neither
		// was the batch. The rest is sent again.
		first.done(0, err)
		c.commitRest(ctx, batch[1:])
		return false
	case err != nil:
		err = fmt.Errorf("%w (sending an atomic batch: %v)", err, cause)
		for _, p := range batch {
			p.done(0, err)
		}
		return true
	}
	if ack.Duplicate {
		seqs := make([]uint64, len(batch))
		for i := range seqs {
			seqs[i] = ack.Sequence + uint64(i)
		}
		c.stored(batch, seqs)
		return true
	}
	c.stored(batch[:1], []uint64{ack.Sequence})
	if errors.As(cause, &apiErr) && apiErr.ErrorCode == errCodeBatchDuplicate {
		// The marker was new, so a client's msgID in the rest repeats.
		c.split(ctx, batch[1:])
		return false
	}
	c.commitRest(ctx, batch[1:])
	return false
}

// split sends a batch JetStream refused again in parts, so that only the
// message at fault fails. Where order needs atomic batches
// (MessageLog.ordered) it is halved, each half stored before the next is
// sent, until the culprit stands alone; elsewhere its messages go as
// pipelined singles, which keep their order without leader changes.
func (c *committer) split(ctx context.Context, batch []*pending) {
	if !c.inOrder(batch) {
		c.commitRest(ctx, batch)
		return
	}
	half := len(batch) / 2
	c.commitRest(ctx, batch[:half])
	c.commitRest(ctx, batch[half:])
}

// commitRest stores messages of a batch that the stream did not take
// whole: as one atomic batch where order needs it (MessageLog.ordered),
// else as singles. Messages abandoned meanwhile (an earlier message of
// their submitter's failed) are told and left out.
func (c *committer) commitRest(ctx context.Context, batch []*pending) {
	if c.msgs.ordered {
		kept := make([]*pending, 0, len(batch))
		for _, p := range batch {
			if err := p.abandoned(); err != nil {
				p.done(0, err)
				continue
			}
			kept = append(kept, p)
		}
		if batch = kept; c.inOrder(batch) {
			c.commitAtomic(ctx, batch)
			return
		}
	}
	c.stamp(batch)
	c.commitEach(ctx, batch)
}

// inOrder reports whether the messages must go as one atomic batch to keep
// their order (MessageLog.ordered): where two of them have one sender.
// Pipelined singles of different senders may be stored in any order.
func (c *committer) inOrder(batch []*pending) bool {
	if !c.msgs.ordered {
		return false
	}
	for i := 1; i < len(batch); i++ {
		for _, p := range batch[:i] {
			if p.sender == batch[i].sender {
				return true
			}
		}
	}
	return false
}

// stored tells the submitters of stored messages, after the sync where
// chatd syncs.
func (c *committer) stored(batch []*pending, seqs []uint64) {
	if c.msgs.syncs {
		c.syncLater(batch, seqs, make([]error, len(batch)))
		return
	}
	for i, p := range batch {
		p.done(seqs[i], nil)
	}
}

// JetStream's atomic batch headers (ADR-50).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// publishBatch writes the messages as one atomic batch and returns the
// stream sequence of the last; the batch's messages have consecutive
// sequences. Only the committing message asks for a reply: JetStream
// answers it once the whole batch is stored (with sync_interval: always,
// synced) or refused.
func (l *MessageLog) publishBatch(ctx context.Context, batch []*pending) (uint64, error) {
	resend := l.resendOn()
	id := nuid.Next()
	for i, p := range batch {
		m := nats.NewMsg(l.names.Room(p.room))
		m.Data = p.data
		m.Header.Set(batchIDHeader, id)
		m.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
		m.Header.Set(jetstream.ExpectedStreamHeader, l.part(p.room).name)
		if p.msgID != "" {
			m.Header.Set(jetstream.MsgIDHeader, p.msgID)
		}
		if i < len(batch)-1 {
			if err := l.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("atomic batch of %d: %w", len(batch), err)
			}
			continue
		}
		m.Header.Set(batchCommitHeader, "1")
		resp, err := l.request(ctx, m, resend)
		if err != nil {
			return 0, fmt.Errorf("atomic batch of %d: %w", len(batch), err)
		}
		var ack struct {
			Seq   uint64              `json:"seq"`
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return 0, fmt.Errorf("atomic batch of %d: bad acknowledgement %q: %w", len(batch), resp.Data, err)
		}
		if ack.Error != nil {
			return 0, fmt.Errorf("atomic batch of %d: %w", len(batch), ack.Error)
		}
		return ack.Seq, nil
	}
	return 0, errors.New("atomic batch: no messages")
}

// errResend: a reply stopped being awaited because it may never come
// (resendSignal).
var errResend = errors.New("no acknowledgement: the stream's leader changed or the NATS connection was re-made")

// request sends m and waits, at most batchAckWait, for the reply, or
// until resend closes.
func (l *MessageLog) request(ctx context.Context, m *nats.Msg, resend <-chan struct{}) (*nats.Msg, error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if resend != nil {
		go func() {
			select {
			case <-resend:
				cancel(errResend)
			case <-rctx.Done():
			}
		}()
	}
	tctx, tcancel := context.WithTimeout(rctx, batchAckWait)
	defer tcancel()
	resp, err := l.nc.RequestMsgWithContext(tctx, m)
	if err != nil && errors.Is(context.Cause(rctx), errResend) {
		return nil, errResend
	}
	return resp, err
}

type nopCommitMetrics struct{}

func (nopCommitMetrics) BatchCommitted(int, bool) {}
func (nopCommitMetrics) BatchSplit()              {}
