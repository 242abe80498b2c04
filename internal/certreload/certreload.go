// Package certreload serves a TLS certificate from a pair of PEM files and
// takes a new pair without a restart: when the files change (polled) or
// when asked (chatd's SIGHUP). A pair that does not load, such as a
// certificate already replaced whose key is not yet, is logged and the
// last good pair stays in use.
package certreload

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Reloader holds the newest good certificate of one cert/key file pair.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
	// mu serializes loads; seen is the files' state at the last one, good
	// or bad, so that a bad pair is reported once, not at every poll.
	mu   sync.Mutex
	seen [2]fileStamp
}

// fileStamp tells a file's versions apart by their content: the files
// are small, and a time or size can stay the same across a rotation.
type fileStamp [sha256.Size]byte

// New loads the pair: chatd does not start with a pair that does not load.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.loadLocked(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the newest good pair.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// Certificate is the leaf in use.
func (r *Reloader) Certificate() *x509.Certificate {
	return r.cert.Load().Leaf
}

// Reload loads the pair again. On failure it logs an ERROR, keeps the
// certificate in use and returns the error.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *Reloader) reloadLocked() error {
	if err := r.loadLocked(); err != nil {
		r.log.Error("TLS certificate not reloaded: the previous one stays in use",
			"cert", r.certFile, "key", r.keyFile, "err", err)
		return err
	}
	r.log.Info("TLS certificate reloaded", "cert", r.certFile, "subject", r.Certificate().Subject.String(),
		"not_after", r.Certificate().NotAfter)
	return nil
}

func (r *Reloader) loadLocked() error {
	r.seen = [2]fileStamp{stamp(r.certFile), stamp(r.keyFile)}
	pair, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	if pair.Leaf == nil {
		return errors.New("load TLS key pair: no leaf certificate")
	}
	r.cert.Store(&pair)
	return nil
}

// Watch reloads the pair whenever either file changes, checking every
// interval, until ctx ends.
func (r *Reloader) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		if now := [2]fileStamp{stamp(r.certFile), stamp(r.keyFile)}; now != r.seen {
			_ = r.reloadLocked() // logged; the old pair serves on
		}
		r.mu.Unlock()
	}
}

func stamp(path string) fileStamp {
	b, err := os.ReadFile(path)
	if err != nil {
		return fileStamp{} // missing for now: a change when it comes back
	}
	return sha256.Sum256(b)
}
