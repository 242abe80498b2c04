// Package frame is the STOMP 1.0, 1.1 and 1.2 frame codec: the grammar,
// header escaping per version, content-length, and the limits a server
// puts on what it buffers. It knows nothing of sessions or transports.
//
// There is one parser, scan. Decoder.Decode, for the server, runs it and
// then copies the frame out (Frame); Scan, for clients that read server
// frames at load, runs it and hands back a View that aliases the input.
package frame

import (
	"bytes"
	"strconv"
	"strings"
)

// Version is a negotiated STOMP protocol version.
type Version int

const (
	V10 Version = iota + 1 // "1.0"
	V11                    // "1.1"
	V12                    // "1.2"
)

func (v Version) String() string {
	switch v {
	case V10:
		return "1.0"
	case V11:
		return "1.1"
	case V12:
		return "1.2"
	}
	return "Version(" + strconv.Itoa(int(v)) + ")"
}

// Header is one header line of a frame.
type Header struct{ Name, Value string }

// Frame is one decoded STOMP frame. Strings and Body never alias the
// decoder's input buffer. Body is nil when the frame has no body.
type Frame struct {
	Command string
	Headers []Header
	Body    []byte
}

// Get returns the value of the FIRST header with that name (STOMP 1.2:
// repeated headers, first wins).
func (f *Frame) Get(name string) (string, bool) {
	for i := range f.Headers {
		if f.Headers[i].Name == name {
			return f.Headers[i].Value, true
		}
	}
	return "", false
}

// Value is Get without the bool.
func (f *Frame) Value(name string) string {
	v, _ := f.Get(name)
	return v
}

// Limits bound what the decoder accepts. A zero (or negative) field means
// no limit for that field.
type Limits struct {
	MaxFrameSize int // whole frame: command line + headers + body + NUL, in bytes
	MaxHeaders   int // number of header lines
	MaxHeaderLen int // one header line (name:value, escaped form, without EOL) in bytes
}

// Error is a malformed or over-limit frame. Msg is short and safe to send
// to the client in an ERROR frame's message header.
type Error struct {
	Msg string
	// Limit is set when the frame breaks one of the Limits, or is larger
	// than any limit could admit, rather than the grammar.
	Limit bool
}

func (e *Error) Error() string { return "stomp: " + e.Msg }

func malformed(msg string) error { return &Error{Msg: msg} }
func tooLarge(msg string) error  { return &Error{Msg: msg, Limit: true} }

// Decoder decodes frames from a byte buffer that the caller fills from
// WebSocket messages (a frame may span several reads, one read may hold
// several frames). Decoder keeps no state between calls, so the caller may
// compact or reallocate its buffer freely.
type Decoder struct {
	Limits  Limits
	Version Version // escaping rules; 0 (or any unknown value) means "before CONNECT": no unescaping at all
}

// escMode selects the header escaping rules.
type escMode uint8

const (
	escNone escMode = iota
	escV11
	escV12
)

const maxInt = int(^uint(0) >> 1)

// isConnect reports whether the command belongs to the CONNECT family.
// These frames are exchanged before (or while) the version is negotiated, so
// the spec exempts them from escaping in every version.
func isConnect(command []byte) bool {
	// Comparisons against string(b) do not allocate.
	return string(command) == "CONNECT" || string(command) == "STOMP" || string(command) == "CONNECTED"
}

func escFor(v Version, connect bool) escMode {
	if connect {
		return escNone
	}
	switch v {
	case V11:
		return escV11
	case V12:
		return escV12
	}
	return escNone
}

// layout is where scan found the parts of a frame in its buffer. It is
// small enough to be returned in registers.
type layout struct {
	nl     int // the command line's LF
	cmdEnd int // the end of the command (before a CR); 0: no frame
	hdrEnd int // the start of the body, after the blank line
	end    int // the terminating NUL
}

