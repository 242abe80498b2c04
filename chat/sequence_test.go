package chat_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/storage"
)

// held is a committer that keeps what is submitted until the test says
// how each ends, as a store that has lost its majority would.
type held struct {
	mu   sync.Mutex
	subs []heldSub
}

type heldSub struct {
	abandon func() error
	done    func(uint64, error)
}

func (h *held) Submit(_ string, _ []byte, _, _ string, abandon func() error, done func(uint64, error)) {
	h.mu.Lock()
	h.subs = append(h.subs, heldSub{abandon, done})
	h.mu.Unlock()
}

func (h *held) sub(i int) heldSub {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.subs[i]
}

// TestSequenceKeepsASendersOrder: once one of a sender's messages is not
// stored, none it sent after it is: those already submitted are abandoned
// before they are written, later ones are refused at once, all with the
// first failure's error; another sender is not affected, and a message
// sent before the failure is stored.
func TestSequenceKeepsASendersOrder(t *testing.T) {
	b := fakeBackend(t)
	b.join(t, "r", "ann")
	h := &held{}
	s := chat.NewService(b.log, h, b.bus, b.store, chat.Config{})
	t.Cleanup(s.Close)
	ann, other := chat.NewSequence(), chat.NewSequence()
	results := make([]chan error, 5)
	post := func(i int, seq *chat.Sequence) {
		results[i] = make(chan error, 1)
		s.Post(context.Background(), seq, "ann", "r", fmt.Appendf(nil, `{"message":"m%d"}`, i), nil, "", func(err error) { results[i] <- err })
	}
	post(0, ann)   // stored
	post(1, ann)   // fails
	post(2, ann)   // submitted before the failure is known
	post(3, other) // another session of the same user

	if err := h.sub(0).abandon(); err != nil {
		t.Fatalf("message 0 abandoned before anything failed: %v", err)
	}
	h.sub(0).done(1, nil)
	h.sub(1).done(0, fmt.Errorf("publish: %w", storage.ErrUnavailable))
	first := <-results[1]
	if chat.KindOf(first) != chat.Unavailable {
		t.Fatalf("the failed message: %v (%s), want unavailable", first, chat.KindOf(first))
	}
	err := h.sub(2).abandon()
	if err == nil {
		t.Fatal("a message sent after the failed one was not abandoned")
	}
	h.sub(2).done(0, err)
	if err := <-results[2]; chat.KindOf(err) != chat.Unavailable || !errors.Is(err, first) {
		t.Fatalf("the abandoned message: %v, want the first failure's error", err)
	}
	if err := h.sub(3).abandon(); err != nil {
		t.Fatalf("another session's message abandoned: %v", err)
	}
	post(4, ann)
	if err := <-results[4]; !errors.Is(err, first) {
		t.Fatalf("a message sent after the failure: %v, want it refused with the first failure's error", err)
	}
	if err := <-results[0]; err != nil {
		t.Fatalf("the message before the failure: %v", err)
	}
}
