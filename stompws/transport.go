// The transport: the WebSocket upgrade (hijacker), the connection's
// reader and writer, chatd's own framing of data messages (wsFrame), and
// the idle wait and ping reads beneath the WebSocket reader.
//
// It relies on coder/websocket's unexported behaviour in these ways, each
// pinned by a test in wsinternals_test.go that fails, naming it, when an
// upgrade changes it:
//
//   - (a) after Accept it reads the connection only through the
//     *bufio.Reader Hijack returned, re-pointed at the net.Conn returned
//     with it, so connReader sees every byte and idleWaiter.buffered all
//     it holds (TestCoderReadsThroughOurReaders);
//   - (b) it writes each control frame (pong, close) through the
//     bufio.Writer Hijack returned, whole, in one Write to connWriter
//     (TestCoderWritesControlFramesWhole);
//   - (c) a message read to its end leaves it holding no part of the next
//     frame, so answerPing may take a ping from the socket
//     (TestCoderHoldsNothingBetweenMessages);
//   - (d) Close's handshake reads the client's input itself, through our
//     readers, up to the client's close frame
//     (TestCoderCloseReadsThroughOurReaders);
//   - (e) CloseNow closes the net.Conn Hijack returned at once, and a
//     write of ours stuck on it fails (TestCoderCloseNowCutsOurWrites).

package stompws

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
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
	// piece, which connWriter keeps apart from chatd's own frames
	// (assumption (b)).
	connWriteBuf = 256
	// connReadChunk is what connReader reads from the socket at a time.
	connReadChunk = 4 << 10
)

// hijacker gives coder/websocket's Accept a connection with small
// buffers, and keeps what the session needs of it: the connection and the
// readers for the idle wait, the writer for frames. Read buffers come from
// the server's pool of chunks (*[]byte of connReadChunk).
type hijacker struct {
	http.ResponseWriter
	chunks *sync.Pool
	conn   net.Conn
	br     *bufio.Reader
	in     *connReader
	out    *connWriter
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
		b, _ := brw.Peek(n)
		h.in.pre = bytes.Clone(b)
	}
	h.out = &connWriter{conn: c}
	if sc, ok := c.(syscall.Conn); ok && canWriteNow {
		h.out.rc, _ = sc.SyscallConn()
	}
	h.conn, h.br = c, bufio.NewReaderSize(h.in, connReadBuf)
	// coder/websocket re-points the reader at the connection it is given
	// (after what is buffered): that connection reads through connReader
	// (assumption (a)).
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
// once the loop has stopped: assumption (d)) reads it.
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

// connWriter is a session's socket for writing. chatd frames its own data
// messages (wsFrame) and writes each with one write(2); coder/websocket
// writes only its control frames (pongs, the close frame) through Write,
// each whole, as its bufio writer holds one entirely (connWriteBuf;
// assumption (b)). mu is
// held for every frame until all of it is written, so frames never
// interleave, even when one is finished on another goroutine
// (Session.finishWrite).
type connWriter struct {
	conn net.Conn
	rc   syscall.RawConn // nil: no non-blocking writes (writeNow)
	mu   sync.Mutex
}

func (w *connWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn.Write(p)
}

// writeFrame writes a whole frame, blocking until it is written or the
// connection fails.
func (w *connWriter) writeFrame(b []byte) error {
	_, err := w.Write(b)
	return err
}

// writeNow makes one non-blocking write(2) of b; the caller holds mu. It
// returns how much the socket took: 0 when its buffer is full.
func (w *connWriter) writeNow(b []byte) (int, error) {
	var n int
	var werr error
	err := w.rc.Write(func(fd uintptr) bool {
		n, werr = writeNonblock(fd, b)
		return true // never wait: what is left goes to finishWrite
	})
	if err != nil {
		return 0, err
	}
	return n, werr
}

// wsHeaderMax is the longest header of a frame from the server: 2 bytes
// and an 8-byte length; server frames are not masked.
const wsHeaderMax = 10

// wsFrame makes buf, which holds wsHeaderMax bytes of room and then a
// payload, into one final, unmasked WebSocket frame, and returns it: the
// header is written just before the payload.
func wsFrame(buf []byte, bin bool) []byte {
	n := len(buf) - wsHeaderMax
	start := wsHeaderMax - 2
	switch {
	case n <= 125:
		buf[start+1] = byte(n)
	case n <= 0xFFFF:
		start = wsHeaderMax - 4
		buf[start+1] = 126
		binary.BigEndian.PutUint16(buf[start+2:], uint16(n))
	default:
		start = 0
		buf[1] = 127
		binary.BigEndian.PutUint64(buf[2:], uint64(n))
	}
	op := byte(0x1) // text
	if bin {
		op = 0x2
	}
	buf[start] = 0x80 | op // FIN: chatd never fragments
	return buf[start:]
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

// wait returns once the socket is readable (or has failed: the read that
// follows reports it). The caller has checked that nothing is buffered.
func (w *idleWaiter) wait() error {
	return w.rc.Read(func(fd uintptr) bool { return peekReady(fd, w.peek[:]) })
}

// waitFor is wait for at most d: ready is false if nothing came.
func (w *idleWaiter) waitFor(d time.Duration) (ready bool, err error) {
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

// maxPing is the largest ping frame takePing takes: a masked client frame
// with up to 125 bytes of payload.
const maxPing = 6 + 125

// takePing takes a whole ping frame from the front of the socket's input,
// if one is there, into buf, and returns its payload unmasked, at buf[6:]
// (so that a pong's header fits before it). ok false:
// the input starts with anything else, or not all of it has come; the
// WebSocket reader then sees to it (and rejects what is invalid). Only
// the read loop calls it, between messages, with nothing buffered above
// the socket (where coder/websocket then holds no part of a frame:
// assumption (c)), after a wait whose peek saw the input's first byte:
// unless that is a ping's, it costs no syscall.
func (w *idleWaiter) takePing(buf *[maxPing]byte) (payload []byte, ok bool, err error) {
	if w.peek[0] != 0x89 {
		return nil, false, nil
	}
	w.peek[0] = 0
	var n int
	if err := w.rc.Read(func(fd uintptr) bool { n = recvNonblock(fd, buf[:], true); return true }); err != nil {
		return nil, false, nil // the reader reports it
	}
	if n < 6 || buf[0] != 0x89 || buf[1]&0x80 == 0 {
		return nil, false, nil
	}
	l := int(buf[1] & 0x7f)
	if l > 125 || n < 6+l {
		return nil, false, nil
	}
	var got int
	if err := w.rc.Read(func(fd uintptr) bool { got = recvNonblock(fd, buf[:6+l], false); return true }); err != nil {
		return nil, false, err
	}
	if got != 6+l {
		// The bytes were there and nothing else reads them: a lost byte
		// would put the stream out of step, so the session ends.
		return nil, false, fmt.Errorf("ping: read %d of %d bytes", got, 6+l)
	}
	p := buf[6 : 6+l]
	for i := range p {
		p[i] ^= buf[2+i%4]
	}
	return p, true, nil
}
