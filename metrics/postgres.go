package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Postgres is what the metrics read of the PostgreSQL store.
type Postgres interface {
	// NotifyQueueUsage is how full PostgreSQL's notification queue was
	// when last read (0 to 1; -1: not read yet).
	NotifyQueueUsage() float64
	// ReadPositions counts the read positions this node stored, and the
	// transactions that stored them.
	ReadPositions() (written, transactions uint64)
}

// WatchPostgres exposes the PostgreSQL store (docs/monitoring.md).
func (m *Metrics) WatchPostgres(pg Postgres) {
	f := promauto.With(m.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_postgres_notify_queue_usage",
		Help: "How full PostgreSQL's notification queue is, 0 to 1 (-1: not read yet); when full, read receipts and membership changes fail.",
	}, pg.NotifyQueueUsage)
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "chatd_read_positions_written_total",
		Help: "Read positions this node stored in PostgreSQL.",
	}, func() float64 {
		n, _ := pg.ReadPositions()
		return float64(n)
	})
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "chatd_read_position_transactions_total",
		Help: "Transactions in which this node stored read positions (each holds those waiting at a moment).",
	}, func() float64 {
		_, n := pg.ReadPositions()
		return float64(n)
	})
}
