// Package pgtest gives tests a PostgreSQL database of their own, on the
// server that CHATD_TEST_POSTGRES_URL names, and a TCP proxy that can cut
// a client off from it.
//
// Without CHATD_TEST_POSTGRES_URL the tests that need PostgreSQL skip,
// saying so; with CHATD_REQUIRE_POSTGRES set (as .ci/run does) they fail
// instead, so CI never skips them silently.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables the tests read.
const (
	// EnvURL names a PostgreSQL server and a database to connect to
	// there, as postgres://postgres@127.0.0.1:5432/postgres; the user
	// must be allowed to create databases.
	EnvURL = "CHATD_TEST_POSTGRES_URL"
	// EnvRequire turns a missing EnvURL into a failure.
	EnvRequire = "CHATD_REQUIRE_POSTGRES"
)

// ServerURL returns EnvURL, or skips (fails, with EnvRequire) without it.
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%s is set but %s is not: these tests need PostgreSQL", EnvRequire, EnvURL)
		}
		t.Skipf("PostgreSQL tests skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run them", EnvURL)
	}
	return u
}

// NewDatabase creates an empty database, dropped when the test ends, and
// returns its URL.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server := ServerURL(t)
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := "chatd_test_" + hex.EncodeToString(b[:])
	admin := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close(ctx) }()
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := admin("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create test database on %s: %v", redacted(server), err)
	}
	t.Cleanup(func() {
		// FORCE ends connections the test left open.
		if err := admin("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return withDatabase(t, server, name)
}

// withDatabase returns the connection URL u for database name instead.
func withDatabase(t testing.TB, u, name string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "postgres" && p.Scheme != "postgresql" {
		t.Fatalf("%s must be a postgres:// URL", EnvURL)
	}
	p.Path = "/" + name
	return p.String()
}

// WithHost returns the connection URL u for host:port instead.
func WithHost(t testing.TB, u, hostPort string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatalf("parse %s: %v", redacted(u), err)
	}
	p.Host = hostPort
	return p.String()
}

// ServerAddr is the host:port of the PostgreSQL server of URL u.
func ServerAddr(t testing.TB, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		t.Fatalf("%s must be a postgres:// URL with a host", EnvURL)
	}
	if p.Port() == "" {
		return net.JoinHostPort(p.Hostname(), "5432")
	}
	return p.Host
}

func redacted(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return "(unparsable URL)"
}

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
	wg    sync.WaitGroup
}

// NewProxy starts a proxy to target (host:port), stopped when the test ends.
//
// Its port is below Linux's ephemeral range (32768 and up), not one the
// kernel hands out: while the proxy is cut, a client retrying the address
// could otherwise be given that very port as its own and connect to
// itself, or another connection take it, and Restore find it in use.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	p := &Proxy{t: t, target: target, conns: map[net.Conn]struct{}{}}
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(20000+mrand.IntN(12000))); err == nil {
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
	copyClose := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	wg.Go(func() { copyClose(s, c) })
	wg.Go(func() { copyClose(c, s) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// Cut closes every proxied connection and stops accepting new ones.
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
