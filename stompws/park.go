// Idle sessions: the read loop's wait for input outside the WebSocket
// reader, pings answered there, and parking in the server's poller
// (poller_linux.go), which restarts the loop when input comes.

package stompws

import "time"

// parkAfter is how long a session's read loop waits for its client on a
// goroutine before it parks the session in the server's poller. Sessions
// in a conversation keep their goroutine (a park and wake-up cost two
// syscalls and a new goroutine); those only heart-beating (every 10 s or
// so) hold none most of the time.
const parkAfter = time.Second

// inputBuffered reports whether the client's input waits in the
// session's readers, unless the close handshake reads it now (handedOver).
func (s *Session) inputBuffered() (buffered, handedOver bool) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.handedOver {
		return false, true
	}
	return s.idle.buffered(), false
}

// answerPing answers a ping at the front of the client's input itself,
// and reports whether the input holds anything else: false sends the read
// loop back to waiting (for the next frame), and so to parking. Left to
// coder/websocket, a ping is answered inside its reader, whose goroutine
// then stays blocked there until a data frame comes: a client that pings
// every few seconds (OkHttp's pingInterval, say) would keep its session
// from ever parking.
// It runs between messages, with nothing buffered above the socket, where
// coder/websocket holds no partial frame (transport.go, assumption (c)).
func (s *Session) answerPing() (other bool, err error) {
	var buf [maxPing]byte
	s.rmu.Lock()
	if s.handedOver {
		s.rmu.Unlock()
		return true, nil // the reader finds the connection closing
	}
	p, ok, err := s.idle.takePing(&buf)
	s.rmu.Unlock()
	if err != nil || !ok {
		return true, err
	}
	// The pong is the payload where it lies, behind a header of its own.
	buf[4], buf[5] = 0x8A, byte(len(p))
	_, err = s.out.Write(buf[4 : 6+len(p)])
	return false, err
}

// Parking states of a session's read loop.
const (
	parkRunning = iota // the loop runs on its goroutine
	parkArming         // it is registering with the poller
	parkWoken          // an unpark came while it registered: it goes on
	parkParked         // it has no goroutine; unpark starts one
)

// parkIn hands the session's socket to the server's poller. False: it did
// not park (no poller, the socket is closing, or input came meanwhile),
// and the read loop goes on itself.
func (s *Session) parkIn() bool {
	p := s.srv.poller()
	if p == nil {
		return false
	}
	// The event may come before arm returns: it then finds parkArming and
	// leaves parkWoken, so that this loop goes on rather than a second.
	s.park.Store(parkArming)
	err := p.arm(s)
	if err == nil && s.park.CompareAndSwap(parkArming, parkParked) {
		return true
	}
	if err != nil {
		s.log.Debug("session not parked", "err", err)
	}
	s.park.Store(parkRunning)
	return false
}

// unpark restarts a parked session's read loop: its client has sent
// something, or its connection is closing. Called any number of times,
// from the poller or when the connection closes, it starts at most one
// loop per park.
func (s *Session) unpark() {
	for {
		switch st := s.park.Load(); st {
		case parkParked:
			if s.park.CompareAndSwap(st, parkRunning) {
				go s.srv.serve(s)
				return
			}
		case parkArming:
			if s.park.CompareAndSwap(st, parkWoken) {
				return
			}
		default:
			return
		}
	}
}
