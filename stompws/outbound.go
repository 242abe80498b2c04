package stompws

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
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

// maxWSMessage caps how many queued frames are written as one WebSocket
// message. Batching waiting frames saves a syscall and a WebSocket header
// each; STOMP clients split frames on NUL, whatever the message boundaries.
const maxWSMessage = 256 << 10

// Message is a MESSAGE frame's shared part: destination, headers and body,
// encoded once per protocol version however many subscriptions it goes to.
// Only subscription, message-id and ack differ per delivery.
type Message struct {
	dest    string
	headers []Header
	body    []byte
	binary  bool
	size    int
	enc     [3]atomic.Pointer[[]byte]
}

// NewMessage makes a Message. headers should not include destination or
// content-length; both are set here. Neither headers nor body may be changed
// afterwards.
func NewMessage(destination string, headers []Header, body []byte) *Message {
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
func (m *Message) encoded(v Version) []byte {
	slot := &m.enc[v-1]
	if p := slot.Load(); p != nil {
		return *p
	}
	b := make([]byte, 0, m.size+16)
	b = AppendHeader(b, v, "destination", m.dest)
	for _, h := range m.headers {
		if representable(v, h) {
			b = AppendHeader(b, v, h.Name, h.Value)
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

// representable reports whether a header survives v's encoding. No
// version can carry a NUL. STOMP 1.0
// escapes nothing, so a name with ':' or a line break, or a value with a line
// break, would forge header lines (a 1.2 sender's escaped "\n" becomes a raw
// one); 1.0 and 1.1 cannot carry a CR at the end of a value (it reads back as
// part of a CRLF). Such headers are left out of that version's frames.
func representable(v Version, h Header) bool {
	if strings.ContainsRune(h.Name, 0) || strings.ContainsRune(h.Value, 0) {
		return false // no version can escape NUL, and clients split frames on it
	}
	if v == V12 {
		return true
	}
	if strings.HasSuffix(h.Value, "\r") {
		return false
	}
	return v == V11 || !strings.ContainsAny(h.Name, ":\r\n") && !strings.ContainsAny(h.Value, "\n")
}

// Subscription is one client subscription.
type Subscription struct {
	ID          string
	Destination string
	Ack         AckMode
	// Frame is the SUBSCRIBE frame, for handler-specific headers.
	Frame *Frame
	s     *Session
	hdr   []byte // "subscription:<id>\n", escaped for the session's version

	// Guarded by s.mu.
	closed  bool
	unacked []uint64 // message-ids awaiting ACK/NACK, ascending
}

func newSubscription(s *Session, id, dest string, mode AckMode, f *Frame) *Subscription {
	return &Subscription{
		ID: id, Destination: dest, Ack: mode, Frame: f, s: s,
		hdr: AppendHeader(nil, s.version, "subscription", id),
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

// Deliver queues m for the client without blocking, with extra headers
// placed before m's own. It returns false if the subscription has ended. A
// client whose queue is full is cut off as a slow consumer (ERROR, close),
// so that it never holds back whoever delivers to it.
func (sub *Subscription) Deliver(m *Message, extra ...Header) bool {
	s := sub.s
	s.mu.Lock()
	ok := s.deliverLocked(sub, m, extra)
	s.mu.Unlock()
	s.signal() // also when it failed: a slow consumer's ERROR must go out
	return ok
}

// DeliverWait is Deliver for backlogs (replays): it waits while the
// session's queue is more than half full instead of overflowing it, so a
// long replay is paced by the client.
func (sub *Subscription) DeliverWait(ctx context.Context, m *Message, extra ...Header) error {
	s := sub.s
	for {
		s.mu.Lock()
		if s.closing || sub.closed {
			s.mu.Unlock()
			return ErrSubscriptionClosed
		}
		if len(s.queue) == 0 || len(s.queue) < s.cfg.OutboundFrames/2 && s.queueBytes+m.size <= s.cfg.OutboundBytes/2 {
			ok := s.deliverLocked(sub, m, extra)
			s.mu.Unlock()
			s.signal()
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

func (s *Session) deliverLocked(sub *Subscription, m *Message, extra []Header) bool {
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

// slowConsumerLocked drops what the client has not taken, tells it why, and
// cuts the connection shortly after even if the client reads nothing more.
func (s *Session) slowConsumerLocked(reason string) {
	if !s.closing {
		s.cfg.Observer.SlowConsumer()
	}
	s.failLocked(&Error{Message: "slow consumer: " + reason}, nil, "", closePolicy, true)
	time.AfterFunc(time.Second, func() { _ = s.conn.CloseNow() })
}

// writeLoop is the session's only writer while it runs (signal starts
// it): it takes everything queued at once and writes it as few WebSocket
// messages, so a burst costs one write, then waits WriteCoalesce so that
// what arrives meanwhile shares the next write, and exits when nothing has
// come for WriterLinger. It sends a heart-beat when the timer asks and
// nothing else goes.
func (s *Session) writeLoop() {
	var linger *time.Timer
	lingered := false // the last wait ran out with nothing to write
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		beat := s.beatDue.Swap(false)
		s.mu.Lock()
		items := s.queue
		s.queue, s.spare = s.spare, nil
		s.queueBytes = 0
		closing, code := s.closing, s.closeCode
		if s.waiting {
			close(s.drained)
			s.drained, s.waiting = nil, false
		}
		if len(items) == 0 && !beat && !closing {
			if lingered || s.cfg.WriterLinger <= 0 {
				// Cleared under s.mu: whoever queues a frame after this
				// finds no writer and starts one.
				s.writing.Store(false)
				s.mu.Unlock()
				// A heart-beat is asked for without s.mu: one asked for
				// while this writer was leaving found it still running.
				if s.beatDue.Load() {
					s.signal()
				}
				return
			}
			s.mu.Unlock()
			if linger == nil {
				linger = time.NewTimer(s.cfg.WriterLinger)
			} else {
				linger.Reset(s.cfg.WriterLinger)
			}
			select {
			case <-s.wake:
				linger.Stop()
			case <-linger.C:
				lingered = true
			}
			continue
		}
		lingered = false
		s.mu.Unlock()

		var err error
		if len(items) > 0 {
			err = s.writeItems(items)
			clear(items)
			s.mu.Lock()
			if s.spare == nil {
				s.spare = items[:0]
			}
			s.mu.Unlock()
		} else if !closing {
			err = s.write(websocket.MessageText, []byte{'\n'})
		}
		if err != nil || closing {
			// writing stays set: no writer starts after this one.
			if err != nil || code == 0 {
				_ = s.conn.CloseNow()
			} else {
				_ = s.conn.Close(code, "")
			}
			close(s.writerDone)
			// A parked read loop hears of the close only if woken: the
			// kernel drops a closed socket from the poller.
			s.unpark()
			return
		}
		if t := s.heartBeat.Load(); t != nil {
			t.Reset(time.Duration(s.sendEvery.Load()))
		}
		if s.cfg.WriteCoalesce > 0 {
			time.Sleep(s.cfg.WriteCoalesce)
		}
	}
}

func (s *Session) writeItems(items []outItem) error {
	bp := s.srv.bufs.Get().(*[]byte)
	buf := (*bp)[:0]
	binary := false
	flush := func() error {
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		err := s.write(typ, buf)
		buf, binary = buf[:0], false
		return err
	}
	var err error
	var nMsg, nReceipt, nError, nConnected int
	for i := range items {
		it := &items[i]
		if it.raw != nil {
			buf = append(buf, it.raw...)
			switch rawCommand(it.raw) {
			case CmdReceipt:
				nReceipt++
			case CmdError:
				nError++
			case CmdConnected:
				nConnected++
			}
		} else {
			buf = s.appendMessage(buf, it)
			binary = binary || it.msg.binary
			nMsg++
		}
		if len(buf) >= maxWSMessage {
			if err = flush(); err != nil {
				break
			}
		}
	}
	if err == nil && len(buf) > 0 {
		err = flush()
	}
	// Counted once per burst, not per frame, to keep the write path cheap;
	// a failed write ends the session, and its burst is not counted.
	for _, c := range [...]struct {
		cmd string
		n   int
	}{{CmdMessage, nMsg}, {CmdReceipt, nReceipt}, {CmdError, nError}, {CmdConnected, nConnected}} {
		if c.n > 0 && err == nil {
			s.cfg.Observer.FramesOut(c.cmd, c.n)
		}
	}
	if cap(buf) <= 4*maxWSMessage {
		*bp = buf[:0]
		s.srv.bufs.Put(bp)
	}
	return err
}

// write sends one WebSocket message within WriteTimeout. One timer per
// session bounds every write (a context per write cost an allocation
// and a timer each): if it fires, the connection is cut, which fails the
// write.
func (s *Session) write(typ websocket.MessageType, b []byte) error {
	if s.writeDeadline == nil {
		s.writeDeadline = time.AfterFunc(s.cfg.WriteTimeout, func() { _ = s.conn.CloseNow() })
	} else {
		s.writeDeadline.Reset(s.cfg.WriteTimeout)
	}
	s.out.begin()
	err := s.conn.Write(context.Background(), typ, b)
	if ferr := s.out.end(err == nil); err == nil {
		err = ferr
	}
	s.writeDeadline.Stop()
	return err
}

func (s *Session) appendMessage(buf []byte, it *outItem) []byte {
	buf = append(buf, "MESSAGE\n"...)
	buf = append(buf, it.sub.hdr...)
	buf = append(buf, "message-id:"...)
	buf = strconv.AppendUint(buf, it.id, 10)
	buf = append(buf, '\n')
	if it.sub.Ack != AckAuto && s.version == V12 {
		buf = append(buf, "ack:"...)
		buf = strconv.AppendUint(buf, it.id, 10)
		buf = append(buf, '\n')
	}
	for _, h := range it.extra {
		buf = AppendHeader(buf, s.version, h.Name, h.Value)
	}
	return append(buf, it.msg.encoded(s.version)...)
}
