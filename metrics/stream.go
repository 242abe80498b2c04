package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Replica reports this node's replicas of the messages streams: of the
// partitions, how many it leads and how many are current; known is false
// where the node cannot tell (then the gauges are absent, not 0).
type Replica func() (leading, current, partitions int, known bool)

// WatchReplica exposes this node's replicas of the messages streams
// (docs/monitoring.md).
func (m *Metrics) WatchReplica(r Replica) {
	if _, _, _, known := r(); !known {
		return
	}
	f := promauto.With(m.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_messages_stream_leader",
		Help: "How many of the room messages streams (one per partition) this node's embedded NATS server leads: every write goes through a stream's leader. Summed over the cluster it is chatd_messages_partitions; less means a partition has no leader, so nothing can be stored in its rooms.",
	}, func() float64 {
		l, _, _, _ := r()
		return float64(l)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_messages_stream_current",
		Help: "How many of this node's replicas of the room messages streams are current (caught up with their leader); fewer than chatd_messages_partitions: behind, catching up, or JetStream off on this node.",
	}, func() float64 {
		_, c, _, _ := r()
		return float64(c)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_messages_partitions",
		Help: "How many streams the room messages are partitioned over (--partitions).",
	}, func() float64 {
		_, _, p, _ := r()
		return float64(p)
	})
}
