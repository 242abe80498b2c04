package main

// The SockJS websocket transport (--transport sockjs), as sockjs-client
// uses it against Spring's .withSockJS() endpoints and chatd's: a
// WebSocket at <endpoint>/<server>/<session>/websocket, over which the
// server sends "o" (open), "h" (heart-beat), "a[...]" (a JSON array of
// messages) and "c[code,"reason"]" (close), and the client sends JSON
// arrays of messages (github.com/sockjs/sockjs-protocol). Each message
// carries STOMP bytes: whole frames, several or part of one.
//
// No library: igm/sockjs-go, which chatd serves SockJS with, is a server
// only, and the small Go SockJS clients (zodimo/go-sockjs-client,
// eminaktas/sockjs-go-client) decode every message with encoding/json
// into new strings, over a WebSocket connection they dial. Here the
// framing is a few functions over the client's coder/websocket
// connection: a message is read whole into the read buffer and its JSON
// strings are unescaped there, in place, so that the STOMP parser
// (frame.Scan) sees the same byte stream as over a raw WebSocket, with no
// allocation per message. BenchmarkSockJSUnwrap: 212-268 ns per MESSAGE
// frame, against 1,860-2,940 ns and 4 allocations with encoding/json;
// writing, BenchmarkAppendSockJSMessage: 194 ns against 1,904 ns and 4
// allocations.

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/chatd/chatd/internal/jsonstr"
)

// Transports for --transport.
const (
	transportRaw    = "raw"    // STOMP frames as WebSocket messages, at --url
	transportSockJS = "sockjs" // SockJS's websocket transport under --url
)

// sockjsState is a connection's SockJS framing; nil for a raw WebSocket.
type sockjsState struct {
	opened bool // the "o" frame came; only the reading goroutine uses it

	wmu  sync.Mutex // writes come from the publisher and the heart-beat timer
	wbuf []byte     // the JSON array being written, reused
}

// sockjsURL is the websocket transport's URL under the SockJS endpoint
// raw: ws://host/ws becomes ws://host/ws/000/<session>/websocket. Server
// "000" routes nothing in chatd (it is for sticky load balancers); the
// session id is random, as sockjs-client's.
func sockjsURL(raw, session string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid --url %q: %w", raw, err)
	}
	if session == "" || strings.ContainsAny(session, "./") {
		return "", fmt.Errorf("invalid SockJS session id %q", session)
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/000/" + session + "/websocket"
	u.RawPath = ""
	return u.String(), nil
}

// newSockJSSession is a random session id (8 lower-case base32 characters).
func newSockJSSession() string { return strings.ToLower(rand.Text()[:8]) }

// appendSockJSMessage appends msg as a SockJS message from the client: a
// JSON array of one string, escaped as chatd escapes its own (invalid
// UTF-8 becomes U+FFFD, as encoding/json, the server's decoder, makes it).
func appendSockJSMessage(dst, msg []byte) []byte {
	dst = append(dst, '[', '"')
	dst = jsonstr.Append(dst, msg)
	return append(dst, '"', ']')
}

// sockjsClose is the server's close frame, c[code,"reason"].
type sockjsClose struct {
	code   int
	reason string
}

func (e *sockjsClose) Error() string {
	return fmt.Sprintf("SockJS close %d %q", e.code, e.reason)
}

// errSockJS is a frame that breaks the SockJS protocol.
var errSockJS = errors.New("malformed SockJS frame")

