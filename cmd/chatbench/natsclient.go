package main

// The NATS target's client (--target nats): the NATS client protocol over
// a WebSocket to nats-server's own listener, written like the STOMP
// client (wsConn, the same coder/websocket connection): protocol messages
// are parsed in place in the read buffer and a MSG's payload goes to the
// subscriber without a copy. nats.go speaks ws:// too, but it copies
// each message's subject and payload into a new *nats.Msg and wakes the
// subscription's own goroutine for it; BenchmarkNATSReceive puts the
// difference on this machine.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// errNATSProto is a protocol message from the server the client cannot parse.
var errNATSProto = errors.New("malformed NATS protocol message")

// maxNATSLine bounds a control line (INFO is the longest, about 1 KiB).
const maxNATSLine = 64 << 10

// natsOp is one protocol message from the server, aliasing the read buffer.
type natsOp struct {
	kind    natsKind
	subject []byte // MSG
	payload []byte // MSG
	text    []byte // INFO's JSON, -ERR's message
}

type natsKind uint8

const (
	natsMsg natsKind = iota + 1
	natsPing
	natsPong
	natsInfo
	natsOK
	natsErr
)

// scanNATS parses the first protocol message in b. n is the bytes it
// used; 0 means b holds only part of one.
func scanNATS(b []byte) (op natsOp, n int, err error) {
	eol := bytes.IndexByte(b, '\n')
	if eol < 0 {
		if len(b) > maxNATSLine {
			return op, 0, fmt.Errorf("%w: no end of line in %d bytes", errNATSProto, len(b))
		}
		return op, 0, nil
	}
	line := b[:eol]
	if len(line) == 0 || line[len(line)-1] != '\r' {
		return op, 0, fmt.Errorf("%w: line %q does not end in CRLF", errNATSProto, clip(line))
	}
	line = line[:len(line)-1]
	verb, args, _ := bytes.Cut(line, []byte{' '})
	n = eol + 1
	switch {
	case bytes.EqualFold(verb, []byte("MSG")):
		// MSG <subject> <sid> [reply-to] <#bytes>, parsed without
		// allocating: one of these comes per delivery.
		subject, rest, _ := bytes.Cut(args, []byte{' '})
		sp := bytes.LastIndexByte(rest, ' ')
		size, ok := parseSize(rest[sp+1:])
		if len(subject) == 0 || sp <= 0 || !ok {
			return op, 0, fmt.Errorf("%w: %q", errNATSProto, clip(line))
		}
		if len(b) < n+size+2 {
			return op, 0, nil
		}
		if b[n+size] != '\r' || b[n+size+1] != '\n' {
			return op, 0, fmt.Errorf("%w: payload of %q not followed by CRLF", errNATSProto, clip(line))
		}
		return natsOp{kind: natsMsg, subject: subject, payload: b[n : n+size]}, n + size + 2, nil
	case bytes.EqualFold(verb, []byte("PING")):
		return natsOp{kind: natsPing}, n, nil
	case bytes.EqualFold(verb, []byte("PONG")):
		return natsOp{kind: natsPong}, n, nil
	case bytes.EqualFold(verb, []byte("+OK")):
		return natsOp{kind: natsOK}, n, nil
	case bytes.EqualFold(verb, []byte("INFO")):
		return natsOp{kind: natsInfo, text: bytes.TrimSpace(args)}, n, nil
	case bytes.EqualFold(verb, []byte("-ERR")):
		return natsOp{kind: natsErr, text: bytes.Trim(bytes.TrimSpace(args), "'")}, n, nil
	}
	return op, 0, fmt.Errorf("%w: %q", errNATSProto, clip(line))
}

// parseSize parses a MSG's payload size.
func parseSize(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= maxReadBuffer
}

// natsConn is one NATS client connection over a WebSocket.
type natsConn struct {
	wsConn
}

// natsConnect is the CONNECT the client sends: no echo suppression (a
// member that publishes also receives its own messages, as from chatd),
// no headers, no +OK for every message.
type natsConnect struct {
	Verbose  bool   `json:"verbose"`
	Pedantic bool   `json:"pedantic"`
	Name     string `json:"name"`
	Lang     string `json:"lang"`
	Version  string `json:"version"`
	Protocol int    `json:"protocol"`
	Echo     bool   `json:"echo"`
	Headers  bool   `json:"headers"`
}

