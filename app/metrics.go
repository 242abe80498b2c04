package app

import (
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is a node's Prometheus instrumentation (docs/operations.md). It
// observes the STOMP server and the chat service, and owns the registry that
// /metrics serves, so that two nodes in one process never share counters.
//
// Every labelled series is resolved once here: the hot paths only look up a
// counter (by a small fixed key) and add to it, without allocating.
type metrics struct {
	reg *prometheus.Registry

	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	sessions         prometheus.Gauge
	subscriptions    prometheus.Gauge
	framesIn         map[string]prometheus.Counter
	framesOut        map[string]prometheus.Counter
	errors           map[string]prometheus.Counter
	slowConsumers    prometheus.Counter
	stored           prometheus.Counter
	publishFailures  prometheus.Counter
	publishSeconds   prometheus.Histogram
	batchAtomic      prometheus.Observer // messages per group commit batch, by how it was written
	batchSingle      prometheus.Observer
	batchSplits      prometheus.Counter
	delivered        [3]prometheus.Counter // by chat.DeliveryPath
	dropped          prometheus.Counter
	replays          [4]prometheus.Counter // by chat.ReplayOutcome
}

var (
	_ stompws.Observer      = (*metrics)(nil)
	_ chat.Metrics          = (*metrics)(nil)
	_ natsbus.CommitMetrics = (*metrics)(nil)
)

func newMetrics(node, version string) *metrics {
	// Label values, all known up front. A client frame with any other
	// command counts as "other"; errorKind returns only errorKinds.
	clientCommands := []string{"CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK",
		"BEGIN", "COMMIT", "ABORT", "DISCONNECT", "other"}
	serverCommands := []string{stompws.CmdConnected, stompws.CmdMessage, stompws.CmdReceipt, stompws.CmdError}
	errorKinds := []string{"connect", "heartbeat", "limit", "malformed", "destination", "forbidden",
		"request", "subscription", "ack", "slow_consumer", "shutdown", "internal", "other"}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	f := promauto.With(reg)
	m := &metrics{reg: reg}
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
		Help: "Atomic batches JetStream refused (storing none of them) whose messages were sent again one by one, so that only the one at fault failed.",
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
	return m
}

// handler serves the registry in the Prometheus exposition format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// stompws.Observer

func (m *metrics) ConnectionOpened() {
	m.connections.Inc()
	m.connectionsTotal.Inc()
}
func (m *metrics) ConnectionClosed() { m.connections.Dec() }
func (m *metrics) SessionConnected() { m.sessions.Inc() }
func (m *metrics) SessionEnded()     { m.sessions.Dec() }
func (m *metrics) Subscribed()       { m.subscriptions.Inc() }
func (m *metrics) Unsubscribed()     { m.subscriptions.Dec() }
func (m *metrics) SlowConsumer()     { m.slowConsumers.Inc() }

func (m *metrics) FrameIn(command string) {
	c, ok := m.framesIn[command]
	if !ok {
		c = m.framesIn["other"]
	}
	c.Inc()
}

func (m *metrics) FramesOut(command string, n int) {
	if c, ok := m.framesOut[command]; ok {
		c.Add(float64(n))
	}
}

func (m *metrics) ErrorSent(message string) { m.errors[errorKind(message)].Inc() }

// errorKind sorts an ERROR message (docs/protocol.md, Errors) into a small
// fixed set, since messages may carry client input.
func errorKind(msg string) string {
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	switch {
	case has("expected CONNECT", "login header required", "invalid login", "unsupported STOMP version",
		"no CONNECT frame", "invalid heart-beat header", "already connected", "credentials expired"):
		return "connect"
	case has("heart-beat timeout"):
		return "heartbeat"
	case has("frame too large", "too many headers", "header too long", "too many subscriptions",
		"too many open transactions", "transaction too large", "message too large"):
		return "limit"
	case has("invalid command", "malformed", "undefined escape sequence", "invalid content-length",
		"missing NUL", "unknown command", "SEND without", "SUBSCRIBE without", "UNSUBSCRIBE without", "BEGIN without"):
		return "malformed"
	case has("invalid destination", "cannot SEND to", "cannot SUBSCRIBE to"):
		return "destination"
	case has("forbidden"):
		return "forbidden"
	case has("invalid message body", "invalid log request", "invalid read receipt", "invalid since-id",
		"invalid client-msg-id", "invalid ack mode"):
		return "request"
	case has("subscription id", "no subscription"):
		return "subscription"
	case has("ACK for", "NACK for", "unknown transaction", "transaction "):
		return "ack"
	case has("slow consumer"):
		return "slow_consumer"
	case has("server shutting down"):
		return "shutdown"
	case has("internal error", "history unavailable"):
		return "internal"
	}
	return "other"
}

// chat.Metrics

func (m *metrics) MessageStored(took time.Duration) {
	m.stored.Inc()
	m.publishSeconds.Observe(took.Seconds())
}
func (m *metrics) PublishFailed() { m.publishFailures.Inc() }
func (m *metrics) Delivered(path chat.DeliveryPath, n int) {
	m.delivered[path].Add(float64(n))
}
func (m *metrics) Dropped(n int)                       { m.dropped.Add(float64(n)) }
func (m *metrics) Replayed(outcome chat.ReplayOutcome) { m.replays[outcome].Inc() }

// natsbus.CommitMetrics

func (m *metrics) BatchCommitted(n int, atomic bool) {
	if atomic {
		m.batchAtomic.Observe(float64(n))
	} else {
		m.batchSingle.Observe(float64(n))
	}
}
func (m *metrics) BatchSplit() { m.batchSplits.Inc() }
