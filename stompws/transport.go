package stompws

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

// Buffer sizes of the bufio pair coder/websocket reads and writes a
// session's connection through, which it keeps for the connection's life.
// (net/http hands over 4 KiB each: 8 KiB of every idle connection.) They
// only stage frame headers and control frames; the data passes on to
// connReader and connWriter, whose buffers come from pools and are held
// only while bytes wait in them.
const (
	// connReadBuf holds a frame header (at most 14 bytes) and whatever
	// follows it in one read from connReader.
	connReadBuf = 128
	// connWriteBuf holds a whole control frame (a pong or a close frame:
	// at most 2 + 125 bytes), so that coder/websocket writes each in one
	// piece outside the session's batches (connWriter).
	connWriteBuf = 256
	// connReadChunk is what connReader reads from the socket at a time.
	connReadChunk = 4 << 10
)

// hijacker gives coder/websocket's Accept a connection with small
// buffers, and keeps what the session needs of it: the connection and the
// readers for the idle wait, the writer for batches. Its buffers come from
// the server's pools: chunks (*[]byte of connReadChunk) for reads, bufs
// (the write batches' buffers) for writes.
type hijacker struct {
	http.ResponseWriter
	chunks, bufs *sync.Pool
	conn         net.Conn
	br           *bufio.Reader
	in           *connReader
	out          *connWriter
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("stompws: the connection cannot be hijacked")
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.in = &connReader{conn: c, pool: h.chunks}
	// Bytes the client sent after its handshake are already in net/http's
	// reader; they move to ours.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		h.in.pre = bytes.Clone(b)
	}
	h.out = &connWriter{conn: c, pool: h.bufs}
	h.conn, h.br = c, bufio.NewReaderSize(h.in, connReadBuf)
	// coder/websocket re-points the reader at the connection it is given
	// (after what is buffered): that connection reads through connReader.
	return readConn{c, h.in}, bufio.NewReadWriter(h.br, bufio.NewWriterSize(h.out, connWriteBuf)), nil
}

// readConn is a connection whose reads go through connReader.
type readConn struct {
	net.Conn
	in *connReader
}

func (c readConn) Read(p []byte) (int, error) { return c.in.Read(p) }

// connReader reads the socket in chunks into a pooled buffer that it holds
// only while unread bytes remain in it: an idle connection keeps none.
// Only the session's read loop (or coder/websocket's close handshake,
// once the loop has stopped) reads it.
type connReader struct {
	conn net.Conn
	pool *sync.Pool
	pre  []byte  // bytes read past the handshake, read first
	buf  *[]byte // pooled; nil while empty
	r, w int     // unread bytes are (*buf)[r:w]
	err  error   // the error of the read that filled buf, reported once it is drained
}

func (c *connReader) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		if c.pre = c.pre[n:]; len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	if c.buf == nil {
		if c.err != nil {
			err := c.err
			c.err = nil
			return 0, err
		}
		if len(p) >= connReadChunk {
			return c.conn.Read(p) // a large read needs no staging
		}
		c.buf = c.pool.Get().(*[]byte)
		n, err := c.conn.Read(*c.buf)
		if n == 0 {
			c.release()
			return 0, err
		}
		c.r, c.w, c.err = 0, n, err
	}
	n := copy(p, (*c.buf)[c.r:c.w])
	if c.r += n; c.r == c.w {
		c.release()
	}
	return n, nil
}

func (c *connReader) release() {
	c.pool.Put(c.buf)
	c.buf = nil
}

// buffered is how many bytes wait in the reader.
func (c *connReader) buffered() int {
	n := len(c.pre)
	if c.buf != nil {
		n += c.w - c.r
	}
	return n
}

// connWriter gathers what coder/websocket writes of a session's batch
// (begin to end), so that the WebSocket message goes out in one write(2)
// however coder splits it, from a pooled buffer held only meanwhile.
// Outside a batch, writes go straight to the socket: these are coder's
// own control frames (pongs, the close frame), each written whole
// (connWriteBuf), so they never split a frame of a batch.
type connWriter struct {
	conn  net.Conn
	pool  *sync.Pool
	mu    sync.Mutex
	batch *[]byte // non-nil between begin and end
}

func (w *connWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.batch != nil {
		*w.batch = append(*w.batch, p...)
		w.mu.Unlock()
		return len(p), nil
	}
	w.mu.Unlock()
	return w.conn.Write(p)
}

// begin starts gathering a batch.
func (w *connWriter) begin() {
	b := w.pool.Get().(*[]byte)
	*b = (*b)[:0]
	w.mu.Lock()
	w.batch = b
	w.mu.Unlock()
}

// end writes the batch gathered since begin, or, if send is false (the
// WebSocket write failed), drops it.
func (w *connWriter) end(send bool) error {
	w.mu.Lock()
	b := w.batch
	w.batch = nil
	w.mu.Unlock()
	var err error
	if send && len(*b) > 0 {
		_, err = w.conn.Write(*b)
	}
	if cap(*b) <= 4*maxWSMessage {
		*b = (*b)[:0]
		w.pool.Put(b)
	}
	return err
}

// idleWaiter waits, outside the WebSocket reader, until a session's
// client sends something: a goroutine blocked deep inside that reader
// keeps a stack of several KiB. A session quiet for parkAfter leaves the
// wait to the server's poller and holds no goroutine at all.
type idleWaiter struct {
	conn net.Conn
	br   *bufio.Reader
	in   *connReader
	rc   syscall.RawConn
	peek [1]byte
}

func newIdleWaiter(h *hijacker) *idleWaiter {
	sc, ok := h.conn.(syscall.Conn)
	if !ok || h.br == nil {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &idleWaiter{conn: h.conn, br: h.br, in: h.in, rc: rc}
}

// buffered: input waits in the session's readers.
func (w *idleWaiter) buffered() bool { return w.br.Buffered() > 0 || w.in.buffered() > 0 }

// wait returns once input is buffered or the socket is readable (or has
// failed: the read that follows reports it).
func (w *idleWaiter) wait() error {
	if w.buffered() {
		return nil
	}
	return w.rc.Read(func(fd uintptr) bool { return peekReady(fd, w.peek[:]) })
}

// waitFor is wait for at most d: ready is false if nothing came.
func (w *idleWaiter) waitFor(d time.Duration) (ready bool, err error) {
	if w.buffered() {
		return true, nil
	}
	if err := w.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return false, err
	}
	err = w.rc.Read(func(fd uintptr) bool { return peekReady(fd, w.peek[:]) })
	if derr := w.conn.SetReadDeadline(time.Time{}); err == nil {
		err = derr
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	return err == nil, err
}