// Decode decodes at most one frame from the start of buf.
//   - Leading heart-beat EOLs ("\n" or "\r\n", any number) are skipped: if buf
//     starts with EOLs, it returns (nil, n, nil) with n = number of EOL bytes
//     consumed (caller loops).
//   - If buf holds only part of a frame, it returns (nil, 0, nil), unless the
//     part already proves the frame breaks a limit or is malformed, in which
//     case it returns an *Error at once so the caller can stop buffering.
//     In particular it never asks for more once len(buf) >= MaxFrameSize: the
//     size check uses the smallest size the rest of the frame could have.
//   - On a complete frame it returns (frame, consumed, nil); consumed includes
//     the terminating NUL and any EOLs directly after it.
//   - Any malformation returns an *Error.
func (d *Decoder) Decode(buf []byte) (*Frame, int, error) {
	l, n, err := scan(buf, d.Limits, d.Version)
	if err != nil || l.cmdEnd == 0 {
		return nil, n, err
	}
	esc := escFor(d.Version, isConnect(buf[:l.cmdEnd]))
	// Every header line ends in an LF, and so does the blank line.
	nhdr := bytes.Count(buf[l.nl+1:l.hdrEnd], []byte{'\n'}) - 1

	// Pass 2 (scan was pass 1): one string conversion for the command and
	// the whole header block; names and values are substrings of it unless
	// they need unescaping. Keeping one value keeps the block alive, but
	// the block is bounded by the limits and usually dies with the frame.
	s := string(buf[:l.hdrEnd])
	f := &Frame{Command: s[:l.cmdEnd]}
	if nhdr > 0 {
		hs := make([]Header, nhdr)
		p := l.nl + 1
		for k := range hs {
			i := strings.IndexByte(s[p:], '\n')
			if i < 0 { // unreachable: scan saw the same bytes
				return nil, 0, malformed("malformed header")
			}
			line := s[p : p+i]
			p += i + 1
			if i > 0 && line[i-1] == '\r' {
				line = line[:i-1]
			}
			colon := strings.IndexByte(line, ':')
			if colon < 0 { // unreachable, as above
				return nil, 0, malformed("malformed header")
			}
			name, value := line[:colon], line[colon+1:]
			if esc != escNone {
				name, value = unescape(name), unescape(value)
			}
			hs[k] = Header{Name: name, Value: value}
		}
		f.Headers = hs
	}
	if l.end > l.hdrEnd {
		f.Body = make([]byte, l.end-l.hdrEnd)
		copy(f.Body, buf[l.hdrEnd:l.end])
	}
	return f, n, nil
}

