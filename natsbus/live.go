package natsbus

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go"
)

// Live delivery: what reaches a node's subscribers as it happens. Each
// watch is one core NATS subscription, held only while the caller has
// local subscribers, so a node takes no traffic for rooms and queues that
// nobody on it watches (interest-based fan-out). A watch's messages reach
// its function one at a time, in arrival order, through the bus's lanes
// (lanes.go): no watch holds a goroutine of its own while idle.

// contentTypeHeader carries a user-queue or read event's media type.
const contentTypeHeader = "Content-Type"

// lastSeqHeader is the id of the room's previous message, which the stream
// puts on each message it republishes.
const lastSeqHeader = "Nats-Last-Sequence"

// roomInboxMax bounds the messages a room watch holds for its function;
// beyond it they are dropped, as NATS drops for a slow subscription, and
// the watcher fills the gap from the stream.
const roomInboxMax = 1 << 16

// idleInboxCap is the most a room watch's buffers keep while it is idle.
const idleInboxCap = 64

// WatchRoom calls fn with each message stored in room from now on, as the
// stream republishes it, with the id of the room's previous message (0:
// none) so that a watcher can tell when one never reached it: core NATS
// may drop a republished message (a slow connection, a change of leader).
// more is how many messages already wait behind this one for fn. Calls of
// fn run one at a time and may block without holding up other watches.
// stop ends the watch.
func (b *Bus) WatchRoom(room string, fn func(m storage.Message, prev uint64, more int)) (stop func(), err error) {
	if !validToken(room) {
		return nil, fmt.Errorf("watch room %q: not a subject token", room)
	}
	w := &roomWatch{b: b, room: room, fn: fn}
	unsub, err := b.lanes.subscribe(b.nc, b.names.RoomLive(room), w.enqueue)
	if err != nil {
		return nil, fmt.Errorf("watch room %s: %w", room, err)
	}
	return func() {
		unsub()
		w.mu.Lock()
		w.stopped.Store(true)
		w.inbox = nil
		w.mu.Unlock()
	}, nil
}

// roomWatch queues a room's messages for its function, which may block (a
// room feed reads a gap from the stream, and writes to its subscribers):
// a goroutine runs the function only while messages wait, so an idle room
// holds none and a busy one holds up no other room of its lane.
type roomWatch struct {
	b    *Bus
	room string
	fn   func(storage.Message, uint64, int)

	// waiting counts the messages queued and not yet handed to fn, so
	// that the runner tells fn how many follow without taking mu.
	waiting atomic.Int64
	stopped atomic.Bool

	mu sync.Mutex
	// inbox is what waits for fn; spare is the runner's other buffer.
	inbox, spare []*nats.Msg
	running      bool
	dropping     bool
}

// enqueue runs on a lane: it only queues, and starts a runner if none runs.
func (w *roomWatch) enqueue(m *nats.Msg) {
	w.mu.Lock()
	if w.stopped.Load() {
		w.mu.Unlock()
		return
	}
	if len(w.inbox) >= roomInboxMax {
		if !w.dropping {
			w.dropping = true
			w.b.log.Warn("room watch behind; dropping live messages until it catches up from the stream", "room", w.room)
		}
		w.mu.Unlock()
		return
	}
	w.inbox = append(w.inbox, m)
	w.waiting.Add(1)
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go w.run()
	}
}

// run hands what waits to fn, in order, and ends when nothing does.
func (w *roomWatch) run() {
	for {
		w.mu.Lock()
		if w.stopped.Load() || len(w.inbox) == 0 {
			w.running, w.dropping = false, false
			// An idle watch keeps no large buffer from its last burst.
			if cap(w.inbox) > idleInboxCap {
				w.inbox = nil
			}
			if cap(w.spare) > idleInboxCap {
				w.spare = nil
			}
			w.mu.Unlock()
			return
		}
		batch := w.inbox
		w.inbox, w.spare = w.spare[:0], nil
		w.mu.Unlock()
		for _, m := range batch {
			if w.stopped.Load() {
				return
			}
			w.deliver(m, int(w.waiting.Add(-1)))
		}
		clear(batch)
		w.mu.Lock()
		w.spare = batch[:0]
		w.mu.Unlock()
	}
}

func (w *roomWatch) deliver(m *nats.Msg, more int) {
	sm, err := w.b.names.storedFromDirect(m)
	var prev uint64
	if err == nil {
		prev, err = strconv.ParseUint(m.Header.Get(lastSeqHeader), 10, 64)
	}
	if err != nil {
		w.b.log.Warn("ignoring malformed republished message", "room", w.room, "err", err)
		return
	}
	w.fn(sm, prev, more)
}

// WatchUser calls fn with each event published to user's queue (on any
// node, by chatd or a backend service), with its content type.
func (b *Bus) WatchUser(user, queue string, fn func(body []byte, contentType string)) (stop func(), err error) {
	if !validQueue(queue) {
		return nil, fmt.Errorf("watch user queue %q: not a subject", queue)
	}
	return b.watch(b.names.User(user, queue), fn)
}

// WatchReads calls fn with each read event of room.
func (b *Bus) WatchReads(room string, fn func(body []byte, contentType string)) (stop func(), err error) {
	if !validToken(room) {
		return nil, fmt.Errorf("watch reads of %q: not a subject token", room)
	}
	return b.watch(b.names.Read(room), fn)
}

// watch delivers subject's events to fn on its lane (lanes.go); fn must
// not block.
func (b *Bus) watch(subject string, fn func(body []byte, contentType string)) (func(), error) {
	stop, err := b.lanes.subscribe(b.nc, subject, func(m *nats.Msg) {
		fn(m.Data, m.Header.Get(contentTypeHeader))
	})
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", subject, err)
	}
	return stop, nil
}

// PublishUser sends an event to every session of user watching queue, on
// every node.
func (b *Bus) PublishUser(user, queue, contentType string, body []byte) error {
	if !validQueue(queue) {
		return fmt.Errorf("publish to user queue %q: not a subject", queue)
	}
	return b.publish(b.names.User(user, queue), contentType, body)
}

// PublishReads sends a read event of room to its watchers on every node.
func (b *Bus) PublishReads(room, contentType string, body []byte) error {
	if !validToken(room) {
		return fmt.Errorf("publish reads of %q: not a subject token", room)
	}
	return b.publish(b.names.Read(room), contentType, body)
}

func (b *Bus) publish(subject, contentType string, body []byte) error {
	m := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
	if contentType != "" {
		m.Header.Set(contentTypeHeader, contentType)
	}
	if err := b.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("publish to %s: %w", subject, err)
	}
	return nil
}
