// What the server sends that handlers give it: Messages (encoded once per
// protocol version, shared by every delivery), subscriptions, delivery
// into a session's queue, acknowledgements, and the slow-consumer cut-off.

package stompws

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/chatd/chatd/internal/jsonstr"
	"github.com/chatd/chatd/stompws/frame"
)

// AckMode is a subscription's acknowledgement mode.
type AckMode int

// The STOMP ack modes.
const (
	AckAuto AckMode = iota
	AckClient
	AckClientIndividual
)

// ErrSubscriptionClosed is returned by DeliverWait once the subscription or
// its session has ended.
var ErrSubscriptionClosed = errors.New("subscription closed")

// Message is a MESSAGE frame's shared part: destination, headers and body,
// encoded once per protocol version however many subscriptions it goes to.
// Only subscription, message-id and ack differ per delivery.
type Message struct {
	dest    string
	headers []frame.Header
	body    []byte
	binary  bool
	size    int
	enc     [3]atomic.Pointer[[]byte]
	// sockjs holds enc JSON-escaped, for SockJS's websocket transport.
	sockjs [3]atomic.Pointer[[]byte]
}

// NewMessage makes a Message. headers should not include destination or
// content-length; both are set here. Neither headers nor body may be changed
// afterwards.
func NewMessage(destination string, headers []frame.Header, body []byte) *Message {
	m := &Message{dest: destination, headers: headers, body: body, binary: !utf8.Valid(body)}
	m.size = len(body) + len(destination) + 64
	for _, h := range headers {
		m.size += len(h.Name) + len(h.Value) + 2
	}
	return m
}

// Body returns the message body.
func (m *Message) Body() []byte { return m.body }

// encoded returns the frame from the destination header to the NUL.
func (m *Message) encoded(v frame.Version) []byte {
	slot := &m.enc[v-1]
	if p := slot.Load(); p != nil {
		return *p
	}
	b := make([]byte, 0, m.size+16)
	b = frame.AppendHeader(b, v, "destination", m.dest)
	for _, h := range m.headers {
		if representable(v, h) {
			b = frame.AppendHeader(b, v, h.Name, h.Value)
		}
	}
	b = append(b, "content-length:"...)
	b = strconv.AppendInt(b, int64(len(m.body)), 10)
	b = append(b, "\n\n"...)
	b = append(b, m.body...)
	b = append(b, 0)
	slot.Store(&b)
	return b
}

// escaped is encoded(v) JSON-escaped for a SockJS array frame: escaped
// once per message, not once per subscriber.
func (m *Message) escaped(v frame.Version) []byte {
	slot := &m.sockjs[v-1]
	if p := slot.Load(); p != nil {
		return *p
	}
	enc := m.encoded(v)
	b := jsonstr.Append(make([]byte, 0, len(enc)+len(enc)/8+16), enc)
	slot.Store(&b)
	return b
}

// representable reports whether a header survives v's encoding. No
// version can carry a NUL. STOMP 1.0
// escapes nothing, so a name with ':' or a line break, or a value with a line
// break, would forge header lines (a 1.2 sender's escaped "\n" becomes a raw
// one); 1.0 and 1.1 cannot carry a CR at the end of a value (it reads back as
// part of a CRLF). Such headers are left out of that version's frames.
func representable(v frame.Version, h frame.Header) bool {
	if strings.ContainsRune(h.Name, 0) || strings.ContainsRune(h.Value, 0) {
		return false // no version can escape NUL, and clients split frames on it
	}
	if v == frame.V12 {
		return true
	}
	if strings.HasSuffix(h.Value, "\r") {
		return false
	}
	return v == frame.V11 || !strings.ContainsAny(h.Name, ":\r\n") && !strings.ContainsAny(h.Value, "\n")
}

func (s *Session) appendMessage(buf []byte, it *outItem) []byte {
	if s.sockjsBeat == 0 {
		buf = s.appendMessageHead(buf, it)
		return append(buf, it.msg.encoded(s.version)...)
	}
	var head [256]byte
	buf = jsonstr.Append(buf, s.appendMessageHead(head[:0], it))
	return append(buf, it.msg.escaped(s.version)...)
}

// appendMessageHead appends the headers of a MESSAGE frame that are the
// subscription's own, with the command.
func (s *Session) appendMessageHead(buf []byte, it *outItem) []byte {
	buf = append(buf, "MESSAGE\n"...)
	buf = append(buf, it.sub.hdr...)
	buf = append(buf, "message-id:"...)
	buf = strconv.AppendUint(buf, it.id, 10)
	buf = append(buf, '\n')
	if it.sub.Ack != AckAuto && s.version == frame.V12 {
		buf = append(buf, "ack:"...)
		buf = strconv.AppendUint(buf, it.id, 10)
		buf = append(buf, '\n')
	}
	for _, h := range it.extra {
		buf = frame.AppendHeader(buf, s.version, h.Name, h.Value)
	}
	return buf
}

