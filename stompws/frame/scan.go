package frame

import "bytes"

// View is one frame as Scan found it. Its parts alias Scan's buffer: they
// are valid, and unchanged, only as long as the buffer is. It is small
// enough to be returned in registers.
type View struct {
	buf            []byte // from the command to the NUL
	cmdEnd, hdrEnd int    // as in layout
}

// Scan finds the frame at the start of buf without copying it, for
// clients that read a server's frames at load. It is Decode's parser with
// STOMP 1.2's escaping (none for CONNECT, CONNECTED and STOMP) and no
// limits, and reports as Decode does: leading heart-beat EOLs give n > 0
// and an empty View (its Command is empty); an incomplete frame, n == 0;
// a malformed one, an *Error. For a frame, n includes the NUL and any
// EOLs directly after it.
func Scan(buf []byte) (View, int, error) {
	// Unless scan finds a frame, l is zero, and the View empty.
	l, n, err := scan(buf, Limits{}, V12)
	return View{buf: buf[:l.end], cmdEnd: l.cmdEnd, hdrEnd: l.hdrEnd}, n, err
}

// Command is the frame's command; empty for heart-beats.
func (v View) Command() []byte { return v.buf[:v.cmdEnd] }

// Body is the frame's body, without its NUL.
func (v View) Body() []byte { return v.buf[v.hdrEnd:] }

// Header returns the value of the first header with that name, unescaped
// (CONNECT, CONNECTED and STOMP frames are never escaped). Only the value
// is copied.
func (v View) Header(name string) (string, bool) {
	if v.cmdEnd == 0 {
		return "", false
	}
	esc := escFor(V12, isConnect(v.Command()))
	nl := v.cmdEnd // the command line's LF, after a CR if it has one
	if v.buf[nl] == '\r' {
		nl++
	}
	h := v.buf[nl+1 : v.hdrEnd]
	for len(h) > 0 {
		i := bytes.IndexByte(h, '\n')
		line := h[:i] // scan saw every header line end in LF
		h = h[i+1:]
		if i > 0 && line[i-1] == '\r' {
			line = line[:i-1]
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue // the blank line
		}
		raw := line[:colon]
		if esc != escNone && bytes.IndexByte(raw, '\\') >= 0 {
			if unescape(string(raw)) != name {
				continue
			}
		} else if string(raw) != name {
			continue
		}
		value := string(line[colon+1:])
		if esc != escNone {
			value = unescape(value)
		}
		return value, true
	}
	return "", false
}
