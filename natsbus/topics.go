package natsbus

import (
	"hash/maphash"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
)

// topicLanes is how many goroutines deliver user-queue and read events.
const topicLanes = 4

// topicLaneBuffer is how many events wait in one lane before NATS drops
// what comes (and reports the subscription a slow consumer).
const topicLaneBuffer = 8192

// topics delivers user-queue and read events to their watchers without a
// goroutine per subscription: nats.go gives a callback subscription a
// goroutine of its own, and a node holds one such watch per connected
// user. Each subscription feeds one of a few lanes (channels), chosen by
// its subject, and one goroutine drains each lane, so the events of one
// subject keep their order. Watchers' functions must not block: they
// hold up their lane.
type topics struct {
	lanes []chan *nats.Msg
	seed  maphash.Seed
	log   *slog.Logger

	// reg serialises registrations: a subscription is in fns before a
	// lane can look it up (the lookup waits on mu meanwhile).
	reg       sync.Mutex
	mu        sync.RWMutex
	fns       map[*nats.Subscription]func(body []byte, contentType string)
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newTopics(log *slog.Logger) *topics {
	t := &topics{
		seed: maphash.MakeSeed(), log: log, done: make(chan struct{}),
		fns: map[*nats.Subscription]func([]byte, string){},
	}
	for range topicLanes {
		ch := make(chan *nats.Msg, topicLaneBuffer)
		t.lanes = append(t.lanes, ch)
		t.wg.Go(func() { t.drain(ch) })
	}
	return t
}

func (t *topics) drain(ch chan *nats.Msg) {
	for {
		select {
		case m := <-ch:
			t.mu.RLock()
			fn := t.fns[m.Sub]
			t.mu.RUnlock()
			if fn != nil { // nil: the watch has stopped
				fn(m.Data, m.Header.Get(contentTypeHeader))
			}
		case <-t.done:
			return
		}
	}
}

// watch subscribes fn to subject on nc.
func (t *topics) watch(nc *nats.Conn, subject string, fn func([]byte, string)) (func(), error) {
	lane := t.lanes[maphash.String(t.seed, subject)%uint64(len(t.lanes))]
	t.reg.Lock()
	defer t.reg.Unlock()
	// Held while subscribing, which queues a SUB for the connection's
	// flusher and does not wait on the network: a lane that gets the
	// first event before fn is in the map waits here for it.
	t.mu.Lock()
	sub, err := nc.ChanSubscribe(subject, lane)
	if err == nil {
		t.fns[sub] = fn
	}
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return func() {
		_ = sub.Unsubscribe()
		t.mu.Lock()
		delete(t.fns, sub)
		t.mu.Unlock()
	}, nil
}

// close stops the lanes once the connection is closed; a second call
// does nothing.
func (t *topics) close() {
	if t == nil {
		return // a bus that never finished starting
	}
	t.closeOnce.Do(func() {
		close(t.done)
		t.wg.Wait()
	})
}
