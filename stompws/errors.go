// ERROR frames: the client-facing Error and its kinds, and how a session
// fails (one ERROR, after what is queued, then the close).

package stompws

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
)

// Kinds of Error, a small fixed set for metrics (Observer.ErrorSent),
// since messages may carry client input. The STOMP layer sends all but
// destination, forbidden and unavailable itself; handlers may use any.
const (
	KindConnect      = "connect"       // CONNECT refused, or the session's credentials ended
	KindHeartbeat    = "heartbeat"     // the client went silent
	KindLimit        = "limit"         // a frame, subscription, transaction, rate or session limit
	KindMalformed    = "malformed"     // a frame that breaks the grammar, or lacks a required header
	KindDestination  = "destination"   // a destination the handler does not serve
	KindForbidden    = "forbidden"     // not allowed to this user
	KindRequest      = "request"       // a well-formed frame asking for something invalid
	KindSubscription = "subscription"  // a subscription id in use, or unknown
	KindAck          = "ack"           // ACK or NACK of an unknown message, or a bad transaction
	KindSlowConsumer = "slow_consumer" // the client did not keep up
	KindShutdown     = "shutdown"      // the server is going away
	KindInternal     = "internal"      // the server failed
	KindUnavailable  = "unavailable"   // something the handler needs is down
	KindOther        = "other"         // an Error without a Kind
)

// Error is an error whose message is meant for the client. Any other
// error a Handler returns reaches the client as "internal error", of
// KindInternal.
type Error struct {
	Kind    string // one of the Kind constants; empty is reported as KindOther
	Message string // the ERROR frame's message header
	Detail  string // the ERROR frame's body, optional
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return e.Message + ": " + e.Detail
	}
	return e.Message
}

// Errorf makes a client-facing Error of the given kind.
func Errorf(kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// clientError turns a handler error into what the client may see.
func (s *Session) clientError(err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	s.log.Error("request failed", "err", err)
	return &Error{Kind: KindInternal, Message: "internal error"}
}

// fail sends an ERROR (after what is queued, unless dropQueue) and closes.
func (s *Session) fail(e *Error, receipt string, code websocket.StatusCode, dropQueue bool) {
	s.mu.Lock()
	s.failLocked(e, nil, receipt, code, dropQueue)
	s.mu.Unlock()
	s.signal()
}

func (s *Session) failWith(e *Error, extra []frame.Header, code websocket.StatusCode) {
	s.mu.Lock()
	s.failLocked(e, extra, "", code, false)
	s.mu.Unlock()
	s.signal()
}

func (s *Session) failLocked(e *Error, extra []frame.Header, receipt string, code websocket.StatusCode, dropQueue bool) {
	if s.closing {
		return
	}
	s.closing = true
	close(s.stop)
	s.closeCode = code
	if dropQueue {
		clear(s.queue)
		s.queue, s.queueBytes = s.queue[:0], 0
	}
	h := append([]frame.Header{{Name: "message", Value: e.Message}}, extra...)
	if receipt != "" {
		h = append(h, frame.Header{Name: "receipt-id", Value: receipt})
	}
	var body []byte
	if e.Detail != "" {
		body = []byte(e.Detail)
		h = append(h, frame.Header{Name: "content-type", Value: "text/plain"}, frame.Header{Name: "content-length", Value: strconv.Itoa(len(body))})
	}
	v := s.version
	if v == 0 {
		v = frame.V10 // before CONNECT: no escaping; our messages are one line
	}
	s.pushLocked(outItem{raw: frame.AppendFrame(nil, v, "ERROR", h, body)})
	kind := e.Kind
	if kind == "" {
		kind = KindOther
	}
	s.cfg.Observer.ErrorSent(kind)
	if code != CloseGoingAway {
		s.log.Info("session error", "message", e.Message)
	}
}
