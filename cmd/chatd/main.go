// Command chatd is a clustered STOMP-over-WebSocket chat server on NATS and
// JetStream. `chatd --dev` runs a single node with everything embedded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/chatd/chatd/app"
	"github.com/chatd/chatd/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
	if cfg.ShowVersion {
		fmt.Println("chatd", version)
		return 0
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := app.Start(ctx, cfg, version, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	select {
	case <-ctx.Done():
	case err := <-a.Done():
		log.Error("http server stopped", "err", err)
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
