package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// scenario is one kind of fault: fault injects it, lets it last, and heals
// it.
type scenario struct {
	name  string
	about string
	tmpfs bool // the nodes' data directories are small tmpfs mounts (root only)
	fault func(ctx context.Context, c *cluster, o options, logf func(string, ...any)) error
}

func scenarioList() []scenario {
	return []scenario{
		{name: "kill-leader", about: "kill -9 the messages stream's leader, restart it", fault: killLeader},
		{name: "kill-two", about: "kill -9 the leader and one more node (the cluster loses its majority), restart both", fault: killTwo},
		{name: "stop", about: "SIGSTOP the leader for longer than the heart-beat, then SIGCONT", fault: stopLeader},
		{name: "disk-full", about: "fill the leader's data disk, then free it", tmpfs: true, fault: fillDisk},
	}
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarioList() {
		out = append(out, s.name)
	}
	return out
}

func scenarioByName(name string) (scenario, bool) {
	for _, s := range scenarioList() {
		if s.name == name {
			return s, true
		}
	}
	return scenario{}, false
}

func killLeader(ctx context.Context, c *cluster, o options, logf func(string, ...any)) error {
	l, err := c.leader(ctx)
	if err != nil {
		return err
	}
	logf("kill -9 %s", l.name)
	if err := l.kill9(); err != nil {
		return err
	}
	sleep(ctx, o.down)
	logf("restart %s", l.name)
	return l.start()
}

func killTwo(ctx context.Context, c *cluster, o options, logf func(string, ...any)) error {
	l, err := c.leader(ctx)
	if err != nil {
		return err
	}
	other := c.other(l)
	logf("kill -9 %s and %s", l.name, other.name)
	if err := errors.Join(l.kill9(), other.kill9()); err != nil {
		return err
	}
	sleep(ctx, o.down)
	logf("restart %s and %s", l.name, other.name)
	return errors.Join(l.start(), other.start())
}

func stopLeader(ctx context.Context, c *cluster, o options, logf func(string, ...any)) error {
	l, err := c.leader(ctx)
	if err != nil {
		return err
	}
	logf("SIGSTOP %s", l.name)
	if err := l.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	sleep(ctx, o.down)
	logf("SIGCONT %s", l.name)
	return l.signal(syscall.SIGCONT)
}

// fillDisk fills the leader's data disk with a file, checks that the node
// says it is not ready, then deletes the file.
func fillDisk(ctx context.Context, c *cluster, o options, logf func(string, ...any)) error {
	l, err := c.leader(ctx)
	if err != nil {
		return err
	}
	ballast := filepath.Join(l.dir, "ballast")
	logf("fill %s's data disk", l.name)
	if err := fill(ballast); err != nil {
		return err
	}
	var problem error
	deadline := time.Now().Add(o.down)
	for {
		if c.ready(ctx, l) != nil {
			logf("%s says it is not ready", l.name)
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			problem = fmt.Errorf("%s's /readyz answered 200 for %s with its data disk full", l.name, o.down)
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	sleep(ctx, time.Until(deadline))
	logf("free %s's data disk", l.name)
	return errors.Join(problem, os.Remove(ballast))
}

// fill writes to path until its file system has no room left.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return fmt.Errorf("fill %s: %w", path, err)
		}
	}
}
