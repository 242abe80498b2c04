package stompws

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
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
// so that it never holds back whoever delivers to it. A session with
// nothing else to write gets the frame at once, written on the caller's
// goroutine with one non-blocking write (writeInline).
func (sub *Subscription) Deliver(m *Message, extra ...Header) bool {
	return sub.deliver(m, extra, true)
}

// DeliverQueued is Deliver, except that the session's writer goroutine
// always writes the frame. It is for one message to many subscriptions:
// their writes then run in parallel, on as many cores as there are, rather
// than one after another on the caller's goroutine.
func (sub *Subscription) DeliverQueued(m *Message, extra ...Header) bool {
	return sub.deliver(m, extra, false)
}

func (sub *Subscription) deliver(m *Message, extra []Header, inline bool) bool {
	s := sub.s
	s.mu.Lock()
	ok := s.deliverLocked(sub, m, extra)
	s.mu.Unlock()
	// Also when it failed: a slow consumer's ERROR must go out.
	if inline {
		s.flush()
	} else {
		s.signal()
	}
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

// writeLoop is the session's writer while it runs (signal starts it; a
// frame that finds no writer and a quiet session is written inline by
// writeInline instead): it takes everything queued at once and writes it
// as few WebSocket messages, so a burst costs one write, then waits
// WriteCoalesce so that what arrives meanwhile shares the next write, and
// exits when nothing has come for WriterLinger. It sends a heart-beat
// when the timer asks and nothing else goes.
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
			var hb [wsHeaderMax + 1]byte
			hb[wsHeaderMax] = '\n'
			err = s.write(wsFrame(hb[:], false))
		}
		if err != nil || closing {
			// writing stays set: no writer starts after this one.
			if err != nil || code == 0 {
				_ = s.conn.CloseNow()
			} else {
				// The handshake reads the client's input: the read
				// loop no longer does.
				s.rmu.Lock()
				s.handedOver = true
				s.rmu.Unlock()
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
	buf := (*bp)[:wsHeaderMax]
	bin := false
	var err error
	var n frameCounts
	for i := range items {
		buf = s.appendItem(buf, &items[i], &n)
		bin = bin || items[i].msg != nil && items[i].msg.binary
		if len(buf)-wsHeaderMax >= maxWSMessage {
			if err = s.write(wsFrame(buf, bin)); err != nil {
				break
			}
			buf, bin = buf[:wsHeaderMax], false
		}
	}
	if err == nil && len(buf) > wsHeaderMax {
		err = s.write(wsFrame(buf, bin))
	}
	// A failed write ends the session, and its burst is not counted.
	if err == nil {
		n.report(s.cfg.Observer)
	}
	s.putBuf(bp, buf)
	return err
}

// frameCounts counts a burst's frames, reported once per burst rather
// than per frame to keep the write path cheap.
type frameCounts struct{ msg, receipt, err, connected int }

func (n *frameCounts) report(o Observer) {
	for _, c := range [...]struct {
		cmd string
		n   int
	}{{CmdMessage, n.msg}, {CmdReceipt, n.receipt}, {CmdError, n.err}, {CmdConnected, n.connected}} {
		if c.n > 0 {
			o.FramesOut(c.cmd, c.n)
		}
	}
}

// appendItem appends the frame of a queued item, counting it.
func (s *Session) appendItem(buf []byte, it *outItem, n *frameCounts) []byte {
	if it.raw == nil {
		n.msg++
		return s.appendMessage(buf, it)
	}
	switch rawCommand(it.raw) {
	case CmdReceipt:
		n.receipt++
	case CmdError:
		n.err++
	case CmdConnected:
		n.connected++
	}
	return append(buf, it.raw...)
}

// putBuf returns a write buffer to the pool, unless a huge burst grew it.
func (s *Session) putBuf(bp *[]byte, buf []byte) {
	if cap(buf) <= 4*maxWSMessage {
		*bp = buf[:0]
		s.srv.bufs.Put(bp)
	}
}

// write sends one frame (wsFrame) within WriteTimeout. One timer per
// session bounds every write (a context per write cost an allocation
// and a timer each): if it fires, the connection is cut, which fails the
// write.
func (s *Session) write(frame []byte) error {
	if s.writeDeadline == nil {
		s.writeDeadline = time.AfterFunc(s.cfg.WriteTimeout, func() { _ = s.conn.CloseNow() })
	} else {
		s.writeDeadline.Reset(s.cfg.WriteTimeout)
	}
	err := s.out.writeFrame(frame)
	s.writeDeadline.Stop()
	s.lastWrite.Store(time.Now().UnixNano())
	return err
}

// inlineMax bounds what a deliverer writes itself (writeInline); more
// goes to the writer, which splits it into several messages if need be.
const inlineMax = 64 << 10

// flush sees to what is queued: written at once on the caller's
// goroutine when it can be (writeInline), else by the writer.
func (s *Session) flush() {
	if !s.writeInline() {
		s.signal()
	}
}

// writeInline writes the queue on the caller's goroutine, with one
// non-blocking write(2), when no writer runs and the session has written
// nothing for WriteCoalesce. That is most deliveries of chat traffic, a
// frame per session now and then: each then costs a syscall, not also a
// goroutine wake-up, a run-queue wait and timer work. Closer frames go to
// the writer, which batches them. A heart-beat that is due goes the same
// way (an EOL, when no frame is queued). What the socket does not take at
// once is finished by finishWrite, so a slow client never blocks the
// caller.
// False: nothing was taken, and the writer must see to the queue.
func (s *Session) writeInline() bool {
	if s.out == nil || s.out.rc == nil || s.writing.Load() {
		return false
	}
	now := time.Now().UnixNano()
	if c := int64(s.cfg.WriteCoalesce); c > 0 && now-s.lastWrite.Load() < c {
		return false
	}
	s.mu.Lock()
	// The socket's lock is taken under s.mu, so a writer that takes the
	// queue after this writes after these frames.
	if s.writing.Load() || s.closing || s.waiting || len(s.queue) == 0 && !s.beatDue.Load() ||
		s.queueBytes > inlineMax || !s.out.mu.TryLock() {
		s.mu.Unlock()
		return false
	}
	items := s.queue
	s.queue, s.spare = s.spare, nil
	s.queueBytes = 0
	s.mu.Unlock()
	// Any frame will do for a heart-beat; with none, it is an EOL.
	s.beatDue.Store(false)

	bp := s.srv.bufs.Get().(*[]byte)
	buf := (*bp)[:wsHeaderMax]
	bin := false
	var cnt frameCounts
	for i := range items {
		buf = s.appendItem(buf, &items[i], &cnt)
		bin = bin || items[i].msg != nil && items[i].msg.binary
	}
	if len(items) == 0 {
		buf = append(buf, '\n')
	}
	clear(items)
	s.mu.Lock()
	if s.spare == nil {
		s.spare = items[:0]
	}
	s.mu.Unlock()

	frame := wsFrame(buf, bin)
	n, err := s.out.writeNow(frame)
	switch {
	case err != nil:
		s.out.mu.Unlock()
		s.putBuf(bp, buf)
		s.writeFailed()
		return true
	case n < len(frame):
		go s.finishWrite(bp, buf, frame[n:])
	default:
		s.out.mu.Unlock()
		s.lastWrite.Store(time.Now().UnixNano())
		s.putBuf(bp, buf)
	}
	cnt.report(s.cfg.Observer)
	if t := s.heartBeat.Load(); t != nil {
		t.Reset(time.Duration(s.sendEvery.Load()))
	}
	return true
}

// finishWrite writes the rest of a frame that writeInline began, holding
// the socket's lock that writeInline took, within WriteTimeout.
func (s *Session) finishWrite(bp *[]byte, buf, rest []byte) {
	t := time.AfterFunc(s.cfg.WriteTimeout, func() { _ = s.conn.CloseNow() })
	_, err := s.out.conn.Write(rest)
	t.Stop()
	s.out.mu.Unlock()
	s.lastWrite.Store(time.Now().UnixNano())
	s.putBuf(bp, buf)
	if err != nil {
		s.writeFailed()
	}
}

// writeFailed cuts a connection whose write failed. The read loop then
// ends the session; a parked one hears of it only if woken, as the kernel
// drops a closed socket from the poller.
func (s *Session) writeFailed() {
	_ = s.conn.CloseNow()
	s.unpark()
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
