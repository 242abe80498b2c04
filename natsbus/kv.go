package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is a JetStream KV bucket, replicated with the rest of JetStream,
// for the storage backends. Every write waits, while the bucket has no
// leader, up to kvWriteWait for one, and is on disk as --durability says
// before it returns.
type Bucket struct {
	bus  *Bus
	kv   jetstream.KeyValue
	name string
	// direct is the subject of the bucket's stream's direct gets.
	direct string
}

// BatchReads reports whether the server chatd is connected to answers
// batched direct gets (multi_last, batch): nats-server 2.11 or later.
// Without them, a bucket reads the keys under a prefix with an ordered
// consumer, and room lists are not available.
func (b *Bus) BatchReads() bool {
	var major, minor int
	if _, err := fmt.Sscanf(b.nc.ConnectedServerVersion(), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 2 || major == 2 && minor >= 11
}

// ServerVersion is the version of the server chatd is connected to.
func (b *Bus) ServerVersion() string { return b.nc.ConnectedServerVersion() }

// Entry is one key's latest value in a bucket, or its deletion.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
	Deleted  bool
}

// Bucket errors; match with errors.Is.
var (
	// ErrKeyExists: Create found the key holding a value.
	ErrKeyExists = errors.New("key exists")
	// ErrKeyNotFound: the key has no value (never had, or was deleted).
	ErrKeyNotFound = errors.New("key not found")
	// ErrRevisionChanged: Update's key moved on from the revision given.
	ErrRevisionChanged = errors.New("key changed since the revision given")
)

// kvWriteWait bounds a KV operation's wait for its bucket's leader, long
// enough for a cluster to replace one that died.
const kvWriteWait = 30 * time.Second

// OpenBucket creates the bucket, or updates it to these settings, keeping
// one value per key. name follows the prefix: ROOMS is CHAT_ROOMS
// (Names.Bucket).
func (b *Bus) OpenBucket(ctx context.Context, name, description string, replicas int) (*Bucket, error) {
	return b.openBucket(ctx, name, description, replicas, nil)
}

// OpenSwappedBucket creates or updates a bucket that JetStream itself keeps
// as an index of src: src's key "<a>.<b>" is its key "<b>.<a>", with
// src's value, deletions included. The bucket sources src's stream through
// a subject transform, so it follows every write to src, including those
// a backend makes straight into it, a moment later: Indexed waits for
// one. A new index is filled from src's whole history; OpenSwappedBucket
// returns once it has caught up with src.
func (b *Bus) OpenSwappedBucket(ctx context.Context, name, description string, src *Bucket, replicas int) (*Bucket, error) {
	k, err := b.openBucket(ctx, name, description, replicas, []*jetstream.StreamSource{{
		Name: "KV_" + src.name,
		SubjectTransforms: []jetstream.SubjectTransformConfig{{
			Source:      "$KV." + src.name + ".*.*",
			Destination: "$KV." + b.names.Bucket(name) + ".{{wildcard(2)}}.{{wildcard(1)}}",
		}},
	}})
	if err != nil {
		return nil, err
	}
	if err := k.caughtUp(ctx, src); err != nil {
		return nil, err
	}
	return k, nil
}

// ExistingBucket returns the bucket if it exists, as it is, without
// creating or changing it: ok is false if there is none.
func (b *Bus) ExistingBucket(ctx context.Context, name string) (k *Bucket, ok bool, err error) {
	name = b.names.Bucket(name)
	var kv jetstream.KeyValue
	err = retry(ctx, b.log, "look up KV bucket "+name, func(ctx context.Context) error {
		var err error
		kv, err = b.js.KeyValue(ctx, name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil
		}
		return err
	})
	if err != nil || kv == nil {
		return nil, false, err
	}
	return &Bucket{bus: b, kv: kv, name: name, direct: b.apiPrefix + "DIRECT.GET.KV_" + name}, true, nil
}

