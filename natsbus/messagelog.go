package natsbus

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// LogConfig shapes the messages streams, every partition's alike.
type LogConfig struct {
	Replicas        int
	MaxAge          time.Duration // 0: keep forever
	MaxPerRoom      int64         // 0: no per-room cap
	DuplicateWindow time.Duration // how long a message id (a client-msg-id, or chatd's own) is remembered
	MaxMsgSize      int32
	// Durability sets the stream's persist mode, and with Replicas whether
	// group commit writes atomic batches (Committer).
	Durability Durability
}

// Keys of chatd's in the messages streams' metadata.
const (
	// epochKey records the first sequence of this life of the stream.
	epochKey = "chatd.epoch"
	// partitionsKey records how many streams the deployment's messages
	// are partitioned over, where there are more than one (checkPartitions).
	partitionsKey = "chatd.partitions"
)

// MessageLog is the room messages: one JetStream stream per partition
// (Names.Partition), a room's messages all in one. A message's stream
// sequence is its id: ids increase across a stream, so they increase in
// every room; two rooms of different partitions may have messages with the
// same id.
type MessageLog struct {
	js    jetstream.JetStream
	nc    *nats.Conn
	log   *slog.Logger
	parts []*logPart
	cfg   LogConfig
	// atomic: the stream takes atomic batches and group commit gains from
	// them: one sync per batch instead of one per message (a syncing
	// server), or one Raft proposal instead of one per message (replicated
	// streams).
	atomic bool
	// ordered: a batch with two messages of one sender goes as one atomic
	// batch, not only from atomicMin up, and a batch JetStream refuses is
	// halved, not sent as pipelined singles. Singles in flight while a new
	// leader is elected can be stored out of their order (an earlier one
	// refused for want of a leader, a later one stored by the new one); on
	// a replicated stream an atomic batch costs about what the same
	// singles do.
	ordered bool
	// syncs: acknowledged messages are on disk only after Bus.Sync (one
	// embedded server with --durability fsync).
	syncs bool
	// failover: a publish's acknowledgement can be lost without the server
	// being overloaded: the stream's leader can change (a clustered node)
	// or the connection can be re-made (an external NATS). The committer
	// then gives each message sent on its own a msgID, and each atomic
	// batch one on its first message, so that what has an unknown fate
	// can be sent again without being stored twice.
	failover bool
	bus      *Bus
	names    Names
}

// logPart is one partition's stream.
type logPart struct {
	name       string
	subjects   string // what the stream captures
	stream     jetstream.Stream
	epoch      uint64
	directSubj string
}

// part is the partition holding the room's messages.
func (l *MessageLog) part(room string) *logPart { return l.parts[l.names.Partition(room)] }

