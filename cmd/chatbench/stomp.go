package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// A minimal STOMP 1.2 client for load: it parses frames in place in its
// read buffer, hands MESSAGE bodies to a callback without copying, and
// writes each frame as one WebSocket message. go-stomp over
// websocket.NetConn allocates a frame, a header map and a channel send per
// message, which on this 2-core machine costs the CPU the server needs.

// rawFrame is one received frame; its slices alias the connection's read
// buffer and are valid until the next read.
type rawFrame struct {
	cmd  []byte
	hdr  []byte // the header lines, each ending in '\n' (CRs kept)
	body []byte
}

// errFrame is a malformed frame from the server.
var errFrame = errors.New("malformed STOMP frame")

// nextFrame parses one frame at the start of b. n is how many bytes it
// used: for heart-beat EOLs, n > 0 with an empty frame; for an incomplete
// frame, n == 0.
func nextFrame(b []byte) (f rawFrame, n int, err error) {
	for n < len(b) && (b[n] == '\n' || b[n] == '\r' && n+1 < len(b) && b[n+1] == '\n') {
		if b[n] == '\r' {
			n++
		}
		n++
	}
	if n > 0 {
		return rawFrame{}, n, nil
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return rawFrame{}, 0, nil
	}
	f.cmd = bytes.TrimSuffix(b[:nl], []byte("\r"))
	if len(f.cmd) == 0 {
		return rawFrame{}, 0, errFrame
	}
	for _, c := range f.cmd {
		if c < 'A' || c > 'Z' {
			return rawFrame{}, 0, errFrame
		}
	}
	// Headers end at the first empty line.
	pos := nl + 1
	cl := -1
	for {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 0 {
			return rawFrame{}, 0, nil
		}
		line := bytes.TrimSuffix(b[pos:pos+i], []byte("\r"))
		pos += i + 1
		if len(line) == 0 {
			break
		}
		if cl < 0 && bytes.HasPrefix(line, []byte("content-length:")) {
			v, perr := strconv.Atoi(string(line[len("content-length:"):]))
			if perr != nil || v < 0 {
				return rawFrame{}, 0, errFrame
			}
			cl = v
		}
	}
	f.hdr = b[nl+1 : pos]
	var end int
	if cl >= 0 {
		if len(b)-pos <= cl {
			return rawFrame{}, 0, nil
		}
		end = pos + cl
		if b[end] != 0 {
			return rawFrame{}, 0, errFrame
		}
	} else {
		i := bytes.IndexByte(b[pos:], 0)
		if i < 0 {
			return rawFrame{}, 0, nil
		}
		end = pos + i
	}
	f.body = b[pos:end]
	return f, end + 1, nil
}