// Subscription is one client subscription.
type Subscription struct {
	ID          string
	Destination string
	Ack         AckMode
	// Frame is the SUBSCRIBE frame, for handler-specific headers.
	Frame *frame.Frame
	s     *Session
	hdr   []byte // "subscription:<id>\n", escaped for the session's version

	// Guarded by s.mu.
	closed  bool
	unacked []uint64 // message-ids awaiting ACK/NACK, ascending
}

func newSubscription(s *Session, id, dest string, mode AckMode, f *frame.Frame) *Subscription {
	return &Subscription{
		ID: id, Destination: dest, Ack: mode, Frame: f, s: s,
		hdr: frame.AppendHeader(nil, s.version, "subscription", id),
	}
}

// Session returns the subscription's session.
func (sub *Subscription) Session() *Session { return sub.s }

// settle releases an acknowledged message-id: in client mode it and every
// earlier one, in client-individual mode just it. The caller holds s.mu.
func (sub *Subscription) settle(id uint64) bool {
	lo, hi := 0, len(sub.unacked)
	for lo < hi {
		mid := (lo + hi) / 2
		if sub.unacked[mid] < id {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(sub.unacked) || sub.unacked[lo] != id {
		return false
	}
	if sub.Ack == AckClient {
		sub.unacked = sub.unacked[lo+1:]
	} else {
		sub.unacked = append(sub.unacked[:lo], sub.unacked[lo+1:]...)
	}
	return true
}

// Queue queues m for the client without blocking or writing, with extra
// headers placed before m's own: it goes out with the session's next
// flush (Session.Flush), so that whoever delivers a burst
// of messages flushes each session once for all of them, as nats-server
// flushes each client once per burst of inbound work. It returns false
// if the subscription has ended. A client whose queue is full is cut off
// as a slow consumer (ERROR, close), so that it never holds back whoever
// delivers to it; that ERROR goes out without a flush.
func (sub *Subscription) Queue(m *Message, extra ...frame.Header) bool {
	s := sub.s
	s.mu.Lock()
	ok := s.deliverLocked(sub, m, extra)
	closing := !ok && s.closing
	s.mu.Unlock()
	if closing {
		s.signal() // the writer sends the slow consumer's ERROR and closes
	}
	return ok
}

// DeliverWait is Queue and Flush for backlogs (replays): it waits while the
// session's queue holds a full write (paceFrames, maxWSMessage) or is
// half full, instead of overflowing it, so a long replay is paced by the
// client; a client that pauses reading but keeps sending is waited for
// too, up to WriteStallMax (checkStall).
func (sub *Subscription) DeliverWait(ctx context.Context, m *Message, extra ...frame.Header) error {
	s := sub.s
	frames, bytes := min(s.cfg.OutboundFrames/2, paceFrames), min(s.cfg.OutboundBytes/2, maxWSMessage)
	for {
		s.mu.Lock()
		if s.closing || sub.closed {
			s.mu.Unlock()
			return ErrSubscriptionClosed
		}
		if len(s.queue) == 0 || len(s.queue) < frames && s.queueBytes+m.size <= bytes {
			ok := s.deliverLocked(sub, m, extra)
			s.mu.Unlock()
			s.flush()
			if !ok {
				return ErrSubscriptionClosed
			}
			return nil
		}
		if s.drained == nil {
			s.drained = make(chan struct{})
		}
		s.waiting = true
		ch := s.drained
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.stop:
			return ErrSubscriptionClosed
		}
	}
}

// paceFrames is how many frames a backlog keeps queued for its session's
// writer (DeliverWait): enough that each write is a full one, few enough
// that thousands of clients replaying at once hold little each.
const paceFrames = 512

func (s *Session) deliverLocked(sub *Subscription, m *Message, extra []frame.Header) bool {
	if s.closing || sub.closed {
		return false
	}
	if len(s.queue) >= s.cfg.OutboundFrames || s.queueBytes+m.size > s.cfg.OutboundBytes {
		s.slowConsumerLocked("outbound queue full")
		return false
	}
	s.nextMsgID++
	id := s.nextMsgID
	if sub.Ack != AckAuto {
		if len(sub.unacked) >= s.cfg.MaxUnacked {
			s.slowConsumerLocked("too many unacknowledged messages")
			return false
		}
		sub.unacked = append(sub.unacked, id)
	}
	s.queue = append(s.queue, outItem{sub: sub, msg: m, id: id, extra: extra})
	s.queueBytes += m.size
	return true
}

// slowConsumerLocked drops what the client has not taken and tells it
// why. The ERROR follows the frame being written, if one is: a client
// that reads again gets that frame whole, its ERROR and the close. One
// that does not is cut by the write's stall watch, as every closing
// session is (checkStall); cutting sooner would end the connection in
// the middle of that frame.
func (s *Session) slowConsumerLocked(reason string) {
	if !s.closing {
		s.cfg.Observer.SlowConsumer()
	}
	s.failLocked(&Error{Kind: KindSlowConsumer, Message: "slow consumer: " + reason}, nil, "", closePolicy, true)
}
