package stompws

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestWSFrameHeaders: wsFrame writes the shortest header RFC 6455 allows
// for each payload length, unmasked, final, with the right opcode, right
// before the payload.
func TestWSFrameHeaders(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 300000} {
		for _, bin := range []bool{false, true} {
			payload := bytes.Repeat([]byte{'p'}, n)
			f := wsFrame(append(make([]byte, wsHeaderMax), payload...), bin)
			wantOp := byte(0x81)
			if bin {
				wantOp = 0x82
			}
			if f[0] != wantOp {
				t.Fatalf("n=%d: first byte %#x, want %#x", n, f[0], wantOp)
			}
			var got, hdr int
			switch l := int(f[1]); {
			case l&0x80 != 0:
				t.Fatalf("n=%d: masked", n)
			case l <= 125:
				got, hdr = l, 2
			case l == 126:
				got, hdr = int(binary.BigEndian.Uint16(f[2:])), 4
			default:
				got, hdr = int(binary.BigEndian.Uint64(f[2:])), 10
			}
			wantHdr := 2
			if n > 125 {
				wantHdr = 4
			}
			if n > 65535 {
				wantHdr = 10
			}
			if got != n || hdr != wantHdr || !bytes.Equal(f[hdr:], payload) {
				t.Fatalf("n=%d: length %d in a %d-byte header (want %d), payload intact %v", n, got, hdr, wantHdr, bytes.Equal(f[hdr:], payload))
			}
		}
	}
}
