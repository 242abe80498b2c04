package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
)

// conn is one STOMP session over a raw WebSocket. Frames the server sends
// arrive on frames; the channel closes when the connection ends, after
// an ERROR frame, a read error or the server's heart-beats stopping.
type conn struct {
	nc     net.Conn
	frames chan *frame.Frame
	wmu    sync.Mutex
	err    error // why frames closed; read after it has
	done   chan struct{}
}

// heartBeat is what clients ask for both ways: short, so that a node that
// stops answering (SIGSTOP) is noticed within a few seconds.
const heartBeat = 2 * time.Second

// dial opens a session on the node at addr as user.
func dial(ctx context.Context, addr, user string) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(dctx, "ws://"+addr+"/ws", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	ws.SetReadLimit(16 << 20)
	c := &conn{nc: websocket.NetConn(context.Background(), ws, websocket.MessageText),
		frames: make(chan *frame.Frame, 1024), done: make(chan struct{})}
	hb := strconv.FormatInt(heartBeat.Milliseconds(), 10)
	if err := c.write("CONNECT", nil, "accept-version", "1.2", "host", "/", "login", user, "heart-beat", hb+","+hb); err != nil {
		_ = c.nc.Close()
		return nil, err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	dec := &frame.Decoder{Version: frame.V12}
	buf := make([]byte, 0, 64<<10)
	f, buf, err := readFrame(c.nc, dec, buf)
	if err == nil && f.Command != "CONNECTED" {
		err = fmt.Errorf("server answered %s: %s", f.Command, f.Value("message"))
	}
	if err != nil {
		_ = c.nc.Close()
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	// STOMP 1.2: each side beats at the larger of what one offers and the
	// other asks.
	send, recv := heartBeat, heartBeat
	if sx, sy, ok := strings.Cut(f.Value("heart-beat"), ","); ok {
		if n, err := strconv.Atoi(sy); err == nil && n > 0 {
			send = max(send, time.Duration(n)*time.Millisecond)
		}
		if n, err := strconv.Atoi(sx); err == nil && n > 0 {
			recv = max(recv, time.Duration(n)*time.Millisecond)
		}
	}
	go c.read(dec, buf, 3*recv)
	go c.beat(send)
	return c, nil
}

// read hands frames to c.frames until the connection ends; silence for
// longer than silent ends it too.
func (c *conn) read(dec *frame.Decoder, buf []byte, silent time.Duration) {
	defer close(c.frames)
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(silent))
		f, rest, err := readFrame(c.nc, dec, buf)
		buf = rest
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = errors.New("the server's heart-beats stopped")
			}
			c.err = err
			_ = c.nc.Close()
			return
		}
		c.frames <- f
		if f.Command == "ERROR" {
			c.err = fmt.Errorf("ERROR %s", f.Value("message"))
			_ = c.nc.Close()
			return
		}
	}
}

// readFrame reads until buf holds a whole frame; heart-beat EOLs are
// skipped. It returns the rest of buf.
func readFrame(r io.Reader, dec *frame.Decoder, buf []byte) (*frame.Frame, []byte, error) {
	for {
		for len(buf) > 0 {
			f, n, err := dec.Decode(buf)
			if err != nil {
				return nil, buf, err
			}
			if n == 0 {
				break
			}
			buf = buf[:copy(buf, buf[n:])]
			if f != nil {
				return f, buf, nil
			}
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			return nil, buf, err
		}
	}
}

// beat writes a heart-beat every interval until the connection ends.
func (c *conn) beat(every time.Duration) {
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if c.writeRaw([]byte("\n")) != nil {
				return
			}
		}
	}
}

// write sends one frame; headers are name, value pairs.
func (c *conn) write(command string, body []byte, headers ...string) error {
	hs := make([]frame.Header, 0, len(headers)/2)
	for i := 0; i+1 < len(headers); i += 2 {
		hs = append(hs, frame.Header{Name: headers[i], Value: headers[i+1]})
	}
	return c.writeRaw(frame.AppendFrame(nil, frame.V12, command, hs, body))
}

func (c *conn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(3 * heartBeat))
	_, err := c.nc.Write(b)
	return err
}

// close ends the connection, politely if it still works.
func (c *conn) close() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	_ = c.write("DISCONNECT", nil)
	_ = c.nc.Close()
	for range c.frames {
		// drained, so that read can end
	}
}
