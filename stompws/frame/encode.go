package frame

// AppendFrame appends the wire form of a frame to dst. Header names and
// values are escaped per version, except for the CONNECT, STOMP and
// CONNECTED commands and V10, which are never escaped; there the caller must
// not pass names containing ':' or '\n', or values containing '\n' (nor, there
// and in V11, values ending in '\r', which would read back as a CRLF).
// It does not add content-length: callers add it as a header when they want
// it (required if body contains a NUL). The frame ends with NUL and no EOL.
func AppendFrame(dst []byte, v Version, command string, headers []Header, body []byte) []byte {
	esc := escFor(v, command == "CONNECT" || command == "STOMP" || command == "CONNECTED")
	dst = append(dst, command...)
	dst = append(dst, '\n')
	for i := range headers {
		dst = appendHeader(dst, esc, headers[i].Name, headers[i].Value)
	}
	dst = append(dst, '\n')
	dst = append(dst, body...)
	return append(dst, 0)
}

// AppendHeader appends "name:value\n" escaped per v (V10: not escaped).
func AppendHeader(dst []byte, v Version, name, value string) []byte {
	return appendHeader(dst, escFor(v, false), name, value)
}

// Escape returns s escaped per version for use in a header
// (V12: \\ \n \r : ; V11: \\ \n : ; V10 and unknown versions: unchanged).
func Escape(v Version, s string) string {
	tab := &escTab[escFor(v, false)]
	for i := 0; i < len(s); i++ {
		if tab[s[i]] != 0 {
			return string(appendEscaped(make([]byte, 0, len(s)+8), tab, s))
		}
	}
	return s
}

// escTab maps a byte to the letter of its escape sequence (0: sent as
// is), per escaping mode: cheaper per byte than a switch. It is built
// once and only read.
var escTab = func() (t [3][256]byte) {
	for _, m := range []escMode{escV11, escV12} {
		t[m]['\\'], t[m]['\n'], t[m][':'] = '\\', 'n', 'c'
	}
	// 1.1 has no \r escape; a raw CR is sent as is.
	t[escV12]['\r'] = 'r'
	return t
}()

func appendHeader(dst []byte, esc escMode, name, value string) []byte {
	tab := &escTab[esc]
	dst = appendEscaped(dst, tab, name)
	dst = append(dst, ':')
	dst = appendEscaped(dst, tab, value)
	return append(dst, '\n')
}

func appendEscaped(dst []byte, tab *[256]byte, s string) []byte {
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
