package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Replica reports this node's replica of the messages stream; known is
// false where the node cannot tell (then the gauges are absent, not 0).
type Replica func() (leader, current, known bool)

// WatchReplica exposes this node's replica of the messages stream
// (docs/monitoring.md).
func (m *Metrics) WatchReplica(r Replica) {
	if _, _, known := r(); !known {
		return
	}
	f := promauto.With(m.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_messages_stream_leader",
		Help: "1 while this node's embedded NATS server leads the room messages stream (every write goes through the leader), else 0. Summed over the cluster: 0 means no leader, so nothing can be stored.",
	}, func() float64 {
		l, _, _ := r()
		return bit(l)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_messages_stream_current",
		Help: "1 while this node's replica of the room messages stream is current (caught up with the leader), else 0: behind, catching up, or JetStream off on this node.",
	}, func() float64 {
		_, c, _ := r()
		return bit(c)
	})
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
