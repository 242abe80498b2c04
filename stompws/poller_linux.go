package stompws

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// poller holds idle sessions without a goroutine each. A session whose
// client has been silent for parkAfter registers its socket here (epoll,
// one-shot, level-triggered) and its read loop's goroutine returns; when
// the socket has input, or is closed by the peer, the poller starts the
// read loop again on a new goroutine. A parked goroutine costs its stack
// (4 KiB, the largest part of an idle session); a registration costs a
// map entry and the kernel's epoll item.
//
// The runtime's own poller cannot do this: it wakes goroutines, so each
// waiting connection needs one. This epoll instance is chatd's own; the
// runtime's registration of the same socket is left as it is.
type poller struct {
	epfd int
	wake [2]int // pipe: a byte written to wake[1] stops the loop
	done chan struct{}

	mu       sync.Mutex
	sessions map[uint64]*Session // by poll key, while registered
	next     uint64
}

// pollKeyStop is the wake pipe's key; sessions' keys start at 1.
const pollKeyStop = 0

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	p := &poller{epfd: epfd, done: make(chan struct{}), sessions: map[uint64]*Session{}}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setPollKey(&ev, pollKeyStop)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.closeFDs()
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	go p.run()
	return p, nil
}

func setPollKey(ev *syscall.EpollEvent, key uint64) {
	ev.Fd, ev.Pad = int32(uint32(key)), int32(uint32(key>>32))
}

func pollKey(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// arm registers the session's socket for one readiness event. It runs on
// the session's read loop, under the socket's reference (RawConn.Control),
// so the descriptor cannot be closed, and its number taken by another
// connection, meanwhile. A socket is removed from the epoll set by the
// kernel when it is closed.
func (p *poller) arm(s *Session) error {
	if s.pollKey == 0 {
		p.mu.Lock()
		p.next++
		s.pollKey = p.next
		p.sessions[s.pollKey] = s
		p.mu.Unlock()
	}
	op := syscall.EPOLL_CTL_MOD
	if !s.pollAdded {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setPollKey(&ev, s.pollKey)
	var cerr error
	if err := s.idle.rc.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(p.epfd, op, int(fd), &ev)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("epoll_ctl: %w", cerr)
	}
	s.pollAdded = true
	return nil
}

// forget drops a session that has ended.
func (p *poller) forget(s *Session) {
	if s.pollKey == 0 {
		return
	}
	p.mu.Lock()
	delete(p.sessions, s.pollKey)
	p.mu.Unlock()
}

func (p *poller) run() {
	defer close(p.done)
	defer p.closeFDs()
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// Nothing here can fail but a broken epoll descriptor; the
			// sessions parked on it are woken by their connections'
			// close (wakeReader) or their heart-beat watchdogs.
			return
		}
		for i := range n {
			key := pollKey(&events[i])
			if key == pollKeyStop {
				return
			}
			p.mu.Lock()
			s := p.sessions[key]
			p.mu.Unlock()
			if s != nil {
				s.unpark()
			}
		}
	}
}

// stop ends the loop. Sessions still registered are woken by their
// connections' close.
func (p *poller) stop() {
	_, _ = syscall.Write(p.wake[1], []byte{0})
	<-p.done
}

func (p *poller) closeFDs() {
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
	syscall.Close(p.epfd)
}