// dialNATS opens a WebSocket to a nats-server and does the NATS handshake
// (INFO, CONNECT, then PING answered by PONG) within ctx. The login is the
// connection's name.
func dialNATS(ctx context.Context, d *dialer, o connectOptions) (*natsConn, error) {
	ws, _, err := websocket.Dial(ctx, o.url, &websocket.DialOptions{HTTPClient: d.client})
	if err != nil {
		return nil, &connectError{"dial", fmt.Errorf("from %s: %w", d.src, err)}
	}
	ws.SetReadLimit(maxReadBuffer)
	c := &natsConn{wsConn{ws: ws, rbuf: make([]byte, 0, max(o.readBuffer, 4096))}}
	// As dialSTOMP: reads use context.Background; ctx closes the socket.
	stop := context.AfterFunc(ctx, func() { _ = ws.CloseNow() })
	defer stop()
	op, err := c.readOp()
	if err == nil && op.kind != natsInfo {
		err = fmt.Errorf("%w: the server's first message is not INFO", errNATSProto)
	}
	if err == nil {
		var b []byte
		if b, err = json.Marshal(natsConnect{Name: o.login, Lang: "chatbench", Version: "1", Protocol: 1, Echo: true}); err == nil {
			err = c.write(append(append(append([]byte("CONNECT "), b...), "\r\n"...), "PING\r\n"...))
		}
	}
	if err == nil {
		err = c.awaitPong()
	}
	if err != nil {
		_ = ws.CloseNow()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, &connectError{"connect", err}
	}
	// nats-server PINGs a quiet client and the client answers (serve):
	// that is NATS's heart-beat both ways, set on the server
	// (--heartbeat becomes the child's ping interval). The client PINGs
	// too when it wrote nothing for that long, as the STOMP client
	// heart-beats, so a dead server is noticed the same way.
	if o.heartBeat > 0 {
		c.startHeartBeat(o.heartBeat, func() error { return c.write([]byte("PING\r\n")) })
	}
	return c, nil
}

// write sends protocol messages as one WebSocket message.
func (c *natsConn) write(b []byte) error { return c.writeMessage(websocket.MessageBinary, b) }

// readOp returns the next protocol message, answering PINGs; it aliases
// the read buffer until the next read.
func (c *natsConn) readOp() (natsOp, error) {
	for {
		op, n, err := scanNATS(c.rbuf[c.roff:])
		if err != nil {
			return op, err
		}
		if n == 0 {
			if err := c.fillStream(); err != nil {
				return op, err
			}
			continue
		}
		c.roff += n
		if op.kind == natsPing {
			if err := c.write([]byte("PONG\r\n")); err != nil {
				return op, err
			}
			continue
		}
		return op, nil
	}
}

// awaitPong reads until the PONG that answers the client's PING, failing
// on -ERR. The server handles a client's messages in order, so what the
// client sent before the PING has taken effect.
func (c *natsConn) awaitPong() error {
	for {
		op, err := c.readOp()
		if err != nil {
			return err
		}
		switch op.kind {
		case natsPong:
			return nil
		case natsErr:
			return fmt.Errorf("server answered -ERR '%s'", op.text)
		}
	}
}

// subscribe subscribes to subject and waits until the server has the
// subscription (SUB, then PING answered by PONG), as a STOMP subscriber
// waits for the RECEIPT.
func (c *natsConn) subscribe(ctx context.Context, sid, subject string) error {
	stop := context.AfterFunc(ctx, func() { _ = c.ws.CloseNow() })
	defer stop()
	err := c.write([]byte("SUB " + subject + " " + sid + "\r\nPING\r\n"))
	if err == nil {
		err = c.awaitPong()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return &connectError{"subscribe", err}
	}
	return nil
}

// appendPub appends a PUB of body to subject.
func appendPub(dst []byte, subject string, body []byte) []byte {
	dst = append(dst, "PUB "...)
	dst = append(dst, subject...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, body...)
	return append(dst, "\r\n"...)
}

// serve reads until the connection ends, as stompConn.serve: each protocol
// message but PING goes to handle with the time the data arrived, and
// handle returns how many deliveries to add to the run's progress.
func (c *natsConn) serve(handle func(op *natsOp, now int64) int, progress *atomic.Int64) error {
	var op natsOp // one for the loop: handing a new one's address to handle allocates it
	for {
		if err := c.fillStream(); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		added := 0
		for {
			var n int
			var err error
			op, n, err = scanNATS(c.rbuf[c.roff:])
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			c.roff += n
			if op.kind == natsPing {
				if err := c.write([]byte("PONG\r\n")); err != nil {
					return err
				}
				continue
			}
			added += handle(&op, now)
		}
		if added > 0 && progress != nil {
			progress.Add(int64(added))
		}
		if c.roff == len(c.rbuf) {
			c.rbuf, c.roff = c.rbuf[:0], 0
		}
	}
}