// OpenMessageLog creates or updates the messages streams, idempotently, so
// that every node can call it at start. A setting of an existing stream
// that JetStream cannot change (the persist mode that --durability fast
// needs, the partition count) is an error naming it, not kept silently.
//
// A new stream starts its sequence at the current Unix time in
// microseconds. If the stream is ever lost and rebuilt, its ids still rise
// above every id of its earlier life, so a client's since-id from the old
// life is recognisable (it is below the epoch) instead of silently naming
// some unrelated new message.
func (b *Bus) OpenMessageLog(ctx context.Context, cfg LogConfig) (*MessageLog, error) {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.Durability == "" {
		cfg.Durability = DurabilityFsync
	}
	if cfg.Durability == DurabilityFast && cfg.Replicas > 1 {
		return nil, fmt.Errorf("--durability fast needs a stream with 1 replica, not %d: JetStream's async persist mode is "+
			"for unreplicated streams only; use --durability replicated", cfg.Replicas)
	}
	if err := retry(ctx, b.log, "check the messages streams' partitions", b.checkPartitions); err != nil {
		return nil, err
	}
	parts := make([]*logPart, b.names.Partitions())
	got := make([]jetstream.StreamConfig, len(parts))
	// In a cluster each new stream is an election: open them together.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for p := range parts {
		g.Go(func() error {
			var err error
			parts[p], got[p], err = b.openPart(gctx, p, cfg)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return b.newLog(parts, cfg, got[0]), nil
}

// streamConfig is what chatd asks of partition p's stream.
func (b *Bus) streamConfig(p int, cfg LogConfig) jetstream.StreamConfig {
	sc := jetstream.StreamConfig{
		Name:              b.names.MessagesStream(p),
		Description:       "chatd room messages; the sequence is the message id",
		Subjects:          []string{b.names.messagesSubjects(p)},
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            cfg.MaxAge,
		MaxMsgsPerSubject: -1,
		MaxMsgSize:        cfg.MaxMsgSize,
		Duplicates:        cfg.DuplicateWindow,
		AllowDirect:       true,
		PersistMode:       cfg.Durability.persistMode(),
		// Async persistence and atomic batches exclude each other.
		AllowAtomicPublish: cfg.Durability != DurabilityFast,
		RePublish: &jetstream.RePublish{
			Source:      b.names.messagesSubjects(p),
			Destination: b.names.RoomLive("{{wildcard(1)}}"),
		},
	}
	if cfg.MaxPerRoom > 0 {
		sc.MaxMsgsPerSubject = cfg.MaxPerRoom
	}
	if sc.MaxMsgSize == 0 {
		sc.MaxMsgSize = -1
	}
	return sc
}

// checkPartitions refuses a partition count other than the one the
// deployment's streams were made with: JetStream cannot move stored
// messages between streams, and a room's messages would be looked for in
// the wrong one. The count is in the streams' metadata; a server older
// than 2.10 keeps none, and then it is the number of partition streams.
func (b *Bus) checkPartitions(ctx context.Context) error {
	want := b.names.Partitions()
	single := b.names.messagesStream()
	var found string
	recorded, parts := 0, 0
	list := b.js.ListStreams(ctx, jetstream.WithStreamListSubject(b.names.prefix+".msg.>"))
	for info := range list.Info() {
		name := info.Config.Name
		switch p, ok := strings.CutPrefix(name, single+"_"); {
		case name == single:
			found, recorded = name, 1
		case ok && p != "" && strings.Trim(p, "0123456789") == "":
			parts++
			if v, ok := info.Config.Metadata[partitionsKey]; ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					return fmt.Errorf("stream %s: bad %s metadata %q", name, partitionsKey, v)
				}
				recorded = n
			}
			if found == "" {
				found = name
			}
		}
	}
	if err := list.Err(); err != nil {
		return fmt.Errorf("list the messages streams: %w", err)
	}
	have := cmp.Or(recorded, parts)
	if found != "" && have != want {
		return fmt.Errorf("--partitions %d: this deployment's messages are in %d partition(s) (stream %s), and "+
			"JetStream cannot move stored messages between streams: start chatd with --partitions %d, or move the "+
			"history to a deployment of its own (docs/operations.md, Partitions)",
			want, have, found, have)
	}
	return nil
}

// openPart creates or updates partition p's stream.
func (b *Bus) openPart(ctx context.Context, p int, cfg LogConfig) (*logPart, jetstream.StreamConfig, error) {
	sc := b.streamConfig(p, cfg)
	name := sc.Name
	meta := func(epoch uint64) map[string]string {
		m := map[string]string{epochKey: strconv.FormatUint(epoch, 10)}
		if n := b.names.Partitions(); n > 1 {
			m[partitionsKey] = strconv.Itoa(n)
		}
		return m
	}
	var part *logPart
	var got jetstream.StreamConfig
	err := retry(ctx, b.log, "open stream "+name, func(ctx context.Context) error {
		st, err := b.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			epoch := uint64(time.Now().UnixMicro())
			c := sc
			c.FirstSeq = epoch
			c.Metadata = meta(epoch)
			if st, err = b.js.CreateStream(ctx, c); err != nil {
				return err // if another node created it first, the retry updates it
			}
			part, got = b.newPart(p, st, epoch), st.CachedInfo().Config
			return nil
		}
		if err != nil {
			return err
		}
		old := st.CachedInfo().Config
		epoch := old.FirstSeq
		if v, ok := old.Metadata[epochKey]; ok {
			if n, perr := strconv.ParseUint(v, 10, 64); perr == nil {
				epoch = n
			}
		}
		epoch = max(epoch, 1)
		c := sc
		c.FirstSeq = old.FirstSeq
		c.Metadata = meta(epoch)
		if old.PersistMode != c.PersistMode {
			return fmt.Errorf("stream %s has persist_mode %s, --durability %s needs %s, and JetStream cannot change "+
				"a stream's persist mode: start chatd with the durability the stream was made for, or remove the stream "+
				"and its history (docs/operations.md, Changing durability)",
				name, persistName(old.PersistMode), cfg.Durability, persistName(c.PersistMode))
		}
		if st, err = b.js.UpdateStream(ctx, c); err != nil {
			if diff := streamDiff(old, c); len(diff) > 0 {
				return fmt.Errorf("stream %s differs from chatd's configuration (%s) and JetStream refused to update it: %w",
					name, strings.Join(diff, "; "), err)
			}
			return fmt.Errorf("update to chatd's configuration: %w", err)
		}
		part, got = b.newPart(p, st, epoch), st.CachedInfo().Config
		return nil
	})
	if err != nil {
		return nil, got, err
	}
	b.warnUnsupported(name, sc, got)
	return part, got, nil
}

