package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// node is one chatd process of the cluster. Its addresses and data
// directory stay the same across restarts, as a pod's or a VM's would.
type node struct {
	name    string
	http    string // host:port of --http
	dir     string // --data-dir
	args    []string
	bin     string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the running process has exited
	killed  bool          // the harness ended the process itself
	crashes []string      // exits the harness did not cause
}

// cluster is three chatd processes routed to each other.
type cluster struct {
	nodes      []*node
	mounts     []string // tmpfs mounts to undo
	client     *http.Client
	partitions int // the nodes' --partitions
}

// startCluster starts n chatd processes and waits until each is ready.
// With tmpfsSize > 0 each node's data directory is a tmpfs of that size
// (root only), so that a scenario can fill it.
func startCluster(ctx context.Context, bin, work string, n int, tmpfsSize int64, extra []string) (*cluster, error) {
	c := &cluster{client: &http.Client{Timeout: 3 * time.Second}}
	routeAddrs := make([]string, n)
	var routes []string
	taken := map[string]bool{}
	for i := range routeAddrs {
		a, err := freeAddr(taken)
		if err != nil {
			return nil, err
		}
		routeAddrs[i] = a
		routes = append(routes, "nats-route://"+a)
	}
	for i := range n {
		httpAddr, err := freeAddr(taken)
		if err != nil {
			return nil, err
		}
		name := "n" + strconv.Itoa(i)
		dir := filepath.Join(work, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if tmpfsSize > 0 {
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(tmpfsSize, 10), "tmpfs", dir).CombinedOutput(); err != nil {
				c.close()
				return nil, fmt.Errorf("mount a tmpfs on %s: %v: %s", dir, err, bytes.TrimSpace(out))
			}
			c.mounts = append(c.mounts, dir)
		}
		args := append([]string{"--dev", "--name", name, "--http", httpAddr, "--data-dir", dir,
			"--cluster", routeAddrs[i], "--routes", strings.Join(routes, ","), "--log-format", "text"}, extra...)
		c.nodes = append(c.nodes, &node{name: name, http: httpAddr, dir: dir, args: args, bin: bin,
			logPath: filepath.Join(work, name+".log")})
	}
	for _, nd := range c.nodes {
		if err := nd.start(); err != nil {
			c.close()
			return nil, err
		}
	}
	if err := c.waitReady(ctx, c.nodes...); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// freeAddr finds a loopback port nobody listens on, below Linux's
// ephemeral range so that no outgoing connection takes it meanwhile.
func freeAddr(taken map[string]bool) (string, error) {
	for range 200 {
		addr := "127.0.0.1:" + strconv.Itoa(20000+rand.IntN(12000))
		if taken[addr] {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			_ = ln.Close()
			taken[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("no free port in 20000-31999")
}

func (n *node) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("%s: already running", n.name)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(n.bin, n.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.killed = cmd, exited, false
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		n.mu.Lock()
		if !n.killed {
			n.crashes = append(n.crashes, fmt.Sprintf("%s exited by itself: %v", n.name, err))
		}
		if n.cmd == cmd {
			n.cmd = nil
		}
		n.mu.Unlock()
		close(exited)
	}()
	return nil
}

// signal sends sig to the running process.
func (n *node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return fmt.Errorf("%s: not running", n.name)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		n.killed = true
	}
	return n.cmd.Process.Signal(sig)
}

// kill9 kills the process at once, as a crash or an OOM kill would, and
// waits for it to be gone.
func (n *node) kill9() error {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	if err := n.signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-exited
	return nil
}

// stop ends the process with SIGTERM (a graceful shutdown), killing it if
// it takes longer than wait.
func (n *node) stop(wait time.Duration) {
	n.mu.Lock()
	exited := n.exited
	running := n.cmd != nil
	n.mu.Unlock()
	if !running {
		return
	}
	_ = n.signal(syscall.SIGCONT) // a stopped process cannot handle SIGTERM
	_ = n.signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(wait):
		_ = n.signal(syscall.SIGKILL)
		<-exited
	}
}

// ready reports whether the node's /readyz answers 200.
func (c *cluster) ready(ctx context.Context, n *node) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.http+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// waitReady waits until every node given answers /readyz with 200.
func (c *cluster) waitReady(ctx context.Context, nodes ...*node) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, n := range nodes {
		for {
			err := c.ready(ctx, n)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s not ready: %w (log: %s)", n.name, err, n.logPath)
			}
			sleep(ctx, 200*time.Millisecond)
		}
	}
	return nil
}

// leader is the node that leads the messages stream, or the most of the
// partitions' streams, by its chatd_messages_stream_leader gauge, waiting
// for one if there is none.
func (c *cluster) leader(ctx context.Context) (*node, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var most *node
		top := 0.0
		for _, n := range c.nodes {
			if v, err := c.gauge(ctx, n, "chatd_messages_stream_leader"); err == nil && v > top {
				most, top = n, v
			}
		}
		if most != nil {
			return most, nil
		}
		if ctx.Err() != nil {
			return nil, errors.New("no node says it leads the messages stream")
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// waitCurrent waits until every node's replicas of the messages streams
// are current: a node that was down or had its JetStream off has caught
// up.
func (c *cluster) waitCurrent(ctx context.Context, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for _, n := range c.nodes {
		for {
			v, err := c.gauge(ctx, n, "chatd_messages_stream_current")
			if err == nil && v == float64(max(c.partitions, 1)) {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s's replica of the messages stream is not current %s after the fault healed", n.name, wait)
			}
			sleep(ctx, 200*time.Millisecond)
		}
	}
	return nil
}

// gauge reads one unlabelled series of the node's /metrics.
func (c *cluster) gauge(ctx context.Context, n *node, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.http+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no series %s", n.name, name)
}

// other is a node of the cluster that is none of these.
func (c *cluster) other(not ...*node) *node {
	for _, n := range c.nodes {
		found := false
		for _, x := range not {
			found = found || x == n
		}
		if !found {
			return n
		}
	}
	return nil
}

// close stops every node and undoes the mounts.
func (c *cluster) close() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Go(func() { n.stop(20 * time.Second) })
	}
	wg.Wait()
	for _, m := range c.mounts {
		_ = exec.Command("umount", m).Run()
	}
}

// crashes lists the exits of nodes the harness did not cause, and the
// panics, fatal errors and data races their logs show.
func (c *cluster) crashes() []string {
	var out []string
	for _, n := range c.nodes {
		n.mu.Lock()
		out = append(out, n.crashes...)
		n.mu.Unlock()
		b, err := os.ReadFile(n.logPath)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: log unreadable: %v", n.name, err))
			continue
		}
		for _, bad := range []string{"panic:", "fatal error:", "WARNING: DATA RACE"} {
			if i := bytes.Index(b, []byte(bad)); i >= 0 {
				line, _, _ := bytes.Cut(b[i:], []byte("\n"))
				out = append(out, fmt.Sprintf("%s log: %s", n.name, line))
			}
		}
	}
	return out
}

// errorLines counts each node's level=ERROR log lines.
func (c *cluster) errorLines() map[string]int {
	out := map[string]int{}
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.logPath)
		out[n.name] = bytes.Count(b, []byte("level=ERROR"))
	}
	return out
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
