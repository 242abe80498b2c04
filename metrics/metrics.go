// Package metrics is a node's Prometheus instrumentation
// (docs/monitoring.md): it observes the STOMP server (stompws.Observer),
// the chat domain (chat.Metrics), group commit (natsbus.CommitMetrics) and
// the archiver, and owns the registry that /metrics serves, so that two
// nodes in one process never share counters.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one node's instrumentation. Every labelled series is resolved
// once here: the hot paths only look up a counter (by a small fixed key)
// and add to it, without allocating.
type Metrics struct {
	reg *prometheus.Registry

	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	sessions         prometheus.Gauge
	subscriptions    prometheus.Gauge
	framesIn         map[string]prometheus.Counter
	framesOut        map[string]prometheus.Counter
	errors           map[string]prometheus.Counter
	slowConsumers    prometheus.Counter
	cuts             map[string]prometheus.Counter // by stompws.Cut* reason
	stored           prometheus.Counter
	publishFailures  prometheus.Counter
	publishSeconds   prometheus.Histogram
	batchAtomic      prometheus.Observer // messages per group commit batch, by how it was written
	batchSingle      prometheus.Observer
	batchSplits      prometheus.Counter
	liveReceived     prometheus.Counter
	delivered        [3]prometheus.Counter // by chat.DeliveryPath
	dropped          prometheus.Counter
	replays          [4]prometheus.Counter // by chat.ReplayOutcome
	historyPages     [2]prometheus.Counter // by chat.HistorySource
	replayReads      [2]prometheus.Counter // by chat.ReplaySource
	replayShared     prometheus.Gauge
}

var (
	_ stompws.Observer      = (*Metrics)(nil)
	_ chat.Metrics          = (*Metrics)(nil)
	_ natsbus.CommitMetrics = (*Metrics)(nil)
)

// errorKinds are the kinds of ERROR frame counted apart: the kinds
// stompws and stompapi give their errors. Any other counts as "other".
var errorKinds = []string{stompws.KindConnect, stompws.KindHeartbeat, stompws.KindLimit, stompws.KindMalformed,
	stompws.KindDestination, stompws.KindForbidden, stompws.KindRequest, stompws.KindSubscription, stompws.KindAck,
	stompws.KindSlowConsumer, stompws.KindShutdown, stompws.KindInternal, stompws.KindUnavailable, stompws.KindOther}

// cutReasons are why stompws cuts a connection (Observer.SessionCut).
var cutReasons = []string{stompws.CutWriteTimeout, stompws.CutWriteStall, stompws.CutShutdown}