func (b *Bus) newPart(p int, st jetstream.Stream, epoch uint64) *logPart {
	name := b.names.MessagesStream(p)
	return &logPart{name: name, subjects: b.names.messagesSubjects(p), stream: st, epoch: epoch,
		directSubj: b.apiPrefix + "DIRECT.GET." + name}
}

// warnUnsupported says where the server ignored settings it does not
// know (older than 2.12): then the stream takes no atomic batches (group
// commit sends messages one by one), and --durability fast keeps the
// default persist mode (replicated's guarantee).
func (b *Bus) warnUnsupported(stream string, want, got jetstream.StreamConfig) {
	if want.AllowAtomicPublish && !got.AllowAtomicPublish {
		b.log.Warn("the NATS server does not support atomic batch publish (nats-server 2.12 or later does): "+
			"group commit sends messages one by one", "stream", stream)
	}
	if want.PersistMode != got.PersistMode {
		b.log.Warn("the NATS server does not support async persist mode (nats-server 2.12 or later does): "+
			"--durability fast acts as replicated", "stream", stream)
	}
}

// newLog wraps the partitions' streams; got is the configuration
// JetStream holds for them (all alike).
func (b *Bus) newLog(parts []*logPart, cfg LogConfig, got jetstream.StreamConfig) *MessageLog {
	return &MessageLog{
		js:    b.js,
		nc:    b.nc,
		log:   b.log,
		parts: parts,
		cfg:   cfg,
		// A server that syncs every write syncs an atomic batch once; where
		// chatd syncs (storeSync), single publishes are quicker: JetStream
		// stages a one-replica atomic batch in a synced store of its own.
		atomic:   got.AllowAtomicPublish && ((cfg.Durability == DurabilityFsync && b.storeSync == nil) || got.Replicas > 1),
		ordered:  got.AllowAtomicPublish && got.Replicas > 1,
		syncs:    b.storeSync != nil,
		failover: b.srv == nil || b.clustered,
		bus:      b,
		names:    b.names,
	}
}

// sync returns once the messages JetStream acknowledged in the
// partition before the call are on disk, where chatd syncs rather than
// the server (Bus.sync).
func (l *MessageLog) sync(ctx context.Context, p *logPart) error {
	return l.bus.sync(ctx, p.name)
}

// Config returns the configuration the log was opened with.
func (l *MessageLog) Config() LogConfig { return l.cfg }

// MaxPerRoom is how many messages of one room the log keeps (0: no cap).
func (l *MessageLog) MaxPerRoom() int64 { return l.cfg.MaxPerRoom }

// MaxMessageSize is the largest message the log stores, in bytes.
func (l *MessageLog) MaxMessageSize() int { return int(l.cfg.MaxMsgSize) }

// publishAsync stores a message in the room. A non-empty msgID is JetStream's
// deduplication key: a repeat within the duplicate window is acknowledged
// with the first copy's sequence and not stored again.
func (l *MessageLog) publishAsync(room string, data []byte, msgID string) (jetstream.PubAckFuture, error) {
	m := &nats.Msg{Subject: l.names.Room(room), Data: data}
	opts := []jetstream.PublishOpt{jetstream.WithExpectStream(l.part(room).name)}
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	f, err := l.js.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, fmt.Errorf("publish to %s: %w", m.Subject, err)
	}
	return f, nil
}

