package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// wsConn is a client WebSocket read as one byte stream, whatever its
// message boundaries: what the STOMP and the NATS clients share. Both
// protocols are streams whose frames may span WebSocket messages or share
// one (nats-server packs a whole flush into one message).
type wsConn struct {
	ws        *websocket.Conn
	rbuf      []byte
	roff      int       // start of unparsed data in rbuf
	msg       io.Reader // the WebSocket message being read, nil between messages
	lastWrite atomic.Int64
	hb        atomic.Pointer[time.Timer] // set once; read by the timer's own callback
	closing   atomic.Bool                // we are closing it: a read error is no drop
}

// loadConn is one connection of a run, STOMP or NATS, as the runner and
// the publishers use it.
type loadConn interface {
	write(b []byte) error // one frame or protocol message, as one WebSocket message
	close()
	closedByUs() bool
}

// compact moves unparsed data to the start of the read buffer and makes
// room for at least 512 more bytes.
func (c *wsConn) compact(limit string) error {
	if c.roff > 0 {
		n := copy(c.rbuf, c.rbuf[c.roff:])
		c.rbuf, c.roff = c.rbuf[:n], 0
	}
	if cap(c.rbuf)-len(c.rbuf) < 512 {
		if cap(c.rbuf) >= maxReadBuffer {
			return fmt.Errorf("%s larger than %d bytes", limit, maxReadBuffer)
		}
		nb := make([]byte, len(c.rbuf), 2*cap(c.rbuf)+4096)
		copy(nb, c.rbuf)
		c.rbuf = nb
	}
	return nil
}

// fillStream reads more of the current (or next) WebSocket message into
// the read buffer.
func (c *wsConn) fillStream() error {
	if err := c.compact("frame"); err != nil {
		return err
	}
	for {
		if c.msg == nil {
			_, r, err := c.ws.Reader(context.Background())
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
			c.msg = r
		}
		n, err := c.msg.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
		c.rbuf = c.rbuf[:len(c.rbuf)+n]
		if errors.Is(err, io.EOF) {
			c.msg = nil
			err = nil
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// writeMessage sends b as one WebSocket message. Writes are safe from any
// goroutine. No context: a write blocked on a stuck server ends when the
// run closes the socket.
func (c *wsConn) writeMessage(typ websocket.MessageType, b []byte) error {
	c.lastWrite.Store(time.Now().UnixNano())
	if err := c.ws.Write(context.Background(), typ, b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// startHeartBeat calls beat whenever nothing was written for every.
func (c *wsConn) startHeartBeat(every time.Duration, beat func() error) {
	c.lastWrite.Store(time.Now().UnixNano())
	tick := func() {
		if c.closing.Load() {
			return
		}
		idle := time.Since(time.Unix(0, c.lastWrite.Load()))
		if idle >= every-every/10 {
			if beat() != nil {
				return
			}
			idle = 0
		}
		c.hb.Load().Reset(every - idle)
	}
	t := time.AfterFunc(time.Hour, tick)
	c.hb.Store(t)
	t.Reset(every)
}

// close ends the connection at once (no goodbye: a load run ends many
// connections and waits for none of them).
func (c *wsConn) close() {
	c.closing.Store(true)
	if t := c.hb.Load(); t != nil {
		t.Stop()
	}
	_ = c.ws.CloseNow()
}

func (c *wsConn) closedByUs() bool { return c.closing.Load() }
