// Package tcpproxy is a TCP proxy for tests that cut a component off from
// a server (PostgreSQL, NATS) and give it back, as a network failure would.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/port"
)

// Proxy is a TCP proxy in front of a server. Cut closes every connection
// through it and refuses new ones, as a network failure would; Restore
// takes connections again, on the same address.
type Proxy struct {
	t      testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	held  chan struct{} // while Hold holds the server's bytes; closed by Cut
	wg    sync.WaitGroup
}

// New starts a proxy to target (host:port), stopped when the test ends.
//
// Its port is below Linux's ephemeral range (32768 and up), not one the
// kernel hands out: while the proxy is cut, a client retrying the address
// could otherwise be given that very port as its own and connect to
// itself, or another connection take it, and Restore find it in use. It
// comes from port.Free, as the ports of the tests' servers do: chosen
// apart, a proxy once took the port a node was about to bind.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, target: target, conns: map[net.Conn]struct{}{}}
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port.Free(t))); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("proxy: no free port in 20000-31999: %v", err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.addr }

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
}

func (p *Proxy) pipe(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut meanwhile
		p.mu.Unlock()
		_ = c.Close()
		_ = s.Close()
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(s, c)
		_ = s.Close()
		_ = c.Close()
	})
	wg.Go(func() {
		p.copyHeld(c, s)
		_ = c.Close()
		_ = s.Close()
	})
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// copyHeld copies what the server sends to the client, holding it back
// while the proxy is held.
func (p *Proxy) copyHeld(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			held := p.held
			p.mu.Unlock()
			if held != nil {
				<-held
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Hold keeps back every byte the servers send, from now until Cut, while
// what clients send still reaches them: replies in flight at the Cut are
// lost, as when a network fails after the server acted on a request.
func (p *Proxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
}

// Cut closes every proxied connection and stops accepting new ones; what
// Hold kept back is dropped.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
}

// Restore accepts connections again, on the same address.
func (p *Proxy) Restore() {
	p.t.Helper()
	var err error
	for range 50 { // the port may take a moment to be free again
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("proxy: listen on %s again: %v", p.addr, err)
}
