package app

import (
	"context"
	"fmt"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/chatd/chatd/storage/postgres"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// openStore opens where rooms and memberships live: with --postgres-url,
// PostgreSQL (read positions staying in JetStream KV), with the message
// archive and its archiver; else JetStream KV alone, and no archive.
func (a *App) openStore(ctx context.Context, replicas int) (storage.Store, chat.Archive, error) {
	kv := kvstore.Config{Replicas: replicas, Logger: a.log}
	if a.cfg.PostgresURL == "" {
		s, err := kvstore.Open(ctx, a.bus, kv)
		return s, nil, err
	}
	db, err := postgres.Open(ctx, postgres.Options{URL: a.cfg.PostgresURL, Logger: a.log})
	if err != nil {
		return nil, nil, fmt.Errorf("--postgres-url: %w", err)
	}
	a.pg = db
	marks, err := kvstore.OpenReadMarks(ctx, a.bus, kv)
	if err != nil {
		return nil, nil, err
	}
	store, err := postgres.NewStore(ctx, db, marks)
	if err != nil {
		_ = marks.Close()
		return nil, nil, fmt.Errorf("--postgres-url: %w", err)
	}
	ar, err := postgres.NewArchiver(ctx, db, a.bus.JS, postgres.ArchiverConfig{Logger: a.log})
	if err != nil {
		_ = store.Close()
		return nil, nil, err
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ar.Run(actx)
	}()
	a.stopArchiver = func() {
		cancel()
		<-done
	}
	a.metrics.watchArchive(ar)
	a.log.Info("rooms and memberships in PostgreSQL; every message archived there")
	return store, db.Archive(), nil
}

// watchArchive exposes the archiver's progress (docs/monitoring.md).
func (m *metrics) watchArchive(ar *postgres.Archiver) {
	f := promauto.With(m.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_archive_pending_messages",
		Help: "Room messages in JetStream not yet copied to the PostgreSQL archive, by any node.",
	}, func() float64 {
		n, _ := ar.Lag()
		return float64(n)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_archive_lag_seconds",
		Help: "Age of the oldest room message not yet in the PostgreSQL archive (0: caught up).",
	}, func() float64 {
		_, age := ar.Lag()
		return age.Seconds()
	})
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "chatd_archived_messages_total",
		Help: "Room messages this node wrote to the PostgreSQL archive.",
	}, func() float64 { return float64(ar.Archived()) })
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "chatd_archive_write_failures_total",
		Help: "Archive writes to PostgreSQL that failed (each is retried until it succeeds).",
	}, func() float64 { return float64(ar.Failures()) })
}