func (b *Bus) openBucket(ctx context.Context, name, description string, replicas int, sources []*jetstream.StreamSource) (*Bucket, error) {
	name = b.names.Bucket(name)
	var kv jetstream.KeyValue
	err := retry(ctx, b.log, "open KV bucket "+name, func(ctx context.Context) error {
		var err error
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: description,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    max(replicas, 1),
			Sources:     sources,
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Bucket{bus: b, kv: kv, name: name, direct: b.apiPrefix + "DIRECT.GET.KV_" + name}, nil
}

// caughtUp waits until the index has sourced what src holds: its source
// lags by nothing, and it holds something if src does. A source that has
// not started yet also says it lags by nothing.
func (k *Bucket) caughtUp(ctx context.Context, src *Bucket) error {
	srcInfo, err := src.info(ctx)
	if err != nil {
		return err
	}
	if srcInfo.State.Msgs == 0 {
		return nil
	}
	began := time.Now()
	logged := false
	for {
		info, err := k.info(ctx)
		if err != nil {
			return err
		}
		if len(info.Sources) > 0 && info.Sources[0].Lag == 0 && info.State.Msgs > 0 {
			return nil
		}
		if !logged && time.Since(began) > time.Second {
			logged = true
			k.bus.log.Info("building the index of a KV bucket", "bucket", k.name, "source", src.name, "source_keys", srcInfo.State.Msgs)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("index %s of %s: still building: %w", k.name, src.name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (k *Bucket) info(ctx context.Context) (*jetstream.StreamInfo, error) {
	st, err := k.bus.js.Stream(ctx, "KV_"+k.name)
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w", k.name, err)
	}
	return st.CachedInfo(), nil
}

// Name is the bucket's name, prefix included.
func (k *Bucket) Name() string { return k.name }

// do runs a write while the bucket has no leader, then syncs it where
// chatd syncs (Bus.sync). conflict is what the write's refusal for a
// revision that is not the key's means: JetStream says "wrong last
// sequence" alike to a create of a key that exists and to an update at an
// old revision.
func (k *Bucket) do(ctx context.Context, what string, conflict error, fn func(context.Context) error) error {
	if err := retryFor(ctx, k.bus.log, what, kvWriteWait, fn); err != nil {
		if wrongRevision(err) {
			return fmt.Errorf("%w: %w", conflict, err)
		}
		return kvError(err)
	}
	return k.bus.sync(ctx, "KV_"+k.name)
}

func wrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func kvError(err error) error {
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return fmt.Errorf("%w: %w", ErrKeyNotFound, err)
	}
	return err
}

// Create sets key's value if it has none, and returns the new revision;
// ErrKeyExists if it has one. A create that was retried after it had in
// fact landed also reports ErrKeyExists.
func (k *Bucket) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	var rev uint64
	err := k.do(ctx, "create "+k.name+" "+key, ErrKeyExists, func(ctx context.Context) error {
		var err error
		rev, err = k.kv.Create(ctx, key, value)
		return err
	})
	return rev, err
}

// Update sets key's value if its revision is still rev, and returns the
// new revision; ErrRevisionChanged if another write came first (or a
// retried write had in fact landed).
func (k *Bucket) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	var next uint64
	err := k.do(ctx, "update "+k.name+" "+key, ErrRevisionChanged, func(ctx context.Context) error {
		var err error
		next, err = k.kv.Update(ctx, key, value, rev)
		return err
	})
	return next, err
}

// Delete deletes key; with rev > 0, only while its revision is rev.
func (k *Bucket) Delete(ctx context.Context, key string, rev uint64) error {
	return k.do(ctx, "delete "+k.name+" "+key, ErrRevisionChanged, func(ctx context.Context) error {
		if rev > 0 {
			return k.kv.Delete(ctx, key, jetstream.LastRevision(rev))
		}
		return k.kv.Delete(ctx, key)
	})
}

// Get returns key's value; ErrKeyNotFound if it has none.
func (k *Bucket) Get(ctx context.Context, key string) (Entry, error) {
	var e jetstream.KeyValueEntry
	err := retryFor(ctx, k.bus.log, "read "+k.name+" "+key, kvWriteWait, func(ctx context.Context) error {
		var err error
		e, err = k.kv.Get(ctx, key)
		return err
	})
	if err != nil {
		return Entry{}, kvError(err)
	}
	return Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}, nil
}

// keySubject is the subject a key's values are stored under.
func (k *Bucket) keySubject(key string) string { return "$KV." + k.name + "." + key }

// entryFromDirect reads an entry from a direct get's reply.
func (k *Bucket) entryFromDirect(m *nats.Msg) (Entry, error) {
	rev, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return Entry{}, fmt.Errorf("read %s: bad sequence header: %w", k.name, err)
	}
	key, ok := strings.CutPrefix(m.Header.Get(jetstream.SubjectHeader), "$KV."+k.name+".")
	if !ok {
		return Entry{}, fmt.Errorf("read %s: a reply for subject %q", k.name, m.Header.Get(jetstream.SubjectHeader))
	}
	op := m.Header.Get("KV-Operation")
	return Entry{Key: key, Value: m.Data, Revision: rev, Deleted: op == "DEL" || op == "PURGE"}, nil
}

