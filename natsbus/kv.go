package natsbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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
}

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
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Bucket{bus: b, kv: kv, name: name}, nil
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

// Watch calls fn with every key's latest value, then with every change,
// in revision order, on one goroutine, until stop is called. It returns
// once fn has had every value the bucket held when the watch began.
func (k *Bucket) Watch(ctx context.Context, fn func(Entry)) (stop func(), err error) {
	wctx, cancel := context.WithCancel(context.Background())
	w, err := k.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch KV bucket %s: %w", k.name, err)
	}
	loaded := make(chan struct{})
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
		initial := true
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				fn(Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut})
			}
		}
	})
	stop = func() {
		cancel()
		wg.Wait()
	}
	select {
	case <-loaded:
		return stop, nil
	case <-ctx.Done():
		stop()
		return nil, fmt.Errorf("load KV bucket %s: %w", k.name, ctx.Err())
	}
}
