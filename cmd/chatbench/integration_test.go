package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	chatdconfig "github.com/chatd/chatd/config"
	"github.com/chatd/chatd/node"
)

// startChatd runs a real chatd node in-process in dev mode (embedded NATS
// and JetStream, real HTTP listener on a free loopback port).
func startChatd(t *testing.T, flags ...string) string {
	t.Helper()
	return startChatdWith(t, append([]string{"--dev"}, flags...)...)
}

// startChatdWith is startChatd with no mode chosen: the flags choose.
func startChatdWith(t *testing.T, flags ...string) string {
	t.Helper()
	url, _ := startNode(t, flags...)
	return url
}

// startNode is startChatdWith that also returns a shutdown, which the
// test's cleanup then leaves out.
func startNode(t *testing.T, flags ...string) (string, func() error) {
	t.Helper()
	cfg, err := chatdconfig.Parse(append([]string{"--http", "127.0.0.1:0", "--data-dir", t.TempDir()}, flags...))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := node.Start(ctx, cfg, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start chatd: %v", err)
	}
	shutdown := sync.OnceValue(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return a.Shutdown(ctx)
	})
	t.Cleanup(func() {
		if err := shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return "ws://" + a.Addr() + "/ws", shutdown
}

// TestRunAgainstChatd runs a tiny version of every scenario against a real
// chatd, over the raw WebSocket and over SockJS's websocket transport, and
// checks that nothing is lost and the counts add up. (A SockJS connection
// that reached the raw endpoint would fail: its first frame must be "o".)
func TestRunAgainstChatd(t *testing.T) {
	url := startChatd(t)
	for _, transport := range []string{transportRaw, transportSockJS} {
		t.Run(transport, func(t *testing.T) { runAgainstChatd(t, url, transport) })
	}
}

func runAgainstChatd(t *testing.T, url, transport string) {
	cfg, err := parseConfig([]string{
		"--scenario", "custom", "--url", url, "--transport", transport, "--quiet",
		"--rooms", "3", "--members", "3", "--publishers", "2", "--rate", "100", "--duration", "500ms", "--receipts",
		"--idle", "4", "--storm", "10", "--storm-waves", "2", "--storm-hold", "50ms", "--storm-rooms", "2",
		"--sources", "127.0.0.1-127.0.0.3", "--server-pid", strconv.Itoa(os.Getpid()), "--sample-every", "50ms",
		"--timeout", "2m",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("report: %s", out)

	// 2 storm waves of 10, 4 idle, 3 rooms x 3 members (2 of whom publish).
	if c := rep.Conns; c.Attempted != 20+4+9 || c.Made != c.Attempted || c.Failed != 0 || c.Dropped != 0 {
		t.Errorf("connections %+v", c)
	}
	for _, w := range rep.Storm {
		if w.Made != 10 || w.Failed != 0 || w.ConnectLatency.Count != 10 {
			t.Errorf("storm wave %+v", w)
		}
	}
	if len(rep.Storm) != 2 || rep.Idle == nil || rep.Idle.Connections != 4 {
		t.Errorf("storm %d waves, idle %+v", len(rep.Storm), rep.Idle)
	}
	tr := rep.Traffic
	if tr == nil {
		t.Fatal("no traffic report")
	}
	m := tr.Counts
	// 6 publishers at 100/s for 0.5s: about 50 each.
	if m.Sent < 6*40 || m.Sent > 6*50 {
		t.Errorf("sent %d, want about 300", m.Sent)
	}
	if m.Expected != 3*m.Sent || m.Delivered != m.Expected || m.Lost != 0 || m.Duplicated != 0 ||
		m.OutOfOrder != 0 || m.Unexpected != 0 || m.Foreign != 0 {
		t.Errorf("messages %+v", m)
	}
	if tr.Latency.Count != m.Delivered || tr.Latency.MaxMS <= 0 || tr.Latency.P50MS > tr.Latency.P99MS {
		t.Errorf("latency %+v", tr.Latency)
	}
	if tr.Receipts == nil || tr.Receipts.Acked != m.Sent {
		t.Errorf("receipts %+v, want %d", tr.Receipts, m.Sent)
	}
	var inTimeline int64
	for _, k := range tr.Timeline {
		inTimeline += k.Delivered
	}
	if inTimeline > int64(m.Delivered) {
		t.Errorf("timeline counts %d deliveries of %d", inTimeline, m.Delivered)
	}
	if tr.Subscribers != 9 || tr.Publishers != 6 || tr.DeliveredPerSec <= 0 {
		t.Errorf("traffic %+v", tr)
	}
	if rep.Server == nil || rep.Server.Samples < 2 || rep.Server.RSSPeakMiB <= 0 {
		t.Errorf("server samples %+v", rep.Server)
	}
	if !rep.clean() {
		t.Error("report not clean")
	}
	var sb strings.Builder
	writeSummary(&sb, rep)
	for _, want := range []string{"lost 0", "storm wave 2", "idle", "latency", "(" + transport + ")"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sb.String())
		}
	}
}

// TestRunWithTokens loads a chatd that checks tokens, as production runs:
// chatbench signs one per login, makes the rooms and memberships through
// the API, and every phase's connections and messages get through. The
// same run without the secret is refused.
func TestRunWithTokens(t *testing.T) {
	const secret = "chatbench-test-secret-of-32-bytes-or-more"
	url := startChatdWith(t, "--jwt-secret", secret, "--jwt-issuer", "bench", "--send-rate", "0", "--max-connections-per-user", "0")
	args := []string{
		"--scenario", "custom", "--url", url, "--quiet", "--rooms", "2", "--members", "3", "--publishers", "1",
		"--separate-publishers", "--rate", "50", "--duration", "400ms", "--receipts",
		"--idle", "3", "--idle-rooms", "2", "--storm", "4", "--storm-rooms", "2", "--storm-hold", "50ms", "--timeout", "2m",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg, err := parseConfig(append(args, "--jwt-secret", secret, "--jwt-issuer", "bench"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// 2 rooms x (3 members + 1 publisher), 3 idle, 4 in the storm.
	if c := rep.Conns; c.Attempted != 8+3+4 || c.Made != c.Attempted || c.Failed != 0 {
		t.Errorf("with tokens: connections %+v", c)
	}
	m := rep.Traffic.Counts
	if m.Sent < 2*10 || m.Expected != 3*m.Sent || m.Delivered != m.Expected || m.Lost+m.Duplicated+m.OutOfOrder != 0 {
		t.Errorf("with tokens: messages %+v", m)
	}
	if r := rep.Traffic.Receipts; r == nil || r.Acked != m.Sent {
		t.Errorf("with tokens: receipts %+v, want %d", r, m.Sent)
	}

	cfg, err = parseConfig(append(args, "--room-prefix", "other-"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.JWTSecret = "" // not from the environment either
	rep, err = run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c := rep.Conns; c.Made != 0 || c.Failed != c.Attempted {
		t.Errorf("without tokens: connections %+v, want all refused", c)
	}
}

// TestRunSeparatePublishersFlatOut checks accounting when publishers do not
// subscribe and send as fast as the server takes them, bounded by --messages.
func TestRunSeparatePublishersFlatOut(t *testing.T) {
	url := startChatd(t)
	cfg, err := parseConfig([]string{
		"--scenario", "custom", "--url", url, "--quiet", "--rooms", "2", "--members", "4", "--publishers", "1",
		"--separate-publishers", "--messages", "200", "--duration", "20s", "--msg-size", "300",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Traffic.Counts
	if m.Sent != 400 || m.Expected != 1600 || m.Delivered != 1600 || m.Lost+m.Duplicated+m.OutOfOrder != 0 {
		t.Errorf("messages %+v", m)
	}
	if rep.Traffic.Subscribers != 8 || rep.Traffic.Publishers != 2 || rep.Conns.Made != 10 {
		t.Errorf("traffic %+v, connections %+v", rep.Traffic, rep.Conns)
	}
}

// TestIdleHeartBeats holds idle connections much longer than chatd allows
// silence (the client's interval, 100 ms, and 500 ms of grace, room for a
// busy machine's scheduling): only the client's heart-beats keep them
// open, over either transport.
func TestIdleHeartBeats(t *testing.T) {
	url := startChatd(t, "--heartbeat", "200ms", "--heartbeat-min", "100ms", "--heartbeat-grace", "500ms")
	for _, transport := range []string{transportRaw, transportSockJS} {
		t.Run(transport, func(t *testing.T) {
			cfg, err := parseConfig([]string{
				"--scenario", "idle", "--url", url, "--transport", transport, "--quiet", "--idle", "5", "--hold", "3s",
				"--heartbeat", "100ms",
			}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := run(ctx, cfg, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c := rep.Conns; c.Made != 5 || c.Dropped != 0 {
				t.Fatalf("connections %+v", c)
			}
			if rep.Idle == nil || rep.Idle.Connections != 5 || rep.Idle.HoldS < 3 {
				t.Fatalf("idle %+v", rep.Idle)
			}
		})
	}
}

// TestSockJSShutdown: a SockJS client of a chatd that shuts down hears an
// ERROR, then the SockJS close frame with WebSocket close 1012 (service
// restart), which ends its read loop.
func TestSockJSShutdown(t *testing.T) {
	url, shutdown := startNode(t, "--dev")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := dialSTOMP(ctx, newDialer(net.IPv4(127, 0, 0, 1)), connectOptions{
		url: url, sockjs: true, login: "u", host: "chat", heartBeat: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if _, err := c.subscribe(ctx, "0", "/topic/chat.shutdown"); err != nil {
		t.Fatal(err)
	}
	cl := &client{}
	done := make(chan error, 1)
	go func() { done <- c.serve(cl.handle, nil) }()
	if err := shutdown(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("the read loop did not end")
	}
	var ce *sockjsClose
	if !errors.As(err, &ce) || ce.code != int(websocket.StatusServiceRestart) {
		t.Errorf("read loop ended with %v, want a SockJS close 1012", err)
	}
	if cl.err != "server shutting down, reconnect" {
		t.Errorf("ERROR %q before the close", cl.err)
	}
}

// TestReplayStorm: --storm-since replays each storm room's prefilled
// history to every storm connection and waits for all of it, while the
// bystander's SENDs are receipted and timed.
func TestReplayStorm(t *testing.T) {
	url := startChatd(t)
	cfg, err := parseConfig([]string{
		"--scenario", "custom", "--url", url, "--quiet",
		"--storm", "20", "--storm-waves", "2", "--storm-rooms", "2", "--storm-since", "0", "--storm-prefill", "300",
		"--storm-bystander", "10ms", "--storm-hold", "50ms", "--timeout", "2m",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Storm) != 2 {
		t.Fatalf("%d storm waves, want 2", len(rep.Storm))
	}
	for _, w := range rep.Storm {
		rp, by := w.Replay, w.Bystander
		if rp == nil || rp.Wanted != 20 || rp.Completed != 20 || rp.Errors != 0 || rp.Latency.Count != 20 {
			t.Errorf("wave %d replays %+v, want all 20 complete", w.Wave, rp)
		}
		if by == nil || by.Sent == 0 || by.Receipted != by.Sent || len(by.Errors) != 0 || by.Latency.Count != uint64(by.Receipted) {
			t.Errorf("wave %d bystander %+v", w.Wave, by)
		}
	}
	if _, err := parseConfig([]string{"--scenario", "custom", "--url", url, "--storm", "5", "--storm-since", "0"}, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "--storm-since needs") {
		t.Errorf("--storm-since without rooms and prefill: %v, want it refused", err)
	}
}
