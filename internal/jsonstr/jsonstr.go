// Package jsonstr escapes bytes into a JSON string without allocating:
// SockJS's frames, written by stompws and by the load tool.
package jsonstr

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// Append appends p as the inside of a JSON string (no quotes). SockJS
// carries text: bytes that are not UTF-8 become U+FFFD, as with
// encoding/json. U+2028 and U+2029 are escaped, as sockjs-node does,
// for JavaScript parsers that take them for line ends. (encoding/json
// has no append form for a []byte that would spare this; its Marshal
// allocates a string and a result per message.)
func Append(dst, p []byte) []byte {
	start := 0
	for i := 0; i < len(p); {
		c := p[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, p[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, p[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, p[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(dst, p[start:]...)
}
