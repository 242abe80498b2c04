package main

// The NATS target's server: chatbench re-executes itself as
// "chatbench serve-nats", a nats-server (the module chatd embeds) with
// only its WebSocket listener, on a free loopback port, without TLS or
// authentication, and no JetStream: the engine's own fan-out, nothing
// stored. A child process rather than a server in chatbench's process, so
// that the server's CPU and /proc/PID/io are its own, as chatd's are with
// --server-pid.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server" //nolint:depguard // the NATS target is nats-server itself, not chatd's bus
)

// serveNATSCommand is the hidden subcommand that runs the server.
const serveNATSCommand = "serve-nats"

// serveNATS runs a nats-server with a WebSocket listener on 127.0.0.1,
// prints its URL as one line on stdout once it takes connections, and
// stops when stdin ends (the parent closed it, or died) or on SIGTERM.
func serveNATS(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(serveNATSCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	ping := fs.Duration("ping-interval", 0, "how often the server PINGs a quiet client (0: nats-server's default, 2m)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	opts := &server.Options{
		ServerName: "chatbench-nats",
		DontListen: true, // no client port: only the WebSocket listener
		NoLog:      true,
		NoSigs:     true,
		Websocket:  server.WebsocketOpts{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoTLS: true},
	}
	if *ping > 0 {
		opts.PingInterval = *ping
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatbench serve-nats: configure nats-server:", err)
		return 1
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		_, _ = fmt.Fprintln(stderr, "chatbench serve-nats: nats-server not ready within 30s")
		return 1
	}
	if _, err := fmt.Fprintln(stdout, srv.WebsocketURL()); err != nil {
		srv.Shutdown()
		_, _ = fmt.Fprintln(stderr, "chatbench serve-nats: write URL:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		close(eof)
	}()
	select {
	case <-ctx.Done():
	case <-eof:
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	return 0
}

// natsChild is the serve-nats child of a run.
type natsChild struct {
	url   string
	pid   int
	stdin io.Closer
	kill  func() error
	// exited is closed once the child is gone; exitErr is then its exit.
	exited  chan struct{}
	exitErr error
}

// startNATSChild starts this executable as serve-nats and waits, within
// ctx, for the URL it prints.
func startNATSChild(ctx context.Context, ping time.Duration, stderr io.Writer) (*natsChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: find chatbench's executable: %w", err)
	}
	cmd := exec.Command(exe, serveNATSCommand, "--ping-interval", ping.String())
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start nats-server: %w", err)
	}
	c := &natsChild{pid: cmd.Process.Pid, stdin: stdin, kill: cmd.Process.Kill, exited: make(chan struct{})}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		_, _ = io.Copy(io.Discard, stdout) // Wait closes stdout once the child is gone
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	select {
	case s := <-line:
		c.url = strings.TrimSpace(s)
		if strings.HasPrefix(c.url, "ws://127.0.0.1:") {
			return c, nil
		}
		err = fmt.Errorf("start nats-server: it printed %q, not its WebSocket URL", s)
	case <-ctx.Done():
		err = fmt.Errorf("start nats-server: %w", ctx.Err())
	case <-t.C:
		err = errors.New("start nats-server: no URL within a minute")
	}
	_ = c.kill()
	<-c.exited
	return nil, err
}

// stop asks the child to stop (its stdin ends) and waits for it, killing
// it after 15 s.
func (c *natsChild) stop() error {
	_ = c.stdin.Close()
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
		if c.exitErr != nil {
			return fmt.Errorf("nats-server child %d: %w", c.pid, c.exitErr)
		}
		return nil
	case <-t.C:
		_ = c.kill()
		<-c.exited
		return fmt.Errorf("nats-server child %d did not stop within 15s; killed", c.pid)
	}
}
