// The session's link to its client: a WebSocket (the transport in
// transport*.go, with parking and inline writes) or a SockJS session
// (sockjs.go). The session writes and closes through the link; only a
// WebSocket session reads through coder/websocket itself.

package stompws

import (
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/igm/sockjs-go/v3/sockjs"
)

// link is how a session's frames reach its client and how its
// connection ends.
type link interface {
	// write sends buf[wsHeaderMax:] as one message, blocking until it is
	// handed over; buf has wsHeaderMax bytes of room in front for a
	// WebSocket frame header. bin: the payload is not valid UTF-8.
	write(buf []byte, bin bool) error
	// close ends the connection with code, after a close handshake where
	// the transport has one; closeNow cuts it.
	close(code websocket.StatusCode) error
	closeNow() error
}

// wsLink is a WebSocket: chatd frames its own messages (wsFrame) and
// writes each with one write(2) (connWriter); coder/websocket does the
// close handshake.
type wsLink struct {
	conn *websocket.Conn
	out  *connWriter
	// sockjs: the WebSocket is SockJS's websocket transport, whose
	// clients hear why it closed from a SockJS close frame.
	sockjs bool
}

func (l *wsLink) write(buf []byte, bin bool) error { return l.out.writeFrame(wsFrame(buf, bin)) }

func (l *wsLink) close(code websocket.StatusCode) error {
	if l.sockjs {
		t := time.AfterFunc(sockjsCloseWait, func() { _ = l.conn.CloseNow() })
		err := l.out.writeFrame(wsFrame(appendSockJSClose(make([]byte, wsHeaderMax, wsHeaderMax+48), code), false))
		t.Stop()
		if err != nil {
			return err
		}
	}
	return l.conn.Close(code, closeReason(code))
}

func (l *wsLink) closeNow() error { return l.conn.CloseNow() }

// sockjsLink is a SockJS session: each write is one SockJS message, which
// sockjs-go frames for whichever transport the client uses. SockJS
// carries text only, so a payload that is not UTF-8 reaches the client
// with its invalid bytes replaced (docs/protocol.md, SockJS).
type sockjsLink struct {
	sess sockjs.Session
	ep   *sockjsEndpoint
	// polled is, after a write, the signal of the poll that will carry it
	// (sockjsEndpoint.polledSignal); only the session's writer uses it.
	polled <-chan struct{}
	// cut is closed by closeNow: close stops waiting for a poll.
	cut     chan struct{}
	cutOnce sync.Once
}

// shutdownPollWait bounds close's wait for an xhr-polling client's next
// poll while the server shuts down: an active client polls within
// moments, and one that went quiet should not hold up the shutdown for a
// whole disconnect delay.
const shutdownPollWait = 2 * time.Second

func (l *sockjsLink) write(buf []byte, _ bool) error {
	if l.sess.ReceiverType() == sockjs.ReceiverTypeXHR {
		l.polled = l.ep.polledSignal(l.sess.ID())
	}
	return l.sess.Send(string(buf[wsHeaderMax:]))
}

// close waits, over xhr-polling, for the client's next poll to take what
// was written last (an ERROR, a DISCONNECT's RECEIPT), at most the
// disconnect delay: sockjs-go drops what a closing session still holds.
func (l *sockjsLink) close(code websocket.StatusCode) error {
	if l.polled != nil {
		wait := l.ep.closeWait
		if l.ep.srv.isClosing() {
			wait = min(wait, shutdownPollWait)
		}
		t := time.NewTimer(wait)
		select {
		case <-l.polled:
		case <-t.C:
		case <-l.cut:
		case <-l.sess.Context().Done():
		}
		t.Stop()
	}
	return l.sess.Close(uint32(code), closeReason(code))
}

func (l *sockjsLink) closeNow() error {
	l.cutOnce.Do(func() { close(l.cut) })
	return l.sess.Close(uint32(websocket.StatusGoingAway), closeReason(websocket.StatusGoingAway))
}
