package chat

import (
	"context"
	"sync"
)

// registry holds one live thing per key (a room's feed, a topic's
// fan-out) while it has users. A new key's thing is started outside the
// registry's lock: starting may wait on the network (a room feed reads the
// room's newest id, which waits out a leader election), and only the
// callers for that key wait with it, never those of other keys.
type registry[T any] struct {
	mu    sync.Mutex
	slots map[string]*slot[T]
}

type slot[T any] struct {
	ready chan struct{} // closed once start has returned
	val   T
	err   error
	refs  int // callers holding it, those still waiting for ready included
}

// acquire returns key's thing, starting it with start if there is none,
// and a release func the caller calls once when done with it; stop runs
// (outside the lock) when the last caller has released it. A caller that
// finds another's start under way waits for it, or for ctx.
func (r *registry[T]) acquire(ctx context.Context, key string, start func() (T, error), stop func(T)) (T, func(), error) {
	var zero T
	r.mu.Lock()
	if r.slots == nil {
		r.slots = map[string]*slot[T]{}
	}
	sl := r.slots[key]
	starter := sl == nil
	if starter {
		sl = &slot[T]{ready: make(chan struct{})}
		r.slots[key] = sl
	}
	sl.refs++
	r.mu.Unlock()
	release := func() {
		r.mu.Lock()
		sl.refs--
		last := sl.refs == 0 && sl.err == nil
		if last && r.slots[key] == sl {
			delete(r.slots, key)
		}
		r.mu.Unlock()
		if last {
			stop(sl.val)
		}
	}
	if starter {
		val, err := start()
		r.mu.Lock()
		sl.val, sl.err = val, err
		if err != nil && r.slots[key] == sl {
			delete(r.slots, key) // the next caller tries again
		}
		r.mu.Unlock()
		close(sl.ready)
		if err != nil {
			return zero, nil, err
		}
		return val, release, nil
	}
	select {
	case <-sl.ready:
	case <-ctx.Done():
		// The start goes on for the others; this caller gives up its place.
		go func() {
			<-sl.ready
			if sl.err == nil {
				release()
			}
		}()
		return zero, nil, ctx.Err()
	}
	if sl.err != nil {
		return zero, nil, sl.err
	}
	return sl.val, release, nil
}

// drain empties the registry and returns what it held, for a shutdown.
func (r *registry[T]) drain() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []T
	for key, sl := range r.slots {
		select {
		case <-sl.ready:
			if sl.err == nil {
				out = append(out, sl.val)
			}
		default: // still starting: its starter sees it fail or stops it
		}
		delete(r.slots, key)
	}
	return out
}
