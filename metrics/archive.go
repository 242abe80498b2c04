package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Archive is what the metrics read of the archiver's progress.
type Archive interface {
	// Lag is the archive's backlog: messages not yet archived, and the
	// age of the oldest.
	Lag() (pending uint64, age time.Duration)
	// Archived and Failures count this node's archive writes.
	Archived() uint64
	Failures() uint64
}

// WatchArchive exposes the archiver's progress (docs/monitoring.md).
func (m *Metrics) WatchArchive(ar Archive) {
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
