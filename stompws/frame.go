package stompws

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

// FrameError is a malformed or over-limit frame. Msg is short and safe to
// send to the client in an ERROR frame's message header.
type FrameError struct{ Msg string }

func (e *FrameError) Error() string { return "stomp: " + e.Msg }

// Decoder decodes frames from a byte buffer that the caller fills from
// WebSocket messages (a frame may span several reads, one read may hold
// several frames). Decoder keeps no state between calls, so the caller may
// compact or reallocate its buffer freely.
type Decoder struct {
	Limits  Limits
	Version Version // escaping rules; 0 (or any unknown value) means "before CONNECT": no unescaping at all
}

// codecEsc selects the header escaping rules.
type codecEsc uint8

const (
	codecEscNone codecEsc = iota
	codecEscV11
	codecEscV12
)

const codecMaxInt = int(^uint(0) >> 1)

// codecIsConnect reports whether the command belongs to the CONNECT family.
// These frames are exchanged before (or while) the version is negotiated, so
// the spec exempts them from escaping in every version.
func codecIsConnect(command []byte) bool {
	// Comparisons against string(b) do not allocate.
	return string(command) == "CONNECT" || string(command) == "STOMP" || string(command) == "CONNECTED"
}

func codecEscFor(v Version, connect bool) codecEsc {
	if connect {
		return codecEscNone
	}
	switch v {
	case V11:
		return codecEscV11
	case V12:
		return codecEscV12
	}
	return codecEscNone
}

func codecErr(msg string) (*Frame, int, error) {
	return nil, 0, &FrameError{Msg: msg}
}

// Decode decodes at most one frame from the start of buf.
//   - Leading heart-beat EOLs ("\n" or "\r\n", any number) are skipped: if buf
//     starts with EOLs, it returns (nil, n, nil) with n = number of EOL bytes
//     consumed (caller loops).
//   - If buf holds only part of a frame, it returns (nil, 0, nil), unless the
//     part already proves the frame breaks a limit or is malformed, in which
//     case it returns a *FrameError at once so the caller can stop buffering.
//     In particular it never asks for more once len(buf) >= MaxFrameSize: the
//     size check uses the smallest size the rest of the frame could have.
//   - On a complete frame it returns (frame, consumed, nil); consumed includes
//     the terminating NUL and any EOLs directly after it.
//   - Any malformation returns a *FrameError.
func (d *Decoder) Decode(buf []byte) (*Frame, int, error) {
	if n := codecSkipEOLs(buf); n > 0 {
		return nil, n, nil
	}
	maxFrame, maxHeaders, maxHeaderLen := d.Limits.MaxFrameSize, d.Limits.MaxHeaders, d.Limits.MaxHeaderLen

	// Command line. Reject garbage before its EOL arrives, so a client that
	// streams junk is cut off without buffering up to MaxFrameSize.
	nl := bytes.IndexByte(buf, '\n')
	if nl < 0 {
		for i, c := range buf {
			if (c < 'A' || c > 'Z') && !(c == '\r' && i == len(buf)-1) {
				return codecErr("invalid command")
			}
		}
		// Still to come: the command's LF, the blank line and the NUL.
		if maxFrame > 0 && len(buf) > maxFrame-3 {
			return codecErr("frame too large")
		}
		return nil, 0, nil
	}
	cmdEnd := nl
	if cmdEnd > 0 && buf[cmdEnd-1] == '\r' {
		cmdEnd--
	}
	if cmdEnd == 0 {
		return codecErr("invalid command")
	}
	for _, c := range buf[:cmdEnd] {
		if c < 'A' || c > 'Z' {
			return codecErr("invalid command")
		}
	}
	esc := codecEscFor(d.Version, codecIsConnect(buf[:cmdEnd]))

	// Pass 1 over the raw bytes: find the end of the header block, enforce
	// limits and validate syntax, without allocating. Pass 2 below builds
	// the strings only once the whole frame is known to be good.
	pos := nl + 1
	nhdr := 0
	cl := -1
	for {
		rest := buf[pos:]
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			// A partial line is a header line unless it could still turn
			// out to be the blank line ("" or "\r" so far).
			if n := len(rest); n > 0 && !(n == 1 && rest[0] == '\r') {
				if maxHeaders > 0 && nhdr >= maxHeaders {
					return codecErr("too many headers")
				}
				if rest[n-1] == '\r' {
					n-- // may be the CR of a CRLF
				}
				if maxHeaderLen > 0 && n > maxHeaderLen {
					return codecErr("header too long")
				}
			}
			// Still to come: at least the blank line's LF, the body and the NUL.
			if maxFrame > 0 && max(cl, 0) > maxFrame-len(buf)-2 {
				return codecErr("frame too large")
			}
			return nil, 0, nil
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
			return codecErr("too many headers")
		}
		if maxHeaderLen > 0 && len(line) > maxHeaderLen {
			return codecErr("header too long")
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return codecErr("malformed header")
		}
		if colon == 0 {
			return codecErr("empty header name")
		}
		// Checking the whole line is equivalent to checking name and value
		// separately: ':' is never valid after a backslash.
		if esc != codecEscNone && !codecValidEscapes(line, esc) {
			return codecErr("undefined escape sequence")
		}
		// An escaped name can never unescape to "content-length" unless it
		// is literally that, so the raw bytes decide.
		if cl < 0 && string(line[:colon]) == "content-length" {
			n, msg := codecParseContentLength(line[colon+1:])
			if msg != "" {
				return codecErr(msg)
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
			return codecErr("frame too large")
		}
		if cl >= len(buf)-hdrEnd {
			return nil, 0, nil
		}
		end = hdrEnd + cl
		if buf[end] != 0 {
			return codecErr("missing NUL after body")
		}
	} else {
		i := bytes.IndexByte(buf[hdrEnd:], 0)
		if i < 0 {
			if maxFrame > 0 && len(buf) >= maxFrame {
				return codecErr("frame too large")
			}
			return nil, 0, nil
		}
		end = hdrEnd + i
		if maxFrame > 0 && end+1 > maxFrame {
			return codecErr("frame too large")
		}
	}

	// Pass 2: one string conversion for the command and the whole header
	// block; names and values are substrings of it unless they need
	// unescaping. Keeping one value keeps the block alive, but the block is
	// bounded by the limits and usually dies with the frame.
	s := string(buf[:hdrEnd])
	f := &Frame{Command: s[:cmdEnd]}
	if nhdr > 0 {
		hs := make([]Header, nhdr)
		p := nl + 1
		for k := range hs {
			i := strings.IndexByte(s[p:], '\n')
			if i < 0 { // unreachable: pass 1 saw the same bytes
				return codecErr("malformed header")
			}
			line := s[p : p+i]
			p += i + 1
			if i > 0 && line[i-1] == '\r' {
				line = line[:i-1]
			}
			colon := strings.IndexByte(line, ':')
			if colon < 0 { // unreachable, as above
				return codecErr("malformed header")
			}
			name, value := line[:colon], line[colon+1:]
			if esc != codecEscNone {
				name, value = codecUnescape(name), codecUnescape(value)
			}
			hs[k] = Header{Name: name, Value: value}
		}
		f.Headers = hs
	}
	if end > hdrEnd {
		f.Body = make([]byte, end-hdrEnd)
		copy(f.Body, buf[hdrEnd:end])
	}
	n := end + 1
	return f, n + codecSkipEOLs(buf[n:]), nil
}

