// The session's writer: the outbound queue drained into WebSocket
// messages, by a writer goroutine that batches bursts, or
// inline by whoever queued a frame when the session is quiet.

package stompws

import (
	"sync"
	"time"

	"github.com/chatd/chatd/internal/jsonstr"
)

// enqueueRaw queues a frame encoded already (CONNECTED) and sees to it.
func (s *Session) enqueueRaw(b []byte) {
	s.mu.Lock()
	s.pushLocked(outItem{raw: b})
	s.mu.Unlock()
	s.flush()
}

// spareMax bounds the queue a session keeps for its next burst: a burst
// larger than that (a replay, a busy room) allocates its own, so that a
// session does not hold its largest burst's queue for good.
const spareMax = 256

// keepSpare keeps items, written, as the queue's next buffer, if it has
// none and items is not larger than spareMax. The caller holds s.mu.
func (s *Session) keepSpare(items []outItem) {
	if s.spare == nil && cap(items) <= spareMax {
		s.spare = items[:0]
	}
}

// pushLocked queues an item; the caller holds s.mu and sees to it.
func (s *Session) pushLocked(it outItem) {
	s.queue = append(s.queue, it)
	s.queueBytes += len(it.raw)
}

// signal makes sure a writer will look at the queue, starting one unless
// one runs: a running writer looks again before it exits (it takes the
// queue, or clears writing, under s.mu). The writer exits when it finds
// nothing to do, so an idle session holds no writer goroutine.
func (s *Session) signal() {
	if s.writing.CompareAndSwap(false, true) {
		go s.writeLoop()
	}
}

// maxWSMessage caps how many queued frames are written as one WebSocket
// message. Batching waiting frames saves a syscall and a WebSocket header
// each; STOMP clients split frames on NUL, whatever the message boundaries.
const maxWSMessage = 256 << 10

