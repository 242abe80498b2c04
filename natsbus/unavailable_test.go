package natsbus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chatd/chatd/storage"
)

// TestReadsUnavailable: reads that no server answers, as while a cluster
// has no stream leader or JetStream is off (here), are
// storage.ErrUnavailable (chat tells clients "unavailable", retry), as a
// write's failure is.
func TestReadsUnavailable(t *testing.T) {
	bus := startTestBus(t, t.TempDir(), DurabilityReplicated)
	l := openTestLog(t, bus, DurabilityReplicated)
	if err := bus.srv.DisableJetStream(); err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func(context.Context) error{
		"newest id": func(ctx context.Context) error { _, err := l.LastID(ctx, "r"); return err },
		"after":     func(ctx context.Context) error { _, err := l.After(ctx, "r", 0, 10); return err },
		"page":      func(ctx context.Context) error { _, err := l.Page(ctx, "r", 0, 10); return err },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := read(ctx)
		cancel()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s with no stream to answer: %v, want storage.ErrUnavailable", name, err)
		}
	}
}
