package natsbus

import (
	"fmt"
	"strconv"

	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go"
)

// Live delivery: what reaches a node's subscribers as it happens. Each
// watch is one core NATS subscription, held only while the caller has
// local subscribers, so a node takes no traffic for rooms and queues that
// nobody on it watches (interest-based fan-out). Callbacks of one watch run
// one at a time, in arrival order, on a goroutine of nats.go's.

// contentTypeHeader carries a user-queue or read event's media type.
const contentTypeHeader = "Content-Type"

// lastSeqHeader is the id of the room's previous message, which the stream
// puts on each message it republishes.
const lastSeqHeader = "Nats-Last-Sequence"

// WatchRoom calls fn with each message stored in room from now on, as the
// stream republishes it, with the id of the room's previous message (0:
// none) so that a watcher can tell when one never reached it: core NATS
// may drop a republished message (a slow connection, a change of leader).
// more is how many messages already wait behind this one for fn. stop ends
// the watch.
func (b *Bus) WatchRoom(room string, fn func(m storage.Message, prev uint64, more int)) (stop func(), err error) {
	if !validToken(room) {
		return nil, fmt.Errorf("watch room %q: not a subject token", room)
	}
	sub, err := b.nc.Subscribe(b.names.RoomLive(room), func(m *nats.Msg) {
		sm, err := b.names.storedFromDirect(m)
		var prev uint64
		if err == nil {
			prev, err = strconv.ParseUint(m.Header.Get(lastSeqHeader), 10, 64)
		}
		if err != nil {
			b.log.Warn("ignoring malformed republished message", "room", room, "err", err)
			return
		}
		// nats.go counts the message whose callback runs as pending
		// until the callback returns (TestWatchRoomMore holds it to that).
		pending, _, _ := m.Sub.Pending()
		fn(sm, prev, max(pending-1, 0))
	})
	if err != nil {
		return nil, fmt.Errorf("watch room %s: %w", room, err)
	}
	// Republished messages may come in bursts; let NATS hold plenty before
	// it drops (a watcher repairs a drop from the stream, at the cost of a
	// read).
	_ = sub.SetPendingLimits(1<<16, 64<<20)
	return func() { _ = sub.Unsubscribe() }, nil
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

// watch delivers subject's events to fn on one of the bus's topic lanes
// (topics.go), not on a goroutine of the subscription's own.
func (b *Bus) watch(subject string, fn func(body []byte, contentType string)) (func(), error) {
	stop, err := b.topics.watch(b.nc, subject, fn)
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