// await waits for p's publish, started with publishAsync, and returns
// its acknowledgement (the message's id, and whether it repeated one
// already stored). While a cluster elects a new stream leader, a publish that
// reached no server at all is safe to send again, and so is one that
// carries a msgID (JetStream drops the repeat); those are sent again until
// ctx ends. Any other failure is returned: the message may or may not be
// stored. resend, from MessageLog.resendOn before the publish, closes when
// the acknowledgement may never come (a new leader, a new connection): a
// message with a msgID is then sent again, resendSettle after the event,
// rather than after the publish timeout. A publish sent again may be
// stored after a later one already on its way: on replicated streams,
// where leaders change, the committer therefore sends a batch with two
// messages of one sender atomically (MessageLog.ordered).
func (l *MessageLog) await(ctx context.Context, fut jetstream.PubAckFuture, p *pending, resend <-chan struct{}) (*jetstream.PubAck, error) {
	wait := 50 * time.Millisecond
	for {
		var err error
		select {
		case ack := <-fut.Ok():
			return ack, nil
		case err = <-fut.Err():
		case <-resend:
			if p.msgID == "" {
				resend = nil // sending it again could store it twice
				continue
			}
			select {
			case ack := <-fut.Ok(): // answered after all
				return ack, nil
			default:
			}
			if err := l.bus.resend.waitSettled(ctx); err != nil {
				return nil, fmt.Errorf("publish to room %s: %w", p.room, err)
			}
			resend = l.resendOn()
			if fut, err = l.publishAsync(p.room, p.data, p.msgID); err != nil {
				return nil, err
			}
			continue
		case <-ctx.Done():
			return nil, fmt.Errorf("publish to room %s: %w", p.room, ctx.Err())
		}
		notStored, lost := classify(err)
		if !notStored && (!lost || p.msgID == "") {
			return nil, fmt.Errorf("publish to room %s: %w", p.room, err)
		}
		// While the connection is down, a copy sent now would only wait
		// in nats.go's reconnect buffer beside the first: the reconnect
		// (resend) sends it again, once.
		var retry <-chan time.Time
		if !errors.Is(err, nats.ErrDisconnected) || resend == nil {
			retry = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("publish to room %s: %w (gave up: %v)", p.room, err, ctx.Err())
		case <-resend:
			if serr := l.bus.resend.waitSettled(ctx); serr != nil {
				return nil, fmt.Errorf("publish to room %s: %w (gave up: %v)", p.room, err, serr)
			}
		case <-retry:
		}
		wait = min(2*wait, time.Second)
		resend = l.resendOn()
		if fut, err = l.publishAsync(p.room, p.data, p.msgID); err != nil {
			return nil, err
		}
	}
}

// errCodeMsgIDInProcess is JetStream's "duplicate message id is in
// process" (JSStreamDuplicateMessageConflict): the first copy has not
// been stored yet; a repeat later is acknowledged with its id.
const errCodeMsgIDInProcess = 10158

// resendOn returns the channel that closes when publishes in flight may
// go unanswered (resendSignal), or nil where chatd embeds the only NATS
// server: there no leader changes and the connection is in-process.
func (l *MessageLog) resendOn() <-chan struct{} {
	if !l.failover {
		return nil
	}
	return l.bus.resend.next()
}

// classify sorts a failed publish: notStored, no server got it or
// JetStream refused it unstored (503: no leader or no quorum for the
// moment), or its msgID's first copy is still being stored (a new leader
// got it from the old one), so it is safe to send again, after a pause;
// lost, no answer came, so it may or may not be stored: nats.go fails an
// asynchronous publish still awaiting its answer with ErrDisconnected when
// the connection breaks.
func classify(err error) (notStored, lost bool) {
	var apiErr *jetstream.APIError
	notStored = errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == errCodeMsgIDInProcess)
	lost = errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errResend) || errors.Is(err, nats.ErrDisconnected)
	return notStored, lost
}

// unavailable reports an error of a store that cannot take writes for the
// moment: no leader or quorum (classify's notStored), no answer in time
// (its lost), or JetStream disabled, as after a full disk.
func unavailable(err error) bool {
	notStored, lost := classify(err)
	return notStored || lost || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

// readErr marks an error of a read that the store could not serve for
// the moment (no leader or quorum, no answer in time, JetStream off) as
// storage.ErrUnavailable, as Submit marks a write's.
func readErr(err error) error {
	if unavailable(err) {
		return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
	}
	return err
}

// State returns the current bounds of the stream holding the room's
// messages.
func (l *MessageLog) State(ctx context.Context, room string) (storage.LogState, error) {
	p := l.part(room)
	info, err := p.stream.Info(ctx)
	if err != nil {
		return storage.LogState{}, fmt.Errorf("stream info: %w", readErr(err))
	}
	return storage.LogState{Epoch: p.epoch, First: info.State.FirstSeq, Last: info.State.LastSeq}, nil
}

// RoomCount returns how many messages the stream holds for the room.
func (l *MessageLog) RoomCount(ctx context.Context, room string) (uint64, error) {
	subj := l.names.Room(room)
	info, err := l.part(room).stream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("stream info for %s: %w", subj, readErr(err))
	}
	return info.State.Subjects[subj], nil
}

