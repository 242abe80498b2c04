package chat

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Sequence is one sender's posts in the order they were sent: a STOMP
// session's. Once one of them fails to be stored, or its fate is unknown,
// none posted after it is stored in its room: they fail with the same
// error (the Committer tells a failure before it writes its room's next
// message; one to a room the log writes apart may be stored already). So
// a client that resends from its first unacknowledged message, with the
// same client-msg-ids, stores each room's messages in the order it sent
// them: what was stored after all is acknowledged again, not stored twice,
// and nothing later got in ahead of it.
//
// It also gives the sender its own writes to read: Settled waits until
// what it posted has an outcome.
type Sequence struct {
	mu      sync.Mutex
	next    uint64   // number of the next message posted
	pending []uint64 // numbers posted and not yet stored or failed, ascending
	// changed is closed at the next finish; made only while Settled waits,
	// so that a SEND costs no channel.
	changed chan struct{}
	failed  uint64 // number of the first message that failed; 0: none
	err     error
}

// NewSequence starts a sender's sequence.
func NewSequence() *Sequence { return &Sequence{next: 1} }

// Settled returns once every message posted on the sequence before the
// call is stored or has failed, so that a history read or a replay after
// it sees the sender's own messages; or with ctx's error.
func (q *Sequence) Settled(ctx context.Context) error {
	q.mu.Lock()
	mark := q.next
	q.mu.Unlock()
	for {
		q.mu.Lock()
		if len(q.pending) == 0 || q.pending[0] >= mark {
			q.mu.Unlock()
			return nil
		}
		if q.changed == nil {
			q.changed = make(chan struct{})
		}
		ch := q.changed
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the sender's messages to be stored: %w", ctx.Err())
		}
	}
}

// finish records that message n is stored or failed.
func (q *Sequence) finish(n uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if i, ok := slices.BinarySearch(q.pending, n); ok {
		q.pending = slices.Delete(q.pending, i, i+1)
	}
	if q.changed != nil {
		close(q.changed)
		q.changed = nil
	}
}

// take numbers the next message, or returns the error of an earlier one
// that failed.
func (q *Sequence) take() (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return 0, q.err
	}
	n := q.next
	q.next++
	q.pending = append(q.pending, n)
	return n, nil
}

// blocked is the error of a message before n that failed, if one did.
func (q *Sequence) blocked(n uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil && q.failed < n {
		return q.err
	}
	return nil
}

// fail records that message n failed with err: those after it are not to
// be stored.
func (q *Sequence) fail(n uint64, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil || n < q.failed {
		q.failed, q.err = n, fmt.Errorf("not stored, after an earlier message that was not: %w", err)
	}
}
