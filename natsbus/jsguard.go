package natsbus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// jsGuard watches the embedded server's JetStream and its disk. When the
// store's disk fills up, nats-server turns JetStream off on a clustered
// node ("JetStream out of resources, will be DISABLED") and leaves it
// off, so the node serves no JetStream and its stream replicas fall
// behind; on a single node the stream stops acknowledging writes ("critical
// write error") until JetStream restarts. The guard makes either loud (an
// ERROR line; Ready fails) and, once the disk has room again, turns
// JetStream back on (a clustered node's replicas then catch up from their
// peers) or restarts it (a single node's stream takes writes again), as a
// configuration reload of the server would.
type jsGuard struct {
	srv      *server.Server
	cfg      server.JetStreamConfig // as the server was started with
	dir      string                 // the store's directory, for its file system's free space
	every    time.Duration
	minFree  uint64
	single   bool // not clustered
	log      *slog.Logger
	stop     context.CancelFunc
	done     sync.WaitGroup
	mu       sync.Mutex
	disabled bool // seen disabled, not yet re-enabled
	full     bool // the disk seen full, and not yet with room again
	lastErr  error
}

// Guard defaults: how often JetStream is checked, and how much room its
// file system needs before JetStream is turned on again.
const (
	jsGuardEvery   = 5 * time.Second
	jsGuardMinFree = 64 << 20
)

func startJSGuard(srv *server.Server, cfg server.JetStreamConfig, dir string, single bool, every time.Duration, minFree uint64, log *slog.Logger) *jsGuard {
	ctx, cancel := context.WithCancel(context.Background())
	g := &jsGuard{srv: srv, cfg: cfg, dir: dir, single: single, every: every, minFree: minFree, log: log, stop: cancel}
	g.done.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				g.check()
			}
		}
	})
	return g
}

func (g *jsGuard) close() {
	g.stop()
	g.done.Wait()
}

// check looks at JetStream and its disk once, and turns JetStream on
// again, or restarts it, once the disk has room.
func (g *jsGuard) check() {
	if g.srv.JetStreamEnabled() {
		g.checkDisk()
		return
	}
	free, ferr := freeBytes(g.dir)
	g.mu.Lock()
	first := !g.disabled
	g.disabled = true
	g.mu.Unlock()
	if first {
		g.log.Error("JetStream is disabled on this node, as nats-server does when its store runs out of space: "+
			"this node stores and serves nothing until it is on again; chatd turns it on once the store's disk has room",
			"store", g.dir, "free_bytes", free, "needed_bytes", g.minFree)
	}
	if ferr != nil || free < g.minFree {
		return
	}
	cfg := g.cfg
	err := g.srv.EnableJetStream(&cfg)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		if g.lastErr == nil || g.lastErr.Error() != err.Error() {
			g.log.Error("turning JetStream on again failed; it is retried", "err", err)
		}
		g.lastErr = err
		return
	}
	g.disabled, g.lastErr = false, nil
	g.log.Warn("JetStream is on again on this node; its stream replicas catch up from their peers", "free_bytes", free)
}

// checkDisk says when the store's disk fills up, and restarts a single
// node's JetStream when it has room again: its stream, stopped by the
// failed write, takes writes again only then.
func (g *jsGuard) checkDisk() {
	free, err := freeBytes(g.dir)
	if err != nil {
		return
	}
	// Only the guard's goroutine changes full; err reads it under mu,
	// which is not held while JetStream restarts.
	g.mu.Lock()
	full := g.full
	if free < g.minFree && !full {
		g.full = true
	}
	g.mu.Unlock()
	switch {
	case free < g.minFree && !full:
		g.log.Error("the JetStream store's disk is full: this node's writes fail until it has room",
			"store", g.dir, "free_bytes", free, "needed_bytes", g.minFree)
	case free >= g.minFree && full:
		if !g.single {
			g.log.Warn("the JetStream store's disk has room again", "free_bytes", free)
		} else {
			g.log.Warn("the JetStream store's disk has room again: restarting JetStream, whose stream stopped taking writes when the disk filled",
				"free_bytes", free)
			if err := g.srv.ShutdownJetStream(); err != nil {
				g.log.Error("stopping JetStream to restart it failed", "err", err)
			}
			cfg := g.cfg
			if err := g.srv.EnableJetStream(&cfg); err != nil {
				// check turns it on later, as after a clustered node's.
				g.log.Error("restarting JetStream failed; it is retried", "err", err)
			}
		}
		g.mu.Lock()
		g.full = false
		g.mu.Unlock()
	}
}

// err is why this node's JetStream cannot store, or nil: it is off, or
// its disk is (nearly) full, where a clustered node's JetStream turns
// itself off and a single node's stream stops acknowledging writes.
func (g *jsGuard) err() error {
	free, ferr := freeBytes(g.dir)
	g.mu.Lock()
	full := g.full // until checkDisk has seen the room and restarted JetStream
	g.mu.Unlock()
	switch {
	case !g.srv.JetStreamEnabled():
		return fmt.Errorf("JetStream is disabled on this node (its store ran out of space?): %d bytes free in %s; "+
			"it is turned on again once %d are", free, g.dir, g.minFree)
	case ferr != nil:
		return ferr
	case free < g.minFree || full:
		return fmt.Errorf("the JetStream store's disk is full: %d bytes free in %s, fewer than %d", free, g.dir, g.minFree)
	}
	return nil
}

// freeBytes is what an unprivileged writer may still write to dir's file
// system.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil //nolint:gosec // Bsize is positive
}
