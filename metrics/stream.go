package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// WatchLeadership exposes whether this node leads the messages stream;
// leads reports it, and known is false where the node cannot tell (then
// the gauge is absent, not 0).
func (m *Metrics) WatchLeadership(leads func() (leads, known bool)) {
	if _, known := leads(); !known {
		return
	}
	promauto.With(m.reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatd_messages_stream_leader",
		Help: "1 while this node's embedded NATS server leads the room messages stream (every write goes through the leader), else 0. Summed over the cluster: 0 means no leader, so nothing can be stored.",
	}, func() float64 {
		if l, _ := leads(); l {
			return 1
		}
		return 0
	})
}