// codecSkipEOLs returns the length of the run of complete EOLs at the start
// of b. A lone trailing '\r' is left alone: it may be the first half of a
// CRLF whose LF has not arrived yet.
func codecSkipEOLs(b []byte) int {
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

func codecValidEscapes(b []byte, esc codecEsc) bool {
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
			if esc != codecEscV12 {
				return false
			}
		default:
			return false
		}
		b = b[i+2:]
	}
}

// codecUnescape expects s to have passed codecValidEscapes.
func codecUnescape(s string) string {
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

// codecParseContentLength returns the length, or a FrameError message.
func codecParseContentLength(b []byte) (int, string) {
	if len(b) == 0 {
		return 0, "invalid content-length"
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, "invalid content-length"
		}
	}
	n := 0
	for _, c := range b {
		d := int(c - '0')
		if n > (codecMaxInt-d)/10 {
			// Well-formed but unrepresentable: no limit can admit it.
			return 0, "frame too large"
		}
		n = n*10 + d
	}
	return n, ""
}

// AppendFrame appends the wire form of a frame to dst. Header names and
// values are escaped per version, except for the CONNECT, STOMP and
// CONNECTED commands and V10, which are never escaped; there the caller must
// not pass names containing ':' or '\n', or values containing '\n' (nor, there
// and in V11, values ending in '\r', which would read back as a CRLF).
// It does not add content-length: callers add it as a header when they want
// it (required if body contains a NUL). The frame ends with NUL and no EOL.
func AppendFrame(dst []byte, v Version, command string, headers []Header, body []byte) []byte {
	esc := codecEscFor(v, command == "CONNECT" || command == "STOMP" || command == "CONNECTED")
	dst = append(dst, command...)
	dst = append(dst, '\n')
	for i := range headers {
		dst = codecAppendHeader(dst, esc, headers[i].Name, headers[i].Value)
	}
	dst = append(dst, '\n')
	dst = append(dst, body...)
	return append(dst, 0)
}

// AppendHeader appends "name:value\n" escaped per v (V10: not escaped).
func AppendHeader(dst []byte, v Version, name, value string) []byte {
	return codecAppendHeader(dst, codecEscFor(v, false), name, value)
}

// Escape returns s escaped per version for use in a header
// (V12: \\ \n \r : ; V11: \\ \n : ; V10 and unknown versions: unchanged).
func Escape(v Version, s string) string {
	tab := &codecEscTab[codecEscFor(v, false)]
	for i := 0; i < len(s); i++ {
		if tab[s[i]] != 0 {
			return string(codecAppendEscaped(make([]byte, 0, len(s)+8), tab, s))
		}
	}
	return s
}

// codecEscTab maps a byte to the letter of its escape sequence (0: sent
// as is), per escaping mode: cheaper per byte than a switch.
var codecEscTab = func() (t [3][256]byte) {
	for _, m := range []codecEsc{codecEscV11, codecEscV12} {
		t[m]['\\'], t[m]['\n'], t[m][':'] = '\\', 'n', 'c'
	}
	// 1.1 has no \r escape; a raw CR is sent as is.
	t[codecEscV12]['\r'] = 'r'
	return t
}()

func codecAppendHeader(dst []byte, esc codecEsc, name, value string) []byte {
	tab := &codecEscTab[esc]
	dst = codecAppendEscaped(dst, tab, name)
	dst = append(dst, ':')
	dst = codecAppendEscaped(dst, tab, value)
	return append(dst, '\n')
}

func codecAppendEscaped(dst []byte, tab *[256]byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		if e := tab[s[i]]; e != 0 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', e)
			start = i + 1
		}
	}
	return append(dst, s[start:]...)
}