// GetMany returns the latest entry of each of keys that has one, deleted
// ones included, in no order: one direct get per maxMultiLast keys, each
// found through the stream's subject index.
func (k *Bucket) GetMany(ctx context.Context, keys []string) ([]Entry, error) {
	subjs := make([]string, len(keys))
	for i, key := range keys {
		subjs[i] = k.keySubject(key)
	}
	raw, err := multiLast(ctx, k.bus.nc, k.direct, subjs)
	if err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", k.name, err)
	}
	return k.entriesFromDirect(raw)
}

// Under returns the latest entry of every key "<prefix>.<token>", deleted
// ones included, in revision order. One multi_last direct get finds up to
// maxMultiLast keys through the stream's subject index; more (a large
// room) come from an ordered consumer, which streams them at the server's
// pace where pages of direct gets would each pay a round trip and a count
// of what is left.
func (k *Bucket) Under(ctx context.Context, prefix string) ([]Entry, error) {
	if !k.bus.BatchReads() {
		return k.underByWatch(ctx, prefix)
	}
	raw, _, err := directGet(ctx, k.bus.nc, k.direct, directReq{MultiLastFor: []string{k.keySubject(prefix + ".*")}})
	if errors.Is(err, errTooManyResults) {
		return k.underByWatch(ctx, prefix)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s under %s: %w", k.name, prefix, err)
	}
	return k.entriesFromDirect(raw)
}

// entriesFromDirect reads the entries of a direct get's replies.
func (k *Bucket) entriesFromDirect(raw []*nats.Msg) ([]Entry, error) {
	out := make([]Entry, 0, len(raw))
	for _, m := range raw {
		e, err := k.entryFromDirect(m)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// underByWatch is Under by an ordered consumer of the keys' latest
// values: for many keys, or a server without batched direct gets.
func (k *Bucket) underByWatch(ctx context.Context, prefix string) ([]Entry, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := k.kv.Watch(wctx, prefix+".*")
	if err != nil {
		return nil, fmt.Errorf("read %s under %s: %w", k.name, prefix, err)
	}
	defer func() { go func() { _ = w.Stop() }() }() // as in watch: stopping may wait
	var out []Entry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s under %s: %w", k.name, prefix, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read %s under %s: the watch ended", k.name, prefix)
			}
			if e == nil {
				return out, nil
			}
			out = append(out, Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut})
		}
	}
}

// Each calls fn with the latest value of every key that has one, in
// revision order, streamed by an ordered consumer; it stops at fn's first
// error.
func (k *Bucket) Each(ctx context.Context, fn func(Entry) error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := k.kv.WatchAll(wctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read %s: %w", k.name, err)
	}
	defer func() { go func() { _ = w.Stop() }() }() // as in watch: stopping may wait
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("read %s: %w", k.name, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("read %s: the watch ended", k.name)
			}
			if e == nil {
				return nil
			}
			if err := fn(Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()}); err != nil {
				return err
			}
		}
	}
}

// WatchUpdates calls fn with every change made from now on, in revision
// order, on one goroutine, until stop is called: a node that reads keys
// when it needs them and keeps what it read current. It returns once the
// watch is in place.
func (k *Bucket) WatchUpdates(_ context.Context, fn func(Entry)) (stop func(), err error) {
	// The watch lives until stop, not until the caller's context ends;
	// its consumer is made within the JetStream API timeout.
	wctx, cancel := context.WithCancel(context.Background())
	w, err := k.kv.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch KV bucket %s: %w", k.name, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// Stopping the watch asks JetStream to delete its consumer and
		// waits for the answer, which never comes where no JetStream
		// leader is left (the last node of a cluster shutting down): it
		// would hold stop for the API timeout. The request goes on its
		// own goroutine, ended by the answer, the timeout or the
		// connection's close; stop waits only for fn's last call. (The
		// server drops the consumer anyway once its client is gone.)
		defer func() { go func() { _ = w.Stop() }() }()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				fn(Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut})
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}, nil
}

// Indexed waits until key holds a value (present) or none (!present): for
// a swapped bucket (OpenSwappedBucket), until it has followed a write to
// its source that made it so.
func (k *Bucket) Indexed(ctx context.Context, key string, present bool) error {
	wait := time.Millisecond
	for {
		raw, _, err := directGet(ctx, k.bus.nc, k.direct, directReq{LastFor: k.keySubject(key)})
		if err != nil {
			return fmt.Errorf("read %s %s: %w", k.name, key, err)
		}
		has := false
		if len(raw) == 1 {
			e, err := k.entryFromDirect(raw[0])
			if err != nil {
				return err
			}
			has = !e.Deleted
		}
		if has == present {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("index %s: %s not yet followed: %w", k.name, key, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}
