package e2e_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/stomptest"
)

// TestMetricsMoveWithTraffic scrapes /metrics, sends known traffic over
// real WebSockets, and checks that every series moved by exactly as much.
func TestMetricsMoveWithTraffic(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *config.Config) { c.ServerName = "metrics-node" })
	sessions := `chatd_sessions{node="metrics-node"}`
	before := scrape(t, n)
	for _, s := range []string{sessions, `chatd_frames_received_total{command="SEND"}`,
		`chatd_errors_total{kind="destination"}`, `chatd_replays_total{outcome="gap"}`,
		`chatd_messages_delivered_total{path="replay"}`, `chatd_deliveries_dropped_total`,
		`chatd_slow_consumer_disconnects_total`, `chatd_jetstream_publish_seconds_count`,
		`chatd_jetstream_batch_messages_count{write="atomic"}`, `chatd_jetstream_batch_splits_total`} {
		if _, ok := before[s]; !ok {
			t.Errorf("series %s is not exposed before any traffic", s)
		}
	}

	alice := dialRaw(t, n)
	alice.ConnectAs("alice", "1.2")
	alice.Subscribe("a", "/topic/chat.metrics")
	for i := range 3 {
		alice.Send(stomptest.Render("SEND", msgBody(fmt.Sprint("m", i)), "destination:/app/chat.metrics",
			"content-type:application/json", fmt.Sprint("receipt:r", i)))
	}
	for range 6 { // three RECEIPTs and three MESSAGEs, in either order
		if f := alice.Frame(); f.Command != "RECEIPT" && f.Command != "MESSAGE" {
			t.Fatalf("alice got %s %v", f.Command, f.Header)
		}
	}
	bob := dialRaw(t, n)
	bob.ConnectAs("bob", "1.2")
	bob.Subscribe("b", "/topic/chat.metrics", "since-id:0") // replays the three
	for range 3 {
		bob.Expect("MESSAGE")
	}
	mallory := dialRaw(t, n)
	mallory.ConnectAs("mallory", "1.2")
	mallory.Send(stomptest.Render("SEND", msgBody("x"), "destination:/app/nowhere"))
	mallory.ExpectError("invalid destination")

	waitDeltas(t, n, before, map[string]float64{
		"chatd_websocket_connections_total":                3,
		"chatd_websocket_connections":                      2, // mallory was closed
		sessions:                                           2,
		"chatd_subscriptions":                              2,
		`chatd_frames_received_total{command="CONNECT"}`:   3,
		`chatd_frames_received_total{command="SUBSCRIBE"}`: 2,
		`chatd_frames_received_total{command="SEND"}`:      4,
		`chatd_frames_sent_total{command="CONNECTED"}`:     3,
		`chatd_frames_sent_total{command="RECEIPT"}`:       5, // two SUBSCRIBEs, three SENDs
		`chatd_frames_sent_total{command="MESSAGE"}`:       6, // three live to alice, three replayed to bob
		`chatd_frames_sent_total{command="ERROR"}`:         1,
		`chatd_errors_total{kind="destination"}`:           1,
		"chatd_messages_stored_total":                      3,
		"chatd_jetstream_publish_seconds_count":            3,
		// Three messages are below an atomic batch's minimum, however
		// they were gathered.
		`chatd_jetstream_batch_messages_sum{write="single"}`: 3,
		`chatd_jetstream_batch_messages_sum{write="atomic"}`: 0,
		"chatd_jetstream_batch_splits_total":                 0,
		`chatd_messages_delivered_total{path="live"}`:        3,
		`chatd_messages_delivered_total{path="replay"}`:      3,
		`chatd_replays_total{outcome="complete"}`:            1,
		"chatd_deliveries_dropped_total":                     0,
		"chatd_slow_consumer_disconnects_total":              0,
		`chatd_frames_received_total{command="DISCONNECT"}`:  0,
	})

	// Sessions that end take their gauges with them.
	_ = alice.WS.CloseNow()
	_ = bob.WS.CloseNow()
	waitDeltas(t, n, before, map[string]float64{
		"chatd_websocket_connections": 0,
		sessions:                      0,
		"chatd_subscriptions":         0,
	})
}

// waitDeltas polls /metrics until every series has moved from before by
// exactly its delta, or fails after 10s with what differs.
func waitDeltas(t *testing.T, n *node, before map[string]float64, deltas map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		now := scrape(t, n)
		var diffs []string
		for _, s := range slices.Sorted(maps.Keys(deltas)) {
			if got := now[s] - before[s]; got != deltas[s] {
				diffs = append(diffs, fmt.Sprintf("%s moved by %v, want %v", s, got, deltas[s]))
			}
		}
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics after 10s:\n%s", strings.Join(diffs, "\n"))
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}
