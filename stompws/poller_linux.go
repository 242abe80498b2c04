// The poller (epoll) that holds parked idle sessions without a goroutine
// each, and restarts their read loops when their clients send something.

package stompws

import (
	"errors"
	"fmt"
	"os"
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
// runtime's registration of the same socket is left as it is. The loop
// does not block in epoll_wait, which would hold a thread and, until the
// runtime took it back, a P: the epoll descriptor is itself registered
// with the runtime's poller (it is readable when it has events), and the
// loop waits there like any network read.
type poller struct {
	epfd int      // the epoll instance, owned by ep
	ep   *os.File // closed by stop, which ends the loop
	rc   syscall.RawConn
	done chan struct{}

	mu       sync.Mutex
	sessions map[uint64]*Session // by poll key (from 1), while registered
	next     uint64
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, fmt.Errorf("epoll: set non-blocking: %w", err)
	}
	// Non-blocking, so os.NewFile hands it to the runtime's poller.
	ep := os.NewFile(uintptr(epfd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		_ = ep.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &poller{epfd: epfd, ep: ep, rc: rc, done: make(chan struct{}), sessions: map[uint64]*Session{}}
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
	events := make([]syscall.EpollEvent, 256)
	for {
		var n int
		var werr error
		err := p.rc.Read(func(fd uintptr) bool {
			n, werr = syscall.EpollWait(int(fd), events, 0)
			// Nothing ready: the runtime waits for the descriptor.
			return n > 0 || (werr != nil && !errors.Is(werr, syscall.EINTR))
		})
		if err != nil || werr != nil {
			// Closed by stop, or (which nothing here can cause) a broken
			// descriptor: sessions parked on it are woken by their
			// connections' close (unpark) or heart-beat watchdogs.
			return
		}
		for i := range n {
			p.mu.Lock()
			s := p.sessions[pollKey(&events[i])]
			p.mu.Unlock()
			if s != nil {
				s.unpark()
			}
		}
	}
}

// stop ends the loop and closes the epoll instance. Sessions still
// registered are woken by their connections' close.
func (p *poller) stop() {
	_ = p.ep.Close()
	<-p.done
}
