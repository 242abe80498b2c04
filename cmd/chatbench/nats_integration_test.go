package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/testlog"
)

// runNATS parses args for --target nats and runs them, with the child
// server's stderr kept for the test to read.
func runNATS(t *testing.T, stderr io.Writer, tweak func(*config), args ...string) *report {
	t.Helper()
	cfg, err := parseConfig(append([]string{"--target", "nats", "--scenario", "custom", "--quiet", "--timeout", "2m"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg, stderr)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("report: %s", out)
	return rep
}

// TestRunAgainstNATS runs the scenarios that need no STOMP against the
// nats-server chatbench starts as its child: every message reaches every
// subscriber of its room once and in order, the counts add up, the
// server's CPU and writes are its own, and the child is gone at the end.
func TestRunAgainstNATS(t *testing.T) {
	var stderr testlog.Buffer
	rep := runNATS(t, &stderr, nil,
		"--rooms", "3", "--members", "3", "--publishers", "2", "--rate", "100", "--duration", "500ms",
		"--idle", "4", "--storm", "10", "--storm-waves", "2", "--storm-hold", "50ms", "--storm-rooms", "2",
		"--sources", "127.0.0.1-127.0.0.3", "--sample-every", "50ms", "--heartbeat", "1s")

	if !strings.HasPrefix(rep.Config.URL, "ws://127.0.0.1:") || rep.Config.ServerPID <= 0 {
		t.Fatalf("url %q, server pid %d: want the child's", rep.Config.URL, rep.Config.ServerPID)
	}
	if err := syscall.Kill(rep.Config.ServerPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the nats-server child %d is still there (%v)", rep.Config.ServerPID, err)
	}
	if s := stderr.String(); s != "" {
		t.Errorf("stderr: %s", s)
	}
	// 2 storm waves of 10, 4 idle, 3 rooms x 3 members (2 of whom publish).
	if c := rep.Conns; c.Attempted != 20+4+9 || c.Made != c.Attempted || c.Failed != 0 || c.Dropped != 0 {
		t.Errorf("connections %+v", c)
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
	// A member that publishes receives its own messages too, as from chatd.
	if m.Expected != 3*m.Sent || m.Delivered != m.Expected || m.Lost != 0 || m.Duplicated != 0 ||
		m.OutOfOrder != 0 || m.Unexpected != 0 || m.Foreign != 0 {
		t.Errorf("messages %+v", m)
	}
	if tr.Latency.Count != m.Delivered || tr.Latency.MaxMS <= 0 || tr.Latency.P50MS > tr.Latency.P99MS {
		t.Errorf("latency %+v", tr.Latency)
	}
	if tr.Subscribers != 9 || tr.Publishers != 6 || tr.DeliveredPerSec <= 0 {
		t.Errorf("traffic %+v", tr)
	}
	if sc := tr.ServerCost; sc == nil || sc.Writes <= 0 || sc.BytesWritten <= 0 || sc.DeliveriesPerWrite <= 0 || sc.WindowS <= 0 {
		t.Errorf("server cost %+v", sc)
	}
	if rep.Server == nil || rep.Server.Samples < 2 || rep.Server.RSSPeakMiB <= 0 || rep.Server.PID != rep.Config.ServerPID {
		t.Errorf("server samples %+v", rep.Server)
	}
	if !rep.clean() {
		t.Error("report not clean")
	}
	var sb strings.Builder
	writeSummary(&sb, rep)
	for _, want := range []string{"(nats)", "lost 0", "storm wave 2", "server cost", "deliveries per write(2)"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, sb.String())
		}
	}
}

// TestRunNATSFlatOutAhead: flat out, held to 10 messages ahead of the
// slowest subscriber, every message arrives once and in order.
func TestRunNATSFlatOutAhead(t *testing.T) {
	rep := runNATS(t, io.Discard, nil, "--rooms", "2", "--members", "4", "--publishers", "1", "--separate-publishers",
		"--messages", "2000", "--duration", "20s", "--ahead", "10", "--msg-size", "300")
	m := rep.Traffic.Counts
	if m.Sent != 4000 || m.Expected != 16000 || m.Delivered != 16000 || m.Lost+m.Duplicated+m.OutOfOrder+m.Unexpected != 0 {
		t.Errorf("messages %+v", m)
	}
	if rep.Traffic.Ahead != 10 || rep.Conns.Made != 10 || rep.Conns.Dropped != 0 {
		t.Errorf("traffic %+v, connections %+v", rep.Traffic, rep.Conns)
	}
}

// TestNATSLostMessageCounted: a subscriber that never sees one message
// (it ignores it, as if the server had lost it) makes the run count it
// lost, exactly once, and the run unclean; the --ahead bound does not
// wait for the missing message.
func TestNATSLostMessageCounted(t *testing.T) {
	rep := runNATS(t, io.Discard, func(c *config) { c.dropOne = &dropSpec{room: 1, member: 2, seq: 7} },
		"--rooms", "2", "--members", "3", "--publishers", "1", "--separate-publishers",
		"--messages", "50", "--duration", "20s", "--drain", "2s", "--ahead", "5")
	m := rep.Traffic.Counts
	if m.Sent != 100 || m.Expected != 300 || m.Delivered != 299 || m.Lost != 1 || m.Duplicated+m.OutOfOrder+m.Unexpected != 0 {
		t.Errorf("messages %+v, want 1 of 300 lost", m)
	}
	if rep.clean() {
		t.Error("a run with a lost message is clean")
	}
}

// TestConfigNATSTarget: what the NATS target refuses, and that it starts
// its own server unless --url names one.
func TestConfigNATSTarget(t *testing.T) {
	c, err := parseConfig([]string{"--target", "nats", "--scenario", "fanout"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.URL != "" || c.subDest("r1") != "chat.r1" || c.sendDest("r1") != "chat.r1" {
		t.Errorf("url %q, destinations %q %q", c.URL, c.subDest("r1"), c.sendDest("r1"))
	}
	c, err = parseConfig([]string{"--target", "nats", "--scenario", "fanout", "--url", "ws://127.0.0.1:4222"}, io.Discard)
	if err != nil || c.URL != "ws://127.0.0.1:4222" {
		t.Errorf("explicit --url: %q, %v", c.URL, err)
	}
	for _, bad := range [][]string{
		{"--target", "amqp"},
		{"--target", "nats", "--receipts"},
		{"--target", "nats", "--transport", "sockjs"},
		{"--target", "nats", "--server-pid", "1"},
		{"--target", "nats", "--jwt-secret", "x"},
		{"--target", "nats", "--storm", "5", "--storm-rooms", "1", "--storm-since", "0", "--storm-prefill", "1"},
		{"--target", "nats", "--room-prefix", "a b"},
		{"--ahead", "-1"},
	} {
		if _, err := parseConfig(append([]string{"--scenario", "chat"}, bad...), io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
