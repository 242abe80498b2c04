// SockJS's websocket transport, served by chatd itself: a WebSocket whose
// messages are SockJS frames ("o" to open, a["..."] for messages, "h" for
// SockJS's heart-beat, c[code,"reason"] to close) around the session's
// STOMP bytes. It is the same WebSocket session as the raw endpoint's,
// with its parking, inline writes and batching: sockjs-go's websocket
// handler goes through a send buffer, a goroutine and two copies per
// message, and cost fan-out most of its throughput (docs/benchmarks.md).
// sockjs-go still serves /info and the HTTP transports (sockjs.go).

package stompws

import (
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/internal/jsonstr"
	"github.com/coder/websocket"
)

// sockjsOpen is SockJS's open frame, as a WebSocket text message.
const sockjsOpen = "\x81\x01o"

// beginMessage starts a WebSocket message of frames in buf (wsHeaderMax
// bytes of room for the WebSocket header): over SockJS, an array frame
// of one string, into which appendItem escapes the frames.
func (s *Session) beginMessage(buf []byte) []byte {
	if s.sockjsBeat > 0 {
		return append(buf, `a["`...)
	}
	return buf
}

// endMessage ends what beginMessage began. SockJS carries text only, so
// its messages are never binary.
func (s *Session) endMessage(buf []byte, bin *bool) []byte {
	if s.sockjsBeat > 0 {
		*bin = false
		return append(buf, `"]`...)
	}
	return buf
}

// appendBeat appends a heart-beat message: a STOMP EOL, which over SockJS
// goes in an array frame, unless the client asked for no STOMP
// heart-beats: then it is SockJS's own ("h"), which keeps proxies from
// timing the connection out.
func (s *Session) appendBeat(buf []byte) []byte {
	switch {
	case s.sockjsBeat == 0:
		return append(buf, '\n')
	case s.sockjsH.Load():
		return append(buf, 'h')
	}
	return append(buf, `a["\n"]`...)
}

// appendSockJSClose appends SockJS's close frame, c[code,"reason"].
func appendSockJSClose(dst []byte, code websocket.StatusCode) []byte {
	dst = append(dst, "c["...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ',', '"')
	dst = jsonstr.Append(dst, []byte(closeReason(code)))
	return append(dst, '"', ']')
}

// closeReason is the reason given with a close code: SockJS passes it to
// the application's onclose, where a bare code says little.
func closeReason(code websocket.StatusCode) string {
	switch code {
	case closeNormal:
		return "Normal closure"
	case closePolicy:
		return "STOMP ERROR sent"
	case CloseGoingAway:
		return "server is shutting down"
	case websocket.StatusMessageTooBig:
		return "message too large"
	}
	return ""
}

// sockjsCloseWait bounds writing the SockJS close frame to a client that
// reads nothing.
const sockjsCloseWait = 5 * time.Second

// readSockJSMessage reads one message of SockJS's websocket transport, a
// JSON array of strings (or one string), each a piece of the client's
// STOMP input, bounded by what a frame may take once JSON-escaped.
func (s *Session) readSockJSMessage(r io.Reader) error {
	limit := 2 * int64(s.dec.Limits.MaxFrameSize)
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return err
	}
	if int64(len(b)) > limit {
		s.fail(&Error{Kind: KindLimit, Message: "SockJS message too large: more than " + strconv.FormatInt(limit, 10) + " bytes"},
			"", websocket.StatusMessageTooBig, false)
		return errStop
	}
	if len(b) == 0 {
		s.lastRead.Store(time.Now().UnixNano())
		return nil // sockjs-node ignores an empty message too
	}
	var msgs []string
	if err := json.Unmarshal(b, &msgs); err != nil {
		var one string
		if json.Unmarshal(b, &one) != nil {
			s.fail(&Error{Kind: KindMalformed, Message: "malformed SockJS message: want a JSON array of strings"}, "", closePolicy, false)
			return errStop
		}
		msgs = []string{one}
	}
	if len(msgs) == 0 {
		s.lastRead.Store(time.Now().UnixNano())
		return nil
	}
	for _, m := range msgs {
		if err := s.readFrom(strings.NewReader(m)); err != nil {
			return err
		}
	}
	return nil
}

// errSockJSPath: a websocket transport URL that SockJS does not form.
var errSockJSPath = errors.New("not a SockJS websocket URL: want <prefix>/<server>/<session>/websocket")
