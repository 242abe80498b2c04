package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// WorkingSetStats is what the metrics read of a node's working set: the
// rooms it holds, their memberships and read positions, and the loads and
// evictions so far.
type WorkingSetStats func() (rooms, entries int, loads, evictions uint64)

// WatchWorkingSet exposes the working set (docs/monitoring.md).
func (m *Metrics) WatchWorkingSet(stats WorkingSetStats) {
	f := promauto.With(m.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_working_set_rooms",
		Help: "Rooms this node holds in memory, with their members and read positions.",
	}, func() float64 {
		rooms, _, _, _ := stats()
		return float64(rooms)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_working_set_entries",
		Help: "Memberships and read positions this node holds in memory (bounded by --working-set).",
	}, func() float64 {
		_, entries, _, _ := stats()
		return float64(entries)
	})
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "chatd_working_set_loads_total",
		Help: "Rooms this node loaded from the store, on first use or again after an eviction or a reconnect.",
	}, func() float64 {
		_, _, loads, _ := stats()
		return float64(loads)
	})
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "chatd_working_set_evictions_total",
		Help: "Rooms this node dropped from memory to keep within --working-set.",
	}, func() float64 {
		_, _, _, ev := stats()
		return float64(ev)
	})
}
