package natsbus

import (
	"hash/maphash"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
)

// laneCount is how many goroutines hand the watches' messages on.
const laneCount = 4

// laneBuffer is how many messages wait in one lane before NATS drops
// what comes (and reports the subscription a slow consumer).
const laneBuffer = 1 << 14

// lanes hands the messages of the bus's watches (live.go) to their
// handlers without a goroutine per subscription: nats.go gives a callback
// subscription a goroutine of its own, and a node holds a watch per
// connected user and per room with a local subscriber. Each subscription
// feeds one of a few lanes (channels), chosen by its subject, and one
// goroutine drains each lane, so the messages of one subject keep their
// order. Handlers must not block: they hold up their lane.
type lanes struct {
	chans []chan *nats.Msg
	seed  maphash.Seed
	log   *slog.Logger

	// reg serialises registrations: a subscription is in handlers before
	// a lane can look it up (the lookup waits on mu meanwhile).
	reg       sync.Mutex
	mu        sync.RWMutex
	handlers  map[*nats.Subscription]func(*nats.Msg)
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newLanes(log *slog.Logger) *lanes {
	l := &lanes{
		seed: maphash.MakeSeed(), log: log, done: make(chan struct{}),
		handlers: map[*nats.Subscription]func(*nats.Msg){},
	}
	for range laneCount {
		ch := make(chan *nats.Msg, laneBuffer)
		l.chans = append(l.chans, ch)
		l.wg.Go(func() { l.drain(ch) })
	}
	return l
}

func (l *lanes) drain(ch chan *nats.Msg) {
	for {
		select {
		case m := <-ch:
			l.mu.RLock()
			h := l.handlers[m.Sub]
			l.mu.RUnlock()
			if h != nil { // nil: the watch has stopped
				h(m)
			}
		case <-l.done:
			return
		}
	}
}

// subscribe hands subject's messages on nc to h, on subject's lane.
func (l *lanes) subscribe(nc *nats.Conn, subject string, h func(*nats.Msg)) (func(), error) {
	lane := l.chans[maphash.String(l.seed, subject)%uint64(len(l.chans))]
	l.reg.Lock()
	defer l.reg.Unlock()
	// Held while subscribing, which queues a SUB for the connection's
	// flusher and does not wait on the network: a lane that gets the
	// first message before h is in the map waits here for it.
	l.mu.Lock()
	sub, err := nc.ChanSubscribe(subject, lane)
	if err == nil {
		l.handlers[sub] = h
	}
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return func() {
		_ = sub.Unsubscribe()
		l.mu.Lock()
		delete(l.handlers, sub)
		l.mu.Unlock()
	}, nil
}

// close stops the lanes once the connection is closed; a second call
// does nothing.
func (l *lanes) close() {
	if l == nil {
		return // a bus that never finished starting
	}
	l.closeOnce.Do(func() {
		close(l.done)
		l.wg.Wait()
	})
}
