package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// setupTimeout bounds how long start-up waits for a JetStream cluster to
// have enough peers (a node of a 3-node cluster may start first).
const setupTimeout = 2 * time.Minute

// retry runs fn until it succeeds, fails for good, or setupTimeout passes.
// Errors that a cluster still forming returns (no meta leader, too few
// peers for the replicas asked, timeouts) are retried.
//
// Attempts are short: when several nodes create the same replicated stream
// at once, the requests that lose the race may get no answer at all.
func retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	return retryFor(ctx, log, what, setupTimeout, fn)
}

// retryFor is retry with its own bound: for writes that meet a stream or
// bucket whose leader is being replaced (a node died), fn must be safe to
// run again.
func retryFor(ctx context.Context, log *slog.Logger, what string, total time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	wait := 100 * time.Millisecond
	for {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		err := fn(actx)
		acancel()
		if err == nil {
			return nil
		}
		if !transient(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		log.Debug("retrying JetStream setup", "what", what, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: JetStream not available within %s: %w", what, total, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10023, // insufficient resources
			10005, // no suitable peers
			10008, // JetStream temporarily unavailable
			10058: // stream name in use: another node created it first
			return true
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse)
}