// scan is the STOMP grammar, pass 1 of Decode and the whole of Scan: it
// finds the frame at the start of buf, enforces lim and validates the
// syntax (escapes per v) over the raw bytes, without allocating. Its
// results are Decode's: n > 0 with no frame (cmdEnd 0) for heart-beat
// EOLs, n == 0 for an incomplete frame, an *Error for a malformed one or
// one that breaks lim, and for a frame its layout and the bytes it and
// the EOLs right after it take.
func scan(buf []byte, lim Limits, v Version) (l layout, n int, err error) {
	if n := skipEOLs(buf); n > 0 {
		return layout{}, n, nil
	}
	maxFrame, maxHeaders, maxHeaderLen := lim.MaxFrameSize, lim.MaxHeaders, lim.MaxHeaderLen

	// Command line. Reject garbage before its EOL arrives, so a client that
	// streams junk is cut off without buffering up to MaxFrameSize.
	nl := bytes.IndexByte(buf, '\n')
	if nl < 0 {
		for i, c := range buf {
			if (c < 'A' || c > 'Z') && (c != '\r' || i != len(buf)-1) {
				return layout{}, 0, malformed("invalid command")
			}
		}
		// Still to come: the command's LF, the blank line and the NUL.
		if maxFrame > 0 && len(buf) > maxFrame-3 {
			return layout{}, 0, tooLarge("frame too large")
		}
		return layout{}, 0, nil
	}
	cmdEnd := nl
	if cmdEnd > 0 && buf[cmdEnd-1] == '\r' {
		cmdEnd--
	}
	if cmdEnd == 0 {
		return layout{}, 0, malformed("invalid command")
	}
	for _, c := range buf[:cmdEnd] {
		if c < 'A' || c > 'Z' {
			return layout{}, 0, malformed("invalid command")
		}
	}
	esc := escFor(v, isConnect(buf[:cmdEnd]))

	// The header block: find its end, enforce limits and validate syntax.
	pos := nl + 1
	nhdr := 0
	cl := -1
	// Escapes are checked only in lines with a backslash. Header blocks
	// seldom have any, so the search for one looks ahead a window at a
	// time rather than a line at a time: the header lines up to bsTo hold
	// none, but at bsAt (-1: none yet).
	bsAt, bsTo := -1, pos
	for {
		start := pos
		rest := buf[pos:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			// A partial line is a header line unless it could still turn
			// out to be the blank line ("" or "\r" so far).
			if n := len(rest); n > 0 && (n != 1 || rest[0] != '\r') {
				if maxHeaders > 0 && nhdr >= maxHeaders {
					return layout{}, 0, tooLarge("too many headers")
				}
				if rest[n-1] == '\r' {
					n-- // may be the CR of a CRLF
				}
				if maxHeaderLen > 0 && n > maxHeaderLen {
					return layout{}, 0, tooLarge("header too long")
				}
			}
			// Still to come: at least the blank line's LF, the body and the NUL.
			if maxFrame > 0 && max(cl, 0) > maxFrame-len(buf)-2 {
				return layout{}, 0, tooLarge("frame too large")
			}
			return layout{}, 0, nil
		}
		line := rest[:i]
		if i > 0 && line[i-1] == '\r' {
			line = line[:i-1]
		}
		pos += i + 1
		if len(line) == 0 {
			break
		}
		nhdr++
		if maxHeaders > 0 && nhdr > maxHeaders {
			return layout{}, 0, tooLarge("too many headers")
		}
		if maxHeaderLen > 0 && len(line) > maxHeaderLen {
			return layout{}, 0, tooLarge("header too long")
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return layout{}, 0, malformed("malformed header")
		}
		if colon == 0 {
			return layout{}, 0, malformed("empty header name")
		}
		// Checking the whole line is equivalent to checking name and value
		// separately: ':' is never valid after a backslash.
		if esc != escNone {
			end := start + len(line)
			for bsAt < start && bsTo < end {
				w := buf[bsTo:min(len(buf), bsTo+escWindow)]
				if j := bytes.IndexByte(w, '\\'); j >= 0 {
					bsAt, bsTo = bsTo+j, bsTo+j+1
				} else {
					bsAt, bsTo = -1, bsTo+len(w)
				}
			}
			if bsAt >= start && bsAt < end && !validEscapes(line, esc) {
				return layout{}, 0, malformed("undefined escape sequence")
			}
		}
		// An escaped name can never unescape to "content-length" unless it
		// is literally that, so the raw bytes decide.
		if cl < 0 && string(line[:colon]) == "content-length" {
			n, err := parseContentLength(line[colon+1:])
			if err != nil {
				return layout{}, 0, err
			}
			cl = n
		}
	}
	hdrEnd := pos

	var end int // index of the terminating NUL
	if cl >= 0 {
		// The exact size is known now: reject before buffering the body.
		// Subtracting keeps huge lengths from overflowing.
		if maxFrame > 0 && cl > maxFrame-hdrEnd-1 {
			return layout{}, 0, tooLarge("frame too large")
		}
		if cl >= len(buf)-hdrEnd {
			return layout{}, 0, nil
		}
		end = hdrEnd + cl
		if buf[end] != 0 {
			return layout{}, 0, malformed("missing NUL after body")
		}
	} else {
		i := bytes.IndexByte(buf[hdrEnd:], 0)
		if i < 0 {
			if maxFrame > 0 && len(buf) >= maxFrame {
				return layout{}, 0, tooLarge("frame too large")
			}
			return layout{}, 0, nil
		}
		end = hdrEnd + i
		if maxFrame > 0 && end+1 > maxFrame {
			return layout{}, 0, tooLarge("frame too large")
		}
	}
	l = layout{nl: nl, cmdEnd: cmdEnd, hdrEnd: hdrEnd, end: end}
	n = end + 1
	if n < len(buf) && (buf[n] == '\n' || buf[n] == '\r') {
		n += skipEOLs(buf[n:])
	}
	return l, n, nil
}

// escWindow is how far scan looks ahead for a backslash at a time: about
// a header block, so that it seldom searches far into a body.
const escWindow = 128

// skipEOLs returns the length of the run of complete EOLs at the start
// of b. A lone trailing '\r' is left alone: it may be the first half of a
// CRLF whose LF has not arrived yet.
func skipEOLs(b []byte) int {
	i := 0
	for i < len(b) {
		switch {
		case b[i] == '\n':
			i++
		case b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n':
			i += 2
		default:
			return i
		}
	}
	return i
}

func validEscapes(b []byte, esc escMode) bool {
	for {
		i := bytes.IndexByte(b, '\\')
		if i < 0 {
			return true
		}
		if i+1 >= len(b) {
			return false
		}
		switch b[i+1] {
		case 'n', 'c', '\\':
		case 'r':
			if esc != escV12 {
				return false
			}
		default:
			return false
		}
		b = b[i+2:]
	}
}

// unescape expects s to have passed validEscapes.
func unescape(s string) string {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) - 1)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 'c':
				c = ':'
			default: // '\\'
				c = s[i]
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// parseContentLength returns the length, or an *Error.
func parseContentLength(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, malformed("invalid content-length")
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, malformed("invalid content-length")
		}
	}
	n := 0
	for _, c := range b {
		d := int(c - '0')
		if n > (maxInt-d)/10 {
			// Well-formed but unrepresentable: no limit can admit it.
			return 0, tooLarge("frame too large")
		}
		n = n*10 + d
	}
	return n, nil
}