// New makes a node's metrics in a registry of their own.
func New(node, version string) *Metrics {
	// Label values, all known up front. A client frame with any other
	// command counts as "other".
	clientCommands := []string{"CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
		"BEGIN", "COMMIT", "ABORT", "DISCONNECT", "other"}
	serverCommands := []string{stompws.CmdConnected, stompws.CmdMessage, stompws.CmdReceipt, stompws.CmdError}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := promauto.With(reg)
	m := &Metrics{reg: reg}
	f.NewGauge(prometheus.GaugeOpts{
		Name: "chatd_build_info", Help: "Always 1; the labels say which chatd this is.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "node": node},
	}).Set(1)
	m.connections = f.NewGauge(prometheus.GaugeOpts{
		Name: "chatd_websocket_connections", Help: "Open WebSocket connections.",
	})
	m.connectionsTotal = f.NewCounter(prometheus.CounterOpts{
		Name: "chatd_websocket_connections_total", Help: "WebSocket connections accepted.",
	})
	m.sessions = f.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chatd_sessions", Help: "STOMP sessions past CONNECT, by node.",
	}, []string{"node"}).WithLabelValues(node)
	m.subscriptions = f.NewGauge(prometheus.GaugeOpts{
		Name: "chatd_subscriptions", Help: "Active STOMP subscriptions.",
	})
	in := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_frames_received_total", Help: "STOMP frames received from clients, by command (heart-beats excluded).",
	}, []string{"command"})
	m.framesIn = make(map[string]prometheus.Counter, len(clientCommands))
	for _, c := range clientCommands {
		m.framesIn[c] = in.WithLabelValues(c)
	}
	out := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_frames_sent_total", Help: "STOMP frames written to clients, by command (heart-beats excluded).",
	}, []string{"command"})
	m.framesOut = make(map[string]prometheus.Counter, len(serverCommands))
	for _, c := range serverCommands {
		m.framesOut[c] = out.WithLabelValues(c)
	}
	errs := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_errors_total", Help: "ERROR frames sent to clients, by kind of message.",
	}, []string{"kind"})
	m.errors = make(map[string]prometheus.Counter, len(errorKinds))
	for _, k := range errorKinds {
		m.errors[k] = errs.WithLabelValues(k)
	}
	m.slowConsumers = f.NewCounter(prometheus.CounterOpts{
		Name: "chatd_slow_consumer_disconnects_total", Help: "Sessions cut off because the client did not keep up.",
	})
	cut := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_sessions_cut_total",
		Help: "Connections the server cut without a close handshake, by reason: write_timeout, write_stall, shutdown.",
	}, []string{"reason"})
	m.cuts = make(map[string]prometheus.Counter, len(cutReasons))
	for _, r := range cutReasons {
		m.cuts[r] = cut.WithLabelValues(r)
	}
	m.stored = f.NewCounter(prometheus.CounterOpts{
		Name: "chatd_messages_stored_total", Help: "Room messages posted through this node and acknowledged by JetStream.",
	})
	m.publishFailures = f.NewCounter(prometheus.CounterOpts{
		Name: "chatd_jetstream_publish_failures_total", Help: "Room messages JetStream did not store.",
	})
	m.publishSeconds = f.NewHistogram(prometheus.HistogramOpts{
		Name:    "chatd_jetstream_publish_seconds",
		Help:    "Time from a room message's SEND to JetStream's acknowledgement, the wait for its group commit batch included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms to about 4s
	})
	batch := f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "chatd_jetstream_batch_messages",
		Help:    "Room messages per group commit batch, by how the batch was written: atomic (one JetStream atomic batch) or single (message by message).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 to 512
	}, []string{"write"})
	m.batchAtomic = batch.WithLabelValues("atomic")
	m.batchSingle = batch.WithLabelValues("single")
	m.batchSplits = f.NewCounter(prometheus.CounterOpts{
		Name: "chatd_jetstream_batch_splits_total",
		Help: "Atomic batches JetStream refused (storing none of them) and sent again in parts (halves on replicated streams, single messages elsewhere), so that only the message at fault failed.",
	})
	m.liveReceived = f.NewCounter(prometheus.CounterOpts{
		Name: "chatd_live_messages_received_total",
		Help: "Room messages NATS brought this node for its own subscribers (interest-based: none for rooms nobody here watches).",
	})
	del := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_messages_delivered_total",
		Help: "Messages queued to subscriptions: live room messages, replayed room messages, user-queue and read events.",
	}, []string{"path"})
	m.delivered[chat.DeliveryLive] = del.WithLabelValues("live")
	m.delivered[chat.DeliveryReplay] = del.WithLabelValues("replay")
	m.delivered[chat.DeliveryQueue] = del.WithLabelValues("queue")
	m.dropped = f.NewCounter(prometheus.CounterOpts{
		Name: "chatd_deliveries_dropped_total",
		Help: "Deliveries refused because the subscription had just ended or its client was cut off as a slow consumer.",
	})
	rep := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_replays_total", Help: "SUBSCRIBEs with since-id, by how the replay began.",
	}, []string{"outcome"})
	m.replays[chat.ReplayComplete] = rep.WithLabelValues("complete")
	m.replays[chat.ReplayGap] = rep.WithLabelValues("gap")
	m.replays[chat.ReplayReset] = rep.WithLabelValues("reset")
	m.replays[chat.ReplayFailed] = rep.WithLabelValues("failed")
	pages := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_history_pages_total", Help: "History pages read, by where from: the archive up to its reach, or the log.",
	}, []string{"from"})
	m.historyPages[chat.HistoryFromLog] = pages.WithLabelValues("log")
	m.historyPages[chat.HistoryFromArchive] = pages.WithLabelValues("archive")
	rr := f.NewCounterVec(prometheus.CounterOpts{
		Name: "chatd_replay_reads_total",
		Help: "Batches replays read, by where from: the store (log or archive), or shared, read by another replay of the room on this node.",
	}, []string{"from"})
	m.replayReads[chat.ReplayFromStore] = rr.WithLabelValues("store")
	m.replayReads[chat.ReplayShared] = rr.WithLabelValues("shared")
	m.replayShared = f.NewGauge(prometheus.GaugeOpts{
		Name: "chatd_replay_share_bytes",
		Help: "History that running replays hold for the other replays of their rooms on this node (bounded by --replay-share).",
	})
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// stompws.Observer