// writeLoop is the session's writer while it runs (signal starts it;
// most writes need none: Flush and writeInline write on the caller's
// goroutine): it takes everything queued at once and writes it as few
// WebSocket messages, so a burst costs one write, then waits
// WriteCoalesce so that what arrives meanwhile shares the next write, and
// exits when that brought nothing. It does not linger longer: while it
// runs, flushes hand it their writes rather than write inline, at the
// cost of a wake-up and a sleep each. It sends a heart-beat when the
// timer asks and nothing else goes.
func (s *Session) writeLoop() {
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

		var err error
		if len(items) > 0 {
			err = s.writeItems(items)
			clear(items)
			s.mu.Lock()
			s.keepSpare(items)
			s.mu.Unlock()
		} else if !closing {
			var hb [wsHeaderMax + 8]byte
			err = s.write(s.appendBeat(hb[:wsHeaderMax]), false)
		}
		if err != nil || closing {
			// writing stays set: no writer starts after this one.
			if err != nil || code == 0 {
				_ = s.link.closeNow()
			} else {
				// The handshake reads the client's input: the read
				// loop no longer does.
				s.rmu.Lock()
				s.handedOver = true
				s.rmu.Unlock()
				_ = s.link.close(code)
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
	buf := s.beginMessage((*bp)[:wsHeaderMax])
	empty := len(buf)
	bin := false
	var err error
	var n frameCounts
	for i := range items {
		buf = s.appendItem(buf, &items[i], &n)
		bin = bin || items[i].msg != nil && items[i].msg.binary
		if len(buf)-wsHeaderMax >= maxWSMessage {
			if err = s.write(s.endMessage(buf, &bin), bin); err != nil {
				break
			}
			buf, bin = s.beginMessage(buf[:wsHeaderMax]), false
		}
	}
	if err == nil && len(buf) > empty {
		err = s.write(s.endMessage(buf, &bin), bin)
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
	if s.sockjsBeat > 0 {
		return jsonstr.Append(buf, it.raw)
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

// write sends buf[wsHeaderMax:] as one message (link.write), watched by
// the writer's stallWatch (one per session: a context per write cost an
// allocation and a timer each). A cut fails the write (transport.go,
// assumption (e)).
func (s *Session) write(buf []byte, bin bool) error {
	s.watchWrite(&s.writeWatch)
	err := s.link.write(buf, bin)
	s.writeWatch.done()
	s.lastWrite.Store(time.Now().UnixNano())
	return err
}

// inlineMax bounds what a deliverer writes itself (writeInline); more
// goes to the writer, which splits it into several messages if need be.
const inlineMax = 64 << 10

// Flush writes what is queued at once, on the caller's goroutine, unless
// the session's writer runs (then the writer does): the caller gathered
// a burst already.
func (s *Session) Flush() {
	if !s.writeInline(false) {
		s.signal()
	}
}

// flush sees to a frame or two queued on their own (a RECEIPT, a
// heart-beat, one delivery): written at once as Flush does, unless the
// session wrote within WriteCoalesce; then the writer writes, batching
// what comes meanwhile.
func (s *Session) flush() {
	if !s.writeInline(true) {
		s.signal()
	}
}

// writeInline writes the queue on the caller's goroutine, with one
// non-blocking write(2), when no writer runs and, with coalesce, the
// session has written nothing for WriteCoalesce. That is most writes: a
// room's burst flushed once (Flush), chat traffic's frame per session now
// and then. Each then costs a syscall, not also a goroutine wake-up, a
// run-queue wait and timer work. A lone frame close behind the last write
// goes to the writer, which batches. A heart-beat that is due goes the same
// way (an EOL, when no frame is queued). What the socket does not take at
// once is finished by finishWrite, so a slow client never blocks the
// caller.
// False: nothing was taken, and the writer must see to the queue.
func (s *Session) writeInline(coalesce bool) bool {
	if s.out == nil || s.out.rc == nil || s.writing.Load() {
		return false
	}
	if c := int64(s.cfg.WriteCoalesce); coalesce && c > 0 && time.Now().UnixNano()-s.lastWrite.Load() < c {
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
	if len(items) == 0 {
		buf = s.appendBeat(buf)
	} else {
		buf = s.beginMessage(buf)
		for i := range items {
			buf = s.appendItem(buf, &items[i], &cnt)
			bin = bin || items[i].msg != nil && items[i].msg.binary
		}
		buf = s.endMessage(buf, &bin)
	}
	clear(items)
	s.mu.Lock()
	s.keepSpare(items)
	s.mu.Unlock()

	wf := wsFrame(buf, bin)
	n, err := s.out.writeNow(wf)
	switch {
	case err != nil:
		s.out.mu.Unlock()
		s.putBuf(bp, buf)
		s.writeFailed()
		return true
	case n < len(wf):
		go s.finishWrite(bp, buf, wf[n:])
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
// the socket's lock that writeInline took, watched as the writer's writes
// are.
func (s *Session) finishWrite(bp *[]byte, buf, rest []byte) {
	var w stallWatch
	s.watchWrite(&w)
	_, err := s.out.conn.Write(rest)
	w.done()
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
	_ = s.link.closeNow()
	s.unpark()
}

// stallWatch watches one write to the client at a time: the writer's
// (Session.write) or a finisher's (finishWrite). Its timer runs
// checkStall once the write has waited WriteTimeout, and again for as
// long as it waits. mu is never held across the write itself.
type stallWatch struct {
	mu    sync.Mutex
	timer *time.Timer
	start time.Time // when the write under way began; zero: none is
}

// watchWrite starts watching a write that is about to begin.
func (s *Session) watchWrite(w *stallWatch) {
	w.mu.Lock()
	w.start = time.Now()
	if w.timer == nil {
		w.timer = time.AfterFunc(s.cfg.WriteTimeout, func() { s.checkStall(w) })
	} else {
		w.timer.Reset(s.cfg.WriteTimeout)
	}
	w.mu.Unlock()
}

// done ends the watch of a write that has returned.
func (w *stallWatch) done() {
	w.mu.Lock()
	w.start = time.Time{}
	w.timer.Stop()
	w.mu.Unlock()
}

// checkStall decides about a write the client has not taken for
// WriteTimeout. A client that has sent something (a frame, a heart-beat)
// within WriteTimeout, or within the agreed heart-beat interval plus
// grace if that is longer, is alive: its full socket is back-pressure (a
// replay paced by a client that reads slowly, or pauses), and the write
// waits on, up to WriteStallMax in all. A client that neither reads nor
// sends for that long, or a write that waits past the bound, is cut.
// Once the session is closing, its writes get no more than WriteTimeout:
// a shutdown must not wait on a client that has stopped reading.
func (s *Session) checkStall(w *stallWatch) {
	w.mu.Lock()
	if w.start.IsZero() {
		w.mu.Unlock()
		return // the write returned meanwhile
	}
	now := time.Now()
	stalled := now.Sub(w.start)
	if stalled < s.cfg.WriteTimeout {
		// A firing meant for an earlier write: watchWrite has set the
		// timer for this one.
		w.mu.Unlock()
		return
	}
	alive := max(s.cfg.WriteTimeout, time.Duration(s.recvLimit.Load()))
	quiet := now.Sub(time.Unix(0, s.lastRead.Load()))
	limit := max(s.cfg.WriteStallMax, s.cfg.WriteTimeout)
	if s.isClosing() {
		limit = s.cfg.WriteTimeout
	}
	var reason, msg string
	switch {
	case quiet >= alive:
		reason = CutWriteTimeout
		msg = "write timeout: the client did not take a write for " + stalled.Round(time.Millisecond).String() +
			" and sent nothing for " + quiet.Round(time.Millisecond).String()
	case stalled >= limit:
		reason = CutWriteStall
		msg = "write stalled: the client did not take a write for " + stalled.Round(time.Millisecond).String()
	default:
		// Look again when the client would count as silent, or the bound
		// is reached, and at least every WriteTimeout, so that a session
		// that starts closing meanwhile is cut in time.
		w.timer.Reset(min(alive-quiet, limit-stalled, s.cfg.WriteTimeout))
		w.mu.Unlock()
		return
	}
	w.start = time.Time{}
	w.mu.Unlock()
	s.cut(reason, msg)
}

// cut ends the connection at once, without a close handshake: the client
// has stopped taking what is written, or its close did not end in time.
// reason is one of the Cut constants; msg says why, for the log. No ERROR
// can go first: a stalled write holds the socket, full, in the middle of
// its frame, and a closing session has had its ERROR or close queued
// already. The log line and the Observer are what tell.
func (s *Session) cut(reason, msg string) {
	select {
	case <-s.writerDone:
		return // the writer has closed the connection: nothing is left to cut
	default:
	}
	if s.cutDone.Swap(true) {
		return
	}
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.stop)
	}
	s.mu.Unlock()
	log := s.srv.log.With("session", s.id)
	if s.connected.Load() {
		log = s.log // with the user
	}
	log.Info("session cut", "cause", reason, "reason", msg)
	s.cfg.Observer.SessionCut(reason)
	_ = s.link.closeNow()
	// A parked read loop hears of the close only if woken.
	s.unpark()
}