// unwrapSockJS decodes one SockJS frame from the server in place: the
// STOMP bytes of its messages, concatenated, end up in b[:n] (unescaping
// only ever shortens them). kind is the frame's type: 'o', 'h', 'a' or
// 'c'; a close frame comes back as a *sockjsClose error.
func unwrapSockJS(b []byte) (n int, kind byte, err error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("%w: empty message", errSockJS)
	}
	kind = b[0]
	switch kind {
	case 'o', 'h':
		if len(b) != 1 {
			return 0, kind, fmt.Errorf("%w: %q", errSockJS, clip(b))
		}
		return 0, kind, nil
	case 'c':
		var v []json.RawMessage
		var ce sockjsClose
		if json.Unmarshal(b[1:], &v) != nil || len(v) != 2 ||
			json.Unmarshal(v[0], &ce.code) != nil || json.Unmarshal(v[1], &ce.reason) != nil {
			return 0, kind, fmt.Errorf("%w: close %q", errSockJS, clip(b))
		}
		return 0, kind, &ce
	case 'a':
		n, err = unescapeArray(b)
		if err != nil {
			return 0, kind, fmt.Errorf("%w: %w in %q", errSockJS, err, clip(b))
		}
		return n, kind, nil
	}
	return 0, kind, fmt.Errorf("%w: unknown type %q", errSockJS, clip(b))
}

// clip shortens a frame for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// unescapeArray decodes b = a["...",...] in place into b[:n].
func unescapeArray(b []byte) (int, error) {
	r := skipSpace(b, 1)
	if r == len(b) || b[r] != '[' {
		return 0, errors.New("no array")
	}
	r = skipSpace(b, r+1)
	w := 0
	if r < len(b) && b[r] == ']' {
		return 0, trailing(b, r+1)
	}
	for {
		if r == len(b) || b[r] != '"' {
			return 0, errors.New("no string")
		}
		var err error
		if r, w, err = unescapeString(b, r+1, w); err != nil {
			return 0, err
		}
		r = skipSpace(b, r)
		if r == len(b) {
			return 0, errors.New("unterminated array")
		}
		switch b[r] {
		case ',':
			r = skipSpace(b, r+1)
		case ']':
			return w, trailing(b, r+1)
		default:
			return 0, errors.New("no , or ] after a string")
		}
	}
}

// unescapeString decodes the JSON string whose contents start at b[r],
// writing to b[w:] (w <= r), up to its closing quote. It returns the read
// position past the quote and the write position.
func unescapeString(b []byte, r, w int) (int, int, error) {
	for r < len(b) {
		c := b[r]
		switch {
		case c == '"':
			return r + 1, w, nil
		case c < 0x20:
			return 0, 0, errors.New("control character in a string")
		case c != '\\':
			b[w] = c
			w++
			r++
			continue
		}
		if r+1 == len(b) {
			break
		}
		switch e := b[r+1]; e {
		case '"', '\\', '/':
			b[w] = e
		case 'n':
			b[w] = '\n'
		case 'r':
			b[w] = '\r'
		case 't':
			b[w] = '\t'
		case 'b':
			b[w] = '\b'
		case 'f':
			b[w] = '\f'
		case 'u':
			x, ok := hex4(b, r+2)
			if !ok {
				return 0, 0, errors.New(`bad \u escape`)
			}
			r += 6
			ru := rune(x)
			if utf16.IsSurrogate(ru) {
				ru = utf8.RuneError // a lone half, as encoding/json reads it
				if y, ok := hex4(b, r+2); ok && r+1 < len(b) && b[r] == '\\' && b[r+1] == 'u' {
					if p := utf16.DecodeRune(rune(x), rune(y)); p != utf8.RuneError {
						ru = p
						r += 6
					}
				}
			}
			// \uXXXX is 6 bytes, its UTF-8 at most 3; a pair 12 and 4.
			w += utf8.EncodeRune(b[w:], ru)
			continue
		default:
			return 0, 0, fmt.Errorf(`bad escape \%c`, e)
		}
		w++
		r += 2
	}
	return 0, 0, errors.New("unterminated string")
}

// hex4 reads the 4 hex digits at b[i:].
func hex4(b []byte, i int) (uint16, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var x uint16
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		x = x<<4 | uint16(c)
	}
	return x, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func trailing(b []byte, i int) error {
	if skipSpace(b, i) != len(b) {
		return errors.New("data after the array")
	}
	return nil
}