func (m *Metrics) ConnectionOpened() {
	m.connections.Inc()
	m.connectionsTotal.Inc()
}
func (m *Metrics) ConnectionClosed() { m.connections.Dec() }
func (m *Metrics) SessionConnected() { m.sessions.Inc() }
func (m *Metrics) SessionEnded()     { m.sessions.Dec() }
func (m *Metrics) Subscribed()       { m.subscriptions.Inc() }
func (m *Metrics) Unsubscribed()     { m.subscriptions.Dec() }
func (m *Metrics) SlowConsumer()     { m.slowConsumers.Inc() }

func (m *Metrics) FrameIn(command string) {
	c, ok := m.framesIn[command]
	if !ok {
		c = m.framesIn["other"]
	}
	c.Inc()
}

func (m *Metrics) FramesOut(command string, n int) {
	if c, ok := m.framesOut[command]; ok {
		c.Add(float64(n))
	}
}

// SessionCut counts a connection the server cut, by why; a reason not
// declared in cutReasons is not counted.
func (m *Metrics) SessionCut(reason string) {
	if c, ok := m.cuts[reason]; ok {
		c.Inc()
	}
}

// ErrorSent counts an ERROR frame by its kind.
func (m *Metrics) ErrorSent(kind string) {
	c, ok := m.errors[kind]
	if !ok {
		c = m.errors[stompws.KindOther]
	}
	c.Inc()
}

// chat.Metrics

func (m *Metrics) MessageStored(took time.Duration) {
	m.stored.Inc()
	m.publishSeconds.Observe(took.Seconds())
}
func (m *Metrics) PublishFailed() { m.publishFailures.Inc() }
func (m *Metrics) LiveReceived()  { m.liveReceived.Inc() }
func (m *Metrics) Delivered(path chat.DeliveryPath, n int) {
	m.delivered[path].Add(float64(n))
}
func (m *Metrics) Dropped(n int)                       { m.dropped.Add(float64(n)) }
func (m *Metrics) Replayed(outcome chat.ReplayOutcome) { m.replays[outcome].Inc() }
func (m *Metrics) HistoryPage(from chat.HistorySource) { m.historyPages[from].Inc() }
func (m *Metrics) ReplayRead(from chat.ReplaySource)   { m.replayReads[from].Inc() }
func (m *Metrics) ReplayShareChanged(delta int64)      { m.replayShared.Add(float64(delta)) }

// natsbus.CommitMetrics

func (m *Metrics) BatchCommitted(n int, atomic bool) {
	if atomic {
		m.batchAtomic.Observe(float64(n))
	} else {
		m.batchSingle.Observe(float64(n))
	}
}
func (m *Metrics) BatchSplit() { m.batchSplits.Inc() }
