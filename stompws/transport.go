package stompws

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// Buffer sizes of a session's hijacked connection. net/http hands over a
// 4 KiB reader and writer, which an idle connection would keep for life
// (8 KiB of its memory). Chat frames are small and the writer sends each
// batch as one WebSocket message, so a batch above connWriteBuf costs one
// more write syscall, and a burst of client frames above connReadBuf one
// more read.
const (
	connReadBuf  = 1 << 10
	connWriteBuf = 2 << 10
)

// hijacker gives coder/websocket's Accept a connection with smaller
// buffers than net/http's, and keeps the connection and reader for the
// session's idle wait (awaitInput).
type hijacker struct {
	http.ResponseWriter
	conn net.Conn
	br   *bufio.Reader
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
	// Bytes the client sent after its handshake are already in net/http's
	// reader; they move to ours.
	var src io.Reader = c
	size, n := connReadBuf, brw.Reader.Buffered()
	if n > 0 {
		b, _ := brw.Reader.Peek(n)
		src = io.MultiReader(bytes.NewReader(b), c)
		size = max(size, n)
	}
	br := bufio.NewReaderSize(src, size)
	if n > 0 {
		if _, err := br.Peek(n); err != nil {
			_ = c.Close()
			return nil, nil, err
		}
	}
	h.conn, h.br = c, br
	return c, bufio.NewReadWriter(br, bufio.NewWriterSize(c, connWriteBuf)), nil
}

// idleWaiter waits, outside the WebSocket reader, until a session's
// client sends something: a goroutine blocked deep inside that reader
// keeps a stack of several KiB. A session quiet for parkAfter leaves the
// wait to the server's poller and holds no goroutine at all.
type idleWaiter struct {
	conn net.Conn
	br   *bufio.Reader
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
	return &idleWaiter{conn: h.conn, br: h.br, rc: rc}
}

// wait returns once input is buffered or the socket is readable (or has
// failed: the read that follows reports it).
func (w *idleWaiter) wait() error {
	if w.br.Buffered() > 0 {
		return nil
	}
	return w.rc.Read(func(fd uintptr) bool { return peekReady(fd, w.peek[:]) })
}

// waitFor is wait for at most d: ready is false if nothing came.
func (w *idleWaiter) waitFor(d time.Duration) (ready bool, err error) {
	if w.br.Buffered() > 0 {
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
