package tcpproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echo serves a line echo on a port of its own.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := bufio.NewReader(c).ReadString('\n')
	return err
}

// TestProxyCutsAndRestores: connections through the proxy work, end when
// it is cut, are refused while it is, and work again after.
func TestProxyCutsAndRestores(t *testing.T) {
	p := New(t, echo(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := roundTrip(c); err != nil {
		t.Fatal(err)
	}
	p.Cut()
	if err := roundTrip(c); err == nil {
		t.Fatal("a connection through a cut proxy still works")
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		_ = c2.Close()
		t.Fatal("a cut proxy took a new connection")
	}
	p.Restore()
	again, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("after Restore: %v", err)
	}
	defer func() { _ = again.Close() }()
	if err := roundTrip(again); err != nil {
		t.Fatalf("after Restore: %v", err)
	}
}

// TestProxyHolds: while held, what the client sends reaches the server
// but the server's answer does not reach the client, and Cut drops it.
func TestProxyHolds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
		_, _ = c.Write([]byte("pong\n"))
		_, _ = io.Copy(io.Discard, c)
	}()
	p := New(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	p.Hold()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case line := <-got:
		if line != "ping\n" {
			t.Fatalf("the server read %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a held proxy kept back what the client sent")
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := c.Read(make([]byte, 16)); err == nil {
		t.Fatalf("a held proxy passed %d bytes of the server's answer", n)
	}
	p.Cut()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 16)); err == nil {
		t.Fatalf("after Cut the client read %d bytes of what was held", n)
	}
}