// maxMultiLast is how many subjects one multi_last direct get may find
// messages for; JetStream refuses a request for more.
const maxMultiLast = 1024

// multiLastBytes bounds one multi_last reply, so that a room list of large
// messages does not arrive as one burst.
const multiLastBytes = 4 << 20

// RoomTails returns, for each of marks in order, its room's newest message
// (nil: none) and how many of the room's messages have ids above the mark.
// The newest messages come from one direct get per maxMultiLast rooms
// (multi_last, which finds each room's last message through the stream's
// subject index, without reading blocks back); a room is counted only if
// its newest message is above the mark, for the rest are all read.
func (l *MessageLog) RoomTails(ctx context.Context, marks []storage.RoomMark) ([]storage.RoomTail, error) {
	// Each partition's stream is asked for its rooms, all at once.
	byPart := make([][]string, len(l.parts))
	for _, m := range marks {
		p := l.names.Partition(m.Room)
		byPart[p] = append(byPart[p], l.names.Room(m.Room))
	}
	found := make([][]storage.Message, len(l.parts))
	g, gctx := errgroup.WithContext(ctx)
	for p, subjs := range byPart {
		if len(subjs) == 0 {
			continue
		}
		g.Go(func() error {
			var err error
			found[p], err = l.lastOf(gctx, l.parts[p], subjs)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	latest := make(map[string]storage.Message, len(marks))
	for _, msgs := range found {
		for _, m := range msgs {
			latest[m.Room] = m
		}
	}
	out := make([]storage.RoomTail, len(marks))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(roomCountWorkers)
	for i, mk := range marks {
		m, ok := latest[mk.Room]
		if !ok {
			continue
		}
		out[i].Latest = &m
		if m.ID <= mk.Read {
			continue
		}
		g.Go(func() error {
			n, err := l.unread(gctx, mk.Room, mk.Read, m.ID)
			if err != nil {
				return fmt.Errorf("unread count of %s: %w", mk.Room, err)
			}
			out[i].Unread = n
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// lastOf returns the newest message of each of the subjects of the
// partition's stream that has any.
func (l *MessageLog) lastOf(ctx context.Context, p *logPart, subjs []string) ([]storage.Message, error) {
	raw, err := multiLast(ctx, l.nc, p.directSubj, subjs)
	if err != nil {
		return nil, fmt.Errorf("newest messages of rooms: %w", err)
	}
	out := make([]storage.Message, len(raw))
	for i, r := range raw {
		if out[i], err = l.names.storedFromDirect(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// multiLast returns the newest message of each of subjects that has any,
// from the stream whose direct get subject is direct: one multi_last direct
// get per maxMultiLast subjects, each found through the stream's subject
// index, asked again for what a reply left out past multiLastBytes.
func multiLast(ctx context.Context, nc *nats.Conn, direct string, subjects []string) ([]*nats.Msg, error) {
	var out []*nats.Msg
	for chunk := range slices.Chunk(subjects, maxMultiLast) {
		ask := make(map[string]bool, len(chunk))
		for _, s := range chunk {
			ask[s] = true
		}
		for len(ask) > 0 {
			subjs := slices.Collect(maps.Keys(ask))
			raw, left, err := directGet(ctx, nc, direct, directReq{MultiLastFor: subjs, MaxBytes: multiLastBytes})
			if err != nil {
				return nil, fmt.Errorf("newest of %d subjects: %w", len(subjs), err)
			}
			for _, m := range raw {
				out = append(out, m)
				delete(ask, m.Header.Get(jetstream.SubjectHeader))
			}
			if left == 0 {
				break
			}
			if len(raw) == 0 {
				return nil, fmt.Errorf("newest of %d subjects: an empty reply left %d out", len(subjs), left)
			}
		}
	}
	return out, nil
}

// roomCountWorkers bounds the counts RoomTails asks for at once.
const roomCountWorkers = 8

// readCounted is how many unread messages of a room are counted by reading
// them. JetStream's own count scans the block its start lies in; reading
// one message skips only to the room's next, so a room one message ahead
// of its reader (one who reads along) is counted by that read. Each further
// read skips over other rooms' messages again, and a few of them cost more
// than the count.
const readCounted = 1

// unread returns how many of the room's messages have ids above after,
// where last, above after, is the room's newest.
func (l *MessageLog) unread(ctx context.Context, room string, after, last uint64) (uint64, error) {
	msgs, whole, err := l.forward(ctx, room, after+1, last+1, readCounted)
	if err != nil {
		return 0, err
	}
	if whole {
		return uint64(len(msgs)), nil
	}
	return l.countAfter(ctx, room, after)
}

// countAfter returns how many of the room's messages have ids above after,
// from one direct get: a batch reply tells how many more match.
func (l *MessageLog) countAfter(ctx context.Context, room string, after uint64) (uint64, error) {
	msgs, _, err := l.directRaw(ctx, l.part(room), directReq{Seq: after + 1, NextFor: l.names.Room(room), Batch: 1})
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	np, err := strconv.ParseUint(msgs[0].Header.Get("Nats-Num-Pending"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("direct get: bad Nats-Num-Pending header: %w", err)
	}
	return np + 1, nil
}

// After returns up to max of the room's messages with id > after, oldest first.
func (l *MessageLog) After(ctx context.Context, room string, after uint64, max int) ([]storage.Message, error) {
	if max <= 0 {
		return nil, nil
	}
	req := directReq{Seq: after + 1, NextFor: l.names.Room(room), Batch: max}
	return l.direct(ctx, l.part(room), req)
}

// Latest returns the room's newest message at or below upTo (0: the newest
// of all), or nil when there is none.
func (l *MessageLog) Latest(ctx context.Context, room string, upTo uint64) (*storage.Message, error) {
	if upTo == 0 {
		msgs, err := l.direct(ctx, l.part(room), directReq{LastFor: l.names.Room(room)})
		if err != nil || len(msgs) == 0 {
			return nil, err
		}
		return &msgs[0], nil
	}
	// Not multi_last with up_to_seq: that reads back through every
	// subject of every block on its way (Before).
	msgs, err := l.Before(ctx, room, upTo+1, 1)
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	return &msgs[0], nil
}

// Before returns up to limit of the room's messages with id < before (0: the
// newest), oldest first.
//
// JetStream reads a subject forward only. Reading back from a sequence
// (multi_last with up_to_seq) visits every subject of every block on its
// way, and a batched read counts what follows it to the end of its block,
// both under the store's lock: in a stream shared by many rooms either is
// slow and stalls writers. Before reads forward, one message at a time
// (each read skips to the room's next message), from a start that it
// guesses from the density of the room's messages: a read that reaches the
// range's end has the range whole; one that finds more than it needs moves
// the start closer. The answer rests on the messages read, never on the
// guesses.
func (l *MessageLog) Before(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error) {
	if limit <= 0 || before == 1 {
		return nil, nil
	}
	var tail []storage.Message // the page's end: all of the room's messages in [hi, before)
	hi := before
	if hi == 0 {
		last, err := l.Latest(ctx, room, 0)
		if err != nil || last == nil {
			return nil, err
		}
		tail, hi = []storage.Message{*last}, last.ID
	}
	// step is the span of ids expected to hold what is still needed.
	step := uint64(4 * limit)
	for need := limit - len(tail); need > 0 && hi > 0; {
		from := uint64(0) // the room's start
		if hi > step {
			from = hi - step
		}
		msgs, whole, err := l.forward(ctx, room, from, hi, 2*need+8)
		if err != nil {
			return nil, err
		}
		if !whole {
			// More than needed: shrink the step to the density seen.
			seen := float64(msgs[len(msgs)-1].ID-from+1) / float64(len(msgs))
			step = max(min(uint64(seen*float64(need)*1.5)+1, step/2), 1)
			continue
		}
		keep := msgs[max(0, len(msgs)-need):]
		tail = append(keep, tail...)
		need -= len(keep)
		if from == 0 {
			break
		}
		if len(msgs) > 0 {
			step = uint64(float64(hi-from)*float64(need)/float64(len(msgs))*1.5) + 1
		} else {
			step *= 8
		}
		hi = from
	}
	return tail, nil
}

// forward reads the room's messages with ids in [from, below), up to most
// of them; whole reports that it read them all.
func (l *MessageLog) forward(ctx context.Context, room string, from, below uint64, most int) (msgs []storage.Message, whole bool, err error) {
	for len(msgs) < most {
		m, err := l.next(ctx, room, from)
		if err != nil {
			return nil, false, err
		}
		if m == nil || m.ID >= below {
			return msgs, true, nil
		}
		msgs = append(msgs, *m)
		if m.ID+1 == below {
			return msgs, true, nil
		}
		from = m.ID + 1
	}
	return msgs, false, nil
}

// next returns the room's first message with id from or above, or nil. It
// is a single direct get, not a batch: JetStream counts what follows a
// batch, which costs more than the read.
func (l *MessageLog) next(ctx context.Context, room string, from uint64) (*storage.Message, error) {
	msgs, err := l.direct(ctx, l.part(room), directReq{Seq: from, NextFor: l.names.Room(room)})
	if err != nil || len(msgs) == 0 {
		return nil, err
	}
	return &msgs[0], nil
}

// errTooManyResults: a multi_last direct get matched more subjects than
// JetStream answers for in one reply (maxMultiLast).
var errTooManyResults = errors.New("direct get: too many results")

// directReq is JetStream's direct get request (JSApiMsgGetRequest).
type directReq struct {
	Seq          uint64   `json:"seq,omitempty"`
	LastFor      string   `json:"last_by_subj,omitempty"`
	NextFor      string   `json:"next_by_subj,omitempty"`
	Batch        int      `json:"batch,omitempty"`
	MultiLastFor []string `json:"multi_last,omitempty"`
	MaxBytes     int      `json:"max_bytes,omitempty"`
}

// direct runs one direct get on the partition's stream and returns the
// messages it found.
func (l *MessageLog) direct(ctx context.Context, p *logPart, req directReq) ([]storage.Message, error) {
	raw, _, err := l.directRaw(ctx, p, req)
	if err != nil || len(raw) == 0 {
		return nil, err
	}
	out := make([]storage.Message, len(raw))
	for i, m := range raw {
		if out[i], err = l.names.storedFromDirect(m); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// directRaw runs one direct get on the partition's stream.
func (l *MessageLog) directRaw(ctx context.Context, p *logPart, req directReq) (msgs []*nats.Msg, left uint64, err error) {
	return directGet(ctx, l.nc, p.directSubj, req)
}

// directGet runs one direct get on the stream whose direct get subject is
// subj, and collects its replies: a single message, or a batch ended by a
// 204 EOB status, with how many matching messages the batch left out (its
// Nats-Num-Pending). 404 means nothing matched.
func directGet(ctx context.Context, nc *nats.Conn, subj string, req directReq) (msgs []*nats.Msg, left uint64, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, 0, fmt.Errorf("encode direct get: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	inbox := nc.NewInbox()
	// A channel sized to the batch: SubscribeSync would allocate its
	// default 64k-entry (512 KiB) buffer on every read.
	n := max(req.Batch, len(req.MultiLastFor), 1)
	if slices.ContainsFunc(req.MultiLastFor, func(f string) bool { return strings.ContainsAny(f, "*>") }) {
		n = maxMultiLast // a wildcard finds up to that many
	}
	ch := make(chan *nats.Msg, n+2)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, 0, fmt.Errorf("direct get inbox: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subj, inbox, body); err != nil {
		return nil, 0, fmt.Errorf("direct get request: %w", err)
	}
	batch := req.Batch > 0 || len(req.MultiLastFor) > 0
	var out []*nats.Msg
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("direct get reply: %w", readErr(ctx.Err()))
		}
		if status := m.Header.Get("Status"); status != "" {
			switch status {
			case "204": // end of batch
				if left, err = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64); err != nil {
					return nil, 0, fmt.Errorf("direct get: bad Nats-Num-Pending header: %w", err)
				}
				return out, left, nil
			case "404":
				return out, 0, nil
			case "413":
				return nil, 0, errTooManyResults
			case "503": // no replica answers: no quorum, or JetStream off
				return nil, 0, fmt.Errorf("direct get: %w: status 503 %s", storage.ErrUnavailable, m.Header.Get("Description"))
			default:
				return nil, 0, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
			}
		}
		out = append(out, m)
		if !batch {
			return out, 0, nil
		}
	}
}

// storedFromDirect reads a message from a direct get's reply, or from the
// stream's republication of it: both carry the stream's headers.
func (n Names) storedFromDirect(m *nats.Msg) (storage.Message, error) {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return storage.Message{}, fmt.Errorf("direct get: bad sequence header: %w", err)
	}
	room, _ := n.roomFromSubject(m.Header.Get(jetstream.SubjectHeader))
	ts, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	return storage.Message{ID: seq, Room: room, Data: m.Data, Time: ts}, nil
}

// leaderWait bounds how long a read that only the stream leader answers
// waits for one: a dead leader's replacement is elected within seconds.
const leaderWait = 30 * time.Second

// LastID returns the room's newest id as the stream leader knows it (0 if
// the room is empty). Direct gets may be answered by a replica that lags a
// little behind the leader; readers that must not miss a just-stored
// message compare against this.
func (l *MessageLog) LastID(ctx context.Context, room string) (uint64, error) {
	req, err := json.Marshal(directReq{LastFor: l.names.Room(room)})
	if err != nil {
		return 0, fmt.Errorf("encode msg get: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		// Long enough for a cluster to replace a leader that died.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, leaderWait)
		defer cancel()
	}
	// Only the stream leader answers; while one is elected, ask again.
	var resp *nats.Msg
	wait := 50 * time.Millisecond
	began := time.Now()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err = l.nc.RequestWithContext(rctx, l.bus.apiPrefix+"STREAM.MSG.GET."+l.part(room).name, req)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return 0, fmt.Errorf("newest id of %s: %w (after %s)", room, readErr(err), time.Since(began).Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("newest id of %s: %w (after %s)", room, readErr(err), time.Since(began).Round(time.Millisecond))
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
	var r struct {
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, fmt.Errorf("newest id of %s: decode: %w", room, err)
	}
	switch {
	case r.Error != nil && jetstream.ErrorCode(r.Error.ErrCode) == jetstream.JSErrCodeMessageNotFound:
		return 0, nil
	case r.Error != nil:
		return 0, fmt.Errorf("newest id of %s: %w", room, readErr(&jetstream.APIError{
			Code: r.Error.Code, ErrorCode: jetstream.ErrorCode(r.Error.ErrCode), Description: r.Error.Description}))
	case r.Message == nil:
		return 0, fmt.Errorf("newest id of %s: empty reply", room)
	}
	return r.Message.Seq, nil
}

// AfterUpTo is After that keeps asking, for a short while, until the batch
// reaches upTo or is full: a replica that lags the leader catches up within
// moments, and a caller that knows upTo is stored must not take a short read
// for the end of the room.
func (l *MessageLog) AfterUpTo(ctx context.Context, room string, after, upTo uint64, max int) ([]storage.Message, error) {
	return untilCaughtUp(ctx, room, upTo, func() ([]storage.Message, bool, error) {
		batch, err := l.After(ctx, room, after, max)
		done := len(batch) == max || len(batch) > 0 && batch[len(batch)-1].ID >= upTo || upTo <= after
		return batch, done, err
	})
}

// Span returns up to max of the room's messages with ids in (after, upTo],
// oldest first, for a caller that knows upTo is stored: a short read from
// a replica that lags is asked again. Unlike AfterUpTo it reads one
// message at a time and stops at upTo, so nothing beyond the span is
// walked or counted: the cheap read of a short span near the log's end.
func (l *MessageLog) Span(ctx context.Context, room string, after, upTo uint64, max int) ([]storage.Message, error) {
	if max <= 0 || upTo <= after {
		return nil, nil
	}
	return untilCaughtUp(ctx, room, upTo, func() ([]storage.Message, bool, error) {
		msgs, _, err := l.forward(ctx, room, after+1, upTo+1, max)
		done := len(msgs) == max || len(msgs) > 0 && msgs[len(msgs)-1].ID >= upTo
		return msgs, done, err
	})
}

// Page returns up to limit of the room's messages before the id (0: the
// newest), oldest first. The newest page includes the room's newest
// message as the stream leader knows it: a user who just got a RECEIPT
// must see the message, whichever replica answers.
func (l *MessageLog) Page(ctx context.Context, room string, before uint64, limit int) ([]storage.Message, error) {
	var last uint64
	if before == 0 {
		var err error
		if last, err = l.LastID(ctx, room); err != nil {
			return nil, err
		}
	}
	return untilCaughtUp(ctx, room, last, func() ([]storage.Message, bool, error) {
		page, err := l.Before(ctx, room, before, limit)
		return page, last == 0 || len(page) > 0 && page[len(page)-1].ID >= last, err
	})
}

// untilCaughtUp repeats read, briefly backing off, until it reports done:
// the replica that answers direct gets has caught up to upTo.
func untilCaughtUp(ctx context.Context, room string, upTo uint64, read func() ([]storage.Message, bool, error)) ([]storage.Message, error) {
	wait := 5 * time.Millisecond
	deadline := time.Now().Add(5 * time.Second)
	for {
		msgs, done, err := read()
		if err != nil || done {
			return msgs, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("room %s: history up to %d not readable (replica behind)", room, upTo)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}
