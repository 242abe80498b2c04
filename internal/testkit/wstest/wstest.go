// Package wstest holds WebSocket helpers shared by benchmarks of several
// packages.
package wstest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"

	"github.com/coder/websocket"
)

// CountFrames reads c until it fails, adding the number of STOMP frames
// (NUL bytes) received to frames and signalling progress without blocking.
// It returns at once; the reading goes on in a goroutine.
func CountFrames(c *websocket.Conn, frames *atomic.Int64, progress chan<- struct{}) {
	go func() {
		buf := make([]byte, 64<<10)
		for {
			_, r, err := c.Reader(context.Background())
			if err != nil {
				return
			}
			for {
				n, err := r.Read(buf)
				if k := bytes.Count(buf[:n], []byte{0}); k > 0 {
					frames.Add(int64(k))
					select {
					case progress <- struct{}{}:
					default:
					}
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return
				}
			}
		}
	}()
}
