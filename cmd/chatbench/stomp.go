package main

import (
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

	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
)

// A minimal STOMP 1.2 client for load: it parses frames in place in its
// read buffer (frame.Scan, the server's own parser), hands MESSAGE bodies
// to a callback without copying, and writes each frame as one WebSocket
// message. go-stomp over websocket.NetConn allocates a frame, a header map
// and a channel send per message, which on this 2-core machine costs the
// CPU the server needs.

// errFrame is a malformed frame from the server.
var errFrame = errors.New("malformed STOMP frame")

// malformed names an error of frame.Scan, which parses the server's frames
// in place in the read buffer.
func malformed(err error) error { return fmt.Errorf("%w: %w", errFrame, err) }

// maxReadBuffer bounds one frame the client will buffer.
const maxReadBuffer = 64 << 20

// stompConn is one client connection.
type stompConn struct {
	wsConn
	sj *sockjsState // SockJS's websocket transport; nil: a raw WebSocket
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
	sockjs    bool // url is a SockJS endpoint: use its websocket transport
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
	u, opts := o.url, &websocket.DialOptions{HTTPClient: d.client, Subprotocols: []string{"v12.stomp"}}
	if o.sockjs {
		// sockjs-client asks for no subprotocol: SockJS carries text.
		var err error
		if u, err = sockjsURL(o.url, newSockJSSession()); err != nil {
			return nil, &connectError{"dial", err}
		}
		opts.Subprotocols = nil
	}
	ws, _, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		return nil, &connectError{"dial", fmt.Errorf("from %s: %w", d.src, err)}
	}
	ws.SetReadLimit(maxReadBuffer)
	c := &stompConn{wsConn: wsConn{ws: ws, rbuf: make([]byte, 0, max(o.readBuffer, 1024))}}
	if o.sockjs {
		c.sj = &sockjsState{}
	}
	// Reads always use context.Background (a cancellable context costs a
	// timer per read); the setup is bounded by closing the socket instead.
	stop := context.AfterFunc(ctx, func() { _ = ws.CloseNow() })
	defer stop()
	hb := strconv.FormatInt(o.heartBeat.Milliseconds(), 10)
	hdr := []frame.Header{{Name: "accept-version", Value: "1.2"}, {Name: "host", Value: o.host},
		{Name: "login", Value: o.login}, {Name: "heart-beat", Value: hb + "," + hb}}
	if o.passcode != "" {
		hdr = append(hdr, frame.Header{Name: "passcode", Value: o.passcode})
	}
	err = c.write(frame.AppendFrame(nil, frame.V12, "CONNECT", hdr, nil))
	if err != nil {
		_ = ws.CloseNow()
		return nil, &connectError{"connect", err}
	}
	f, err := c.readFrame()
	if err == nil && string(f.Command()) != "CONNECTED" {
		msg, _ := f.Header("message")
		err = fmt.Errorf("server answered %s: %s", f.Command(), msg)
	}
	if err != nil {
		_ = ws.CloseNow()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, &connectError{"connect", err}
	}
	// Send heart-beats as often as the server asks, no more often than we offered.
	if sv, ok := f.Header("heart-beat"); ok && o.heartBeat > 0 {
		_, sy, _ := strings.Cut(sv, ",")
		if n, perr := strconv.ParseInt(strings.TrimSpace(sy), 10, 64); perr == nil && n > 0 {
			c.startHeartBeat(max(o.heartBeat, time.Duration(n)*time.Millisecond), func() error { return c.write([]byte{'\n'}) })
		}
	}
	return c, nil
}

