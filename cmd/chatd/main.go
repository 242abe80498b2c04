// Command chatd is a clustered STOMP-over-WebSocket chat server on NATS and
// JetStream. `chatd --dev` runs a single node with everything embedded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/node"
)

// version may be set at build time with -ldflags "-X main.version=...";
// otherwise it comes from the build info (see buildVersion).
var version string

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := config.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Print(config.Usage())
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatd:", err)
		return 2
	}
	v := buildVersion(version)
	if cfg.ShowVersion {
		fmt.Println("chatd", v)
		return 0
	}
	if cfg.PrintConfig {
		if err := cfg.WriteTOML(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "chatd:", err)
			return 1
		}
		// Printed as it is; say too if chatd would refuse to start with it.
		if err := cfg.Validate(); err != nil {
			fmt.Fprintln(os.Stderr, "chatd:", err)
			return 2
		}
		return 0
	}
	log := newLogger(os.Stderr, cfg)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP loads --tls-cert and --tls-key again, as a certificate
	// manager's renewal hook asks; the node also notices changed files.
	// Caught from the start: SIGHUP's default is to end the process, and
	// one that comes while the node starts is handled once it has.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	a, err := node.Start(ctx, cfg, v, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-a.Done():
			log.Error("http server stopped", "err", err)
			break wait
		case <-hup:
			_ = a.ReloadTLS() // a failure is logged, and the old pair serves on
		}
	}
	stop() // a second signal now kills the process the default way
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := a.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}
