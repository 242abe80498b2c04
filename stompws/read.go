// The session's read loop: WebSocket messages read in chunks into a
// pooled buffer, and decoded into frames for commands.go as they complete.

package stompws

import (
	"errors"
	"io"
	"time"

	"github.com/chatd/chatd/stompws/frame"
	"github.com/coder/websocket"
)

// readLoop reads the session's frames until it ends, or until it parks:
// then parked is true, and the poller (or unpark) starts it again.
// Its frames are kept small (the work is in readNext and finish): they
// are what a session holds while it waits for parkAfter.
func (s *Session) readLoop() (parked bool, err error) {
	for {
		select {
		case <-s.stop:
			// Closing: the writer owns the connection now, and its close
			// handshake reads the client's last frames itself.
			return false, errStop
		default:
		}
		if s.idle != nil {
			buffered, handedOver := s.inputBuffered()
			if handedOver {
				return false, errStop
			}
			if !buffered {
				ready, err := s.idle.waitFor(parkAfter)
				if err != nil {
					return false, err
				}
				if !ready {
					if s.parkIn() {
						return true, nil
					}
					if err := s.idle.wait(); err != nil {
						return false, err
					}
				}
				other, err := s.answerPing()
				if err != nil {
					return false, err
				}
				if !other {
					continue
				}
			}
		}
		if err := s.readNext(); err != nil {
			return false, err
		}
	}
}

// readNext reads and handles one WebSocket message.
func (s *Session) readNext() error {
	typ, r, err := s.conn.Reader(s.ctx)
	if err != nil {
		return err
	}
	_ = typ // STOMP frames arrive as text or binary alike
	if s.sockjsBeat > 0 {
		return s.readSockJSMessage(r)
	}
	return s.readFrom(r)
}

// readFrom reads and handles one message from the client, in a pooled
// buffer that an idle session gives back.
func (s *Session) readFrom(r io.Reader) error {
	s.lastRead.Store(time.Now().UnixNano())
	if s.rbuf == nil {
		s.rbufp = s.srv.rbufs.Get().(*[]byte)
		s.rbuf = (*s.rbufp)[:0]
	}
	if err := s.readMessage(r); err != nil {
		return err
	}
	if len(s.rbuf) == 0 {
		// An idle connection keeps no read buffer: the pooled one goes
		// back, a grown one to the collector.
		if cap(s.rbuf) == readBufSize {
			*s.rbufp = s.rbuf
			s.srv.rbufs.Put(s.rbufp)
		}
		s.rbuf, s.rbufp = nil, nil
	}
	return nil
}

// readBufSize is a session's read buffer while it reads a message; it
// grows, up to the frame limit, only for a frame that needs it.
const readBufSize = 4096

// readMessage reads one WebSocket message in chunks, decoding frames as
// they complete, so that no more than one frame's limit is ever buffered.
func (s *Session) readMessage(r io.Reader) error {
	for {
		if cap(s.rbuf)-len(s.rbuf) < 2048 {
			want := max(2*cap(s.rbuf), readBufSize)
			want = min(want, s.dec.Limits.MaxFrameSize+4096)
			if want-len(s.rbuf) < 512 {
				// A partial frame has filled the buffer: the decoder
				// reports a too-large frame before this; belt and braces.
				s.fail(&Error{Kind: KindLimit, Message: "frame too large"}, "", websocket.StatusMessageTooBig, false)
				return errStop
			}
			nb := make([]byte, len(s.rbuf), want)
			copy(nb, s.rbuf)
			s.rbuf = nb
		}
		n, rerr := r.Read(s.rbuf[len(s.rbuf):cap(s.rbuf)])
		s.rbuf = s.rbuf[:len(s.rbuf)+n]
		if n > 0 {
			if err := s.decodeFrames(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (s *Session) decodeFrames() error {
	off := 0
	defer func() {
		n := copy(s.rbuf, s.rbuf[off:])
		s.rbuf = s.rbuf[:n]
	}()
	for off < len(s.rbuf) {
		f, n, err := s.dec.Decode(s.rbuf[off:])
		if err != nil {
			e := &Error{Kind: KindMalformed, Message: "malformed frame"}
			var fe *frame.Error
			if errors.As(err, &fe) {
				e.Message = fe.Msg
				if fe.Limit {
					e.Kind = KindLimit
				}
			}
			s.fail(e, "", closePolicy, false)
			return errStop
		}
		if n == 0 {
			return nil
		}
		off += n
		if f == nil {
			continue // heart-beat
		}
		if err := s.handle(f); err != nil {
			return err
		}
	}
	return nil
}
