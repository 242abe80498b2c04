package chat

import (
	"context"
	"sync"
)

// topic carries one user queue's, or one room's read events, to this
// node's subscribers of it: one watch on the bus while it has any, each
// event made into one publication for all of them.
type topic struct {
	metrics Metrics
	watch   func()

	mu   sync.RWMutex
	subs map[Subscriber]struct{}
}

// joinTopic adds sub to key's topic, starting its watch with open if it
// is new.
func (s *Service) joinTopic(ctx context.Context, key string, sub Subscriber, open func(fn func([]byte, string)) (func(), error)) (func(), error) {
	t, release, err := s.topics.acquire(ctx, key, func() (*topic, error) {
		t := &topic{metrics: s.cfg.Metrics, subs: map[Subscriber]struct{}{}}
		stop, err := open(t.deliver)
		t.watch = stop
		return t, err
	}, (*topic).stop)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.subs[sub] = struct{}{}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.subs, sub)
		t.mu.Unlock()
		release()
	}, nil
}

func (t *topic) stop() { t.watch() }

// deliver makes the event one publication, hands it to every subscriber
// and flushes them once the topic's lock is released.
func (t *topic) deliver(body []byte, contentType string) {
	p := &Publication{Body: body, ContentType: contentType}
	var small [8]Subscriber
	to := small[:0]
	sent, dropped := 0, 0
	t.mu.RLock()
	for sub := range t.subs {
		to = append(to, sub)
		if sub.Deliver(p, Note{}) {
			sent++
		} else {
			dropped++
		}
	}
	t.mu.RUnlock()
	for _, sub := range to {
		sub.Flush()
	}
	if sent > 0 {
		t.metrics.Delivered(DeliveryQueue, sent)
	}
	if dropped > 0 {
		t.metrics.Dropped(dropped)
	}
}