// header returns the first value of a header, unescaped (STOMP 1.2).
func (f *rawFrame) header(name string) (string, bool) {
	h := f.hdr
	for len(h) > 0 {
		i := bytes.IndexByte(h, '\n')
		if i < 0 {
			i = len(h)
		}
		line := bytes.TrimSuffix(h[:i], []byte("\r"))
		h = h[min(i+1, len(h)):]
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && string(k) == name {
			if string(f.cmd) == "CONNECTED" {
				return string(v), true // never escaped
			}
			return unescape(string(v)), true
		}
	}
	return "", false
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	return strings.NewReplacer(`\n`, "\n", `\r`, "\r", `\c`, ":", `\\`, `\`).Replace(s)
}

func escape(s string) string {
	if !strings.ContainsAny(s, "\\\n\r:") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\r", `\r`, ":", `\c`).Replace(s)
}

// appendFrame appends a client frame.
func appendFrame(dst []byte, cmd string, headers [][2]string, body []byte) []byte {
	dst = append(dst, cmd...)
	dst = append(dst, '\n')
	for _, h := range headers {
		if cmd == "CONNECT" {
			dst = append(dst, h[0]+":"+h[1]+"\n"...)
		} else {
			dst = append(dst, escape(h[0])+":"+escape(h[1])+"\n"...)
		}
	}
	dst = append(dst, '\n')
	dst = append(dst, body...)
	return append(dst, 0)
}

// maxReadBuffer bounds one frame the client will buffer.
const maxReadBuffer = 64 << 20

// stompConn is one client connection.
type stompConn struct {
	ws        *websocket.Conn
	rbuf      []byte
	roff      int       // start of unparsed data in rbuf
	msg       io.Reader // the WebSocket message being read, nil between messages
	lastWrite atomic.Int64
	hb        atomic.Pointer[time.Timer] // set once; read by the timer's own callback
	closing   atomic.Bool                // we are closing it: a read error is no drop
}

// dialer opens WebSockets from one loopback source address, so that a run
// can use more client ports than one address's ephemeral range holds.
type dialer struct {
	client *http.Client
	src    string
}

func newDialer(src net.IP) *dialer {
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 30 * time.Second}
	tr := &http.Transport{
		DialContext:       nd.DialContext,
		DisableKeepAlives: true, // every request upgrades; nothing goes back to a pool
		ForceAttemptHTTP2: false,
	}
	return &dialer{client: &http.Client{Transport: tr}, src: src.String()}
}

// connectOptions is what a connection says in CONNECT.
type connectOptions struct {
	url       string
	login     string
	passcode  string // a token, for a chatd that checks them
	host      string
	heartBeat time.Duration // asked of and offered to the server; 0: none
	// readBuffer is the initial read buffer: small for idle connections,
	// large for busy ones, where each read then takes many frames at once.
	readBuffer int
}

// connectError is a failed connection attempt, by stage.
type connectError struct {
	stage string // "dial", "connect", "subscribe"
	err   error
}

func (e *connectError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// dialSTOMP opens a WebSocket and does the STOMP handshake within ctx.
func dialSTOMP(ctx context.Context, d *dialer, o connectOptions) (*stompConn, error) {
	ws, _, err := websocket.Dial(ctx, o.url, &websocket.DialOptions{
		HTTPClient:   d.client,
		Subprotocols: []string{"v12.stomp"},
	})
	if err != nil {
		return nil, &connectError{"dial", fmt.Errorf("from %s: %w", d.src, err)}
	}
	ws.SetReadLimit(maxReadBuffer)
	c := &stompConn{ws: ws, rbuf: make([]byte, 0, max(o.readBuffer, 1024))}
	// Reads always use context.Background (a cancellable context costs a
	// timer per read); the setup is bounded by closing the socket instead.
	stop := context.AfterFunc(ctx, func() { _ = ws.CloseNow() })
	defer stop()
	hb := strconv.FormatInt(o.heartBeat.Milliseconds(), 10)
	hdr := [][2]string{{"accept-version", "1.2"}, {"host", o.host}, {"login", o.login}, {"heart-beat", hb + "," + hb}}
	if o.passcode != "" {
		hdr = append(hdr, [2]string{"passcode", o.passcode})
	}
	err = c.write(appendFrame(nil, "CONNECT", hdr, nil))
	if err != nil {
		_ = ws.CloseNow()
		return nil, &connectError{"connect", err}
	}
	f, err := c.readFrame()
	if err == nil && string(f.cmd) != "CONNECTED" {
		msg, _ := f.header("message")
		err = fmt.Errorf("server answered %s: %s", f.cmd, msg)
	}
	if err != nil {
		_ = ws.CloseNow()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, &connectError{"connect", err}
	}
	// Send heart-beats as often as the server asks, no more often than we offered.
	if sv, ok := f.header("heart-beat"); ok && o.heartBeat > 0 {
		_, sy, _ := strings.Cut(sv, ",")
		if n, perr := strconv.ParseInt(strings.TrimSpace(sy), 10, 64); perr == nil && n > 0 {
			c.startHeartBeat(max(o.heartBeat, time.Duration(n)*time.Millisecond))
		}
	}
	return c, nil
}

// subscribe subscribes and waits for the RECEIPT, so that the subscription
// is in place when it returns.
func (c *stompConn) subscribe(ctx context.Context, id, dest string) error {
	stop := context.AfterFunc(ctx, func() { _ = c.ws.CloseNow() })
	defer stop()
	err := c.write(appendFrame(nil, "SUBSCRIBE", [][2]string{
		{"id", id}, {"destination", dest}, {"ack", "auto"}, {"receipt", "sub-" + id},
	}, nil))
	for err == nil {
		var f rawFrame
		if f, err = c.readFrame(); err != nil {
			break
		}
		switch string(f.cmd) {
		case "RECEIPT":
			return nil
		case "ERROR":
			msg, _ := f.header("message")
			err = fmt.Errorf("server answered ERROR: %s", msg)
		}
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return &connectError{"subscribe", err}
}

// startHeartBeat writes an EOL whenever nothing was written for every.
func (c *stompConn) startHeartBeat(every time.Duration) {
	c.lastWrite.Store(time.Now().UnixNano())
	var beat func()
	beat = func() {
		if c.closing.Load() {
			return
		}
		idle := time.Since(time.Unix(0, c.lastWrite.Load()))
		if idle >= every-every/10 {
			if c.write([]byte{'\n'}) != nil {
				return
			}
			idle = 0
		}
		c.hb.Load().Reset(every - idle)
	}
	t := time.AfterFunc(time.Hour, beat)
	c.hb.Store(t)
	t.Reset(every)
}

// write sends one WebSocket message. Writes are safe from any goroutine.
// No context: a write blocked on a stuck server ends when the run closes
// the socket.
func (c *stompConn) write(b []byte) error {
	c.lastWrite.Store(time.Now().UnixNano())
	if err := c.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// fill reads more of the current (or next) WebSocket message.
func (c *stompConn) fill() error {
	if c.roff > 0 {
		n := copy(c.rbuf, c.rbuf[c.roff:])
		c.rbuf, c.roff = c.rbuf[:n], 0
	}
	if cap(c.rbuf)-len(c.rbuf) < 512 {
		if cap(c.rbuf) >= maxReadBuffer {
			return fmt.Errorf("frame larger than %d bytes", maxReadBuffer)
		}
		nb := make([]byte, len(c.rbuf), 2*cap(c.rbuf)+4096)
		copy(nb, c.rbuf)
		c.rbuf = nb
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

// readFrame returns the next frame other than a heart-beat.
func (c *stompConn) readFrame() (rawFrame, error) {
	for {
		f, n, err := nextFrame(c.rbuf[c.roff:])
		if err != nil {
			return rawFrame{}, err
		}
		if n > 0 {
			c.roff += n
			if f.cmd != nil {
				return f, nil
			}
			continue
		}
		if err := c.fill(); err != nil {
			return rawFrame{}, err
		}
	}
}

// serve reads until the connection ends, passing each frame to handle with
// the time the data arrived (one clock read per read call, shared by the
// frames it brought). handle returns how many deliveries to add to the
// run's progress counter.
func (c *stompConn) serve(handle func(f *rawFrame, now int64) int, progress *atomic.Int64) error {
	for {
		if err := c.fill(); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		added := 0
		for {
			f, n, err := nextFrame(c.rbuf[c.roff:])
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			c.roff += n
			if f.cmd != nil {
				added += handle(&f, now)
			}
		}
		if added > 0 && progress != nil {
			progress.Add(int64(added))
		}
		if c.roff == len(c.rbuf) {
			c.rbuf, c.roff = c.rbuf[:0], 0
		}
	}
}

// close ends the connection at once (no DISCONNECT: a load run ends many
// connections and waits for none of them).
func (c *stompConn) close() {
	c.closing.Store(true)
	if t := c.hb.Load(); t != nil {
		t.Stop()
	}
	_ = c.ws.CloseNow()
}