// subscribe subscribes and waits for the RECEIPT, so that the subscription
// is in place when it returns; extra headers go on the SUBSCRIBE. It
// returns how many MESSAGEs came before the RECEIPT (a replay's first).
func (c *stompConn) subscribe(ctx context.Context, id, dest string, extra ...frame.Header) (int, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.ws.CloseNow() })
	defer stop()
	h := append([]frame.Header{
		{Name: "id", Value: id}, {Name: "destination", Value: dest}, {Name: "ack", Value: "auto"}, {Name: "receipt", Value: "sub-" + id},
	}, extra...)
	err := c.write(frame.AppendFrame(nil, frame.V12, "SUBSCRIBE", h, nil))
	early := 0
	for err == nil {
		var f frame.View
		if f, err = c.readFrame(); err != nil {
			break
		}
		switch string(f.Command()) {
		case "RECEIPT":
			return early, nil
		case "MESSAGE":
			early++
		case "ERROR":
			msg, _ := f.Header("message")
			err = fmt.Errorf("server answered ERROR: %s", msg)
		}
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return early, &connectError{"subscribe", err}
}

// write sends one frame as one WebSocket message (or SockJS message).
func (c *stompConn) write(b []byte) error {
	if c.sj != nil {
		return c.writeSockJS(b)
	}
	return c.writeMessage(websocket.MessageText, b)
}

// fill reads more of the current (or next) WebSocket message.
func (c *stompConn) fill() error {
	if c.sj != nil {
		return c.fillSockJS()
	}
	return c.fillStream()
}

// readFrame returns the next frame other than a heart-beat; it aliases
// the read buffer until the next read.
func (c *stompConn) readFrame() (frame.View, error) {
	for {
		f, n, err := frame.Scan(c.rbuf[c.roff:])
		if err != nil {
			return frame.View{}, malformed(err)
		}
		if n > 0 {
			c.roff += n
			if len(f.Command()) > 0 {
				return f, nil
			}
			continue
		}
		if err := c.fill(); err != nil {
			return frame.View{}, err
		}
	}
}

// serve reads until the connection ends, passing each frame to handle with
// the time the data arrived (one clock read per read call, shared by the
// frames it brought). handle returns how many deliveries to add to the
// run's progress counter.
func (c *stompConn) serve(handle func(f *frame.View, now int64) int, progress *atomic.Int64) error {
	var f frame.View // one for the loop: handing a new one's address to handle allocates it
	for {
		if err := c.fill(); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		added := 0
		for {
			var n int
			var err error
			f, n, err = frame.Scan(c.rbuf[c.roff:])
			if err != nil {
				return malformed(err)
			}
			if n == 0 {
				break
			}
			c.roff += n
			if len(f.Command()) > 0 {
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

// writeSockJS sends b as one SockJS message (a JSON array of one string),
// in a buffer the connection keeps.
func (c *stompConn) writeSockJS(b []byte) error {
	sj := c.sj
	sj.wmu.Lock()
	defer sj.wmu.Unlock()
	sj.wbuf = appendSockJSMessage(sj.wbuf[:0], b)
	return c.writeMessage(websocket.MessageText, sj.wbuf)
}

// fillSockJS reads the next SockJS frame that carries STOMP bytes whole
// into the read buffer and unescapes it there (unwrapSockJS), past
// "o" and "h" frames. A "c" frame ends the connection with its code and
// reason as the error.
func (c *stompConn) fillSockJS() error {
	// Moves unparsed data to the start once: start below stays valid, as
	// the compactions in the loop then only grow the buffer.
	if err := c.compact("SockJS message"); err != nil {
		return err
	}
	for {
		start := len(c.rbuf)
		_, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		for {
			if err := c.compact("SockJS message"); err != nil {
				return err
			}
			n, err := r.Read(c.rbuf[len(c.rbuf):cap(c.rbuf)])
			c.rbuf = c.rbuf[:len(c.rbuf)+n]
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read: %w", err)
			}
		}
		n, kind, err := unwrapSockJS(c.rbuf[start:])
		c.rbuf = c.rbuf[:start+n]
		switch {
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case kind == 'o' && c.sj.opened:
			return fmt.Errorf("read: %w: a second open frame", errSockJS)
		case kind == 'o':
			c.sj.opened = true
		case !c.sj.opened:
			return fmt.Errorf("read: %w: %q before the open frame", errSockJS, kind)
		case n > 0:
			return nil
		}
	}
}
