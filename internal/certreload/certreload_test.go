package certreload_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/certreload"
	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/internal/testkit/wait"
)

// serve answers TLS handshakes with r's certificate until the test ends.
func serve(t *testing.T, r *certreload.Reloader) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12})
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
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// handshake returns the serial of the certificate addr shows a client
// that trusts ca, or the handshake's error.
func handshake(addr string, ca *certtest.CA) (string, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func TestReloadOnFileChange(t *testing.T) {
	ca := certtest.NewCA(t, "test")
	first, second := ca.Issue("first"), ca.Issue("second")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first.CopyTo(t, certFile, keyFile)
	var logs testlog.Buffer
	r, err := certreload.New(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Watch(ctx, 10*time.Millisecond)
	addr := serve(t, r)

	if got, err := handshake(addr, ca); err != nil || got != first.Cert.SerialNumber.String() {
		t.Fatalf("handshake: serial %s, %v; want the first certificate's %s", got, err, first.Cert.SerialNumber)
	}
	if _, err := handshake(addr, certtest.NewCA(t, "other")); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("a client that does not trust the CA: %v, want unknown authority", err)
	}

	// A broken key: logged, and the first certificate serves on.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "an ERROR for the bad pair", func() error {
		if !strings.Contains(logs.String(), "level=ERROR msg=\"TLS certificate not reloaded") {
			return errors.New("not logged")
		}
		return nil
	})
	if got, err := handshake(addr, ca); err != nil || got != first.Cert.SerialNumber.String() {
		t.Fatalf("after a bad pair: serial %s, %v; want the first certificate's", got, err)
	}

	second.CopyTo(t, certFile, keyFile)
	wait.Until(t, "the second certificate", func() error {
		got, err := handshake(addr, ca)
		if err == nil && got != second.Cert.SerialNumber.String() {
			err = fmt.Errorf("serial %s", got)
		}
		return err
	})
}

func TestReloadOnRequest(t *testing.T) {
	ca := certtest.NewCA(t, "test")
	first, second := ca.Issue("first"), ca.Issue("second")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first.CopyTo(t, certFile, keyFile)
	r, err := certreload.New(certFile, keyFile, testlog.New())
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	second.CopyTo(t, certFile, keyFile)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := handshake(addr, ca); err != nil || got != second.Cert.SerialNumber.String() {
		t.Fatalf("after Reload: serial %s, %v; want the second certificate's", got, err)
	}
	if err := os.WriteFile(certFile, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a bad pair succeeded")
	}
	if got, err := handshake(addr, ca); err != nil || got != second.Cert.SerialNumber.String() {
		t.Fatalf("after a bad Reload: serial %s, %v; want the second certificate's", got, err)
	}
}

func TestNewRefusesBadPair(t *testing.T) {
	ca := certtest.NewCA(t, "test")
	a, b := ca.Issue("a"), ca.Issue("b")
	if _, err := certreload.New(a.CertFile, b.KeyFile, testlog.New()); err == nil {
		t.Fatal("New with a mismatched key succeeded")
	}
}
