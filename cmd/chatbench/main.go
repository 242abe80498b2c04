// Command chatbench is a STOMP-over-WebSocket load generator for chatd, or
// any STOMP server whose destinations fit its templates. It runs chat-like
// traffic (many small rooms), fan-out (few big rooms), idle heart-beating
// connections and connection storms, and reports connections, messages
// sent, delivered, lost, duplicated and out of order, end-to-end latency,
// and the server's CPU and memory read from /proc. It only ever targets
// loopback addresses, and every phase is bounded so that it stops by itself.
//
//	chatbench --scenario fanout --server-pid $(pgrep -n chatd)
//	chatbench --scenario chat --rooms 1000 --members 5 --rate 10 --json
//	chatbench --scenario fanout --transport sockjs   # over SockJS's websocket transport
//
// See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
)

func main() {
	os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr))
}

func mainErr(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case serveNATSCommand:
			return serveNATS(args[1:], os.Stdin, stdout, stderr)
		case tableCommand:
			return tableMain(args[1:], stdout, stderr)
		case sustainableCommand:
			return sustainableMain(args[1:], stdout, stderr)
		}
	}
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatbench:", err)
		return 2
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			_, _ = fmt.Fprintln(stderr, "chatbench: --cpuprofile:", err)
			return 2
		}
		defer func() { _ = f.Close() }()
		if err := pprof.StartCPUProfile(f); err != nil {
			_, _ = fmt.Fprintln(stderr, "chatbench: --cpuprofile:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg, stderr)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatbench:", err)
		return 1
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatbench: encode report:", err)
		return 1
	}
	js = append(js, '\n')
	if cfg.JSON {
		_, err = stdout.Write(js)
	} else {
		writeSummary(stdout, rep)
	}
	if err == nil && cfg.JSONFile != "" {
		err = os.WriteFile(cfg.JSONFile, js, 0o644)
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatbench: write report:", err)
		return 1
	}
	if rep.Conns.Made == 0 {
		return 1
	}
	if cfg.Strict && !rep.clean() {
		return 1
	}
	return 0
}

// clean reports a run without loss, duplicates, reordering, failed or
// dropped connections.
func (rep *report) clean() bool {
	if rep.Conns.Failed > 0 || rep.Conns.Dropped > 0 || rep.Interruped {
		return false
	}
	if t := rep.Traffic; t != nil {
		c := t.Counts
		return c.Lost == 0 && c.Duplicated == 0 && c.OutOfOrder == 0 && c.Unexpected == 0
	}
	return true
}

func writeSummary(w io.Writer, rep *report) {
	c := rep.Config
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	speaks := c.Transport
	if c.Target == targetNATS {
		speaks = "nats"
	}
	p("chatbench: scenario %s, run %s, %s (%s), sources %d, %.1fs%s", c.Scenario, c.Run, c.URL, speaks, len(c.Sources), rep.ElapsedS,
		map[bool]string{true: " (INTERRUPTED: timeout or signal)"}[rep.Interruped])
	if rep.LoadAvg != "" {
		p("load average  %s at the start", rep.LoadAvg)
	}
	cr := rep.Conns
	p("connections   made %d of %d, failed %d%s, dropped %d", cr.Made, cr.Attempted, cr.Failed, byStage(cr.FailedByStage), cr.Dropped)
	if cr.Made > 0 {
		p("  connect     %s", latLine(cr.ConnectLatency))
	}
	for _, e := range cr.Errors {
		p("  error       %s", e)
	}
	for _, e := range cr.DropReasons {
		p("  dropped     %s", e)
	}
	for _, s := range rep.Storm {
		p("storm wave %d  made %d of %d in %.2fs (%.0f conns/s), dropped %d, closed in %.2fs", s.Wave, s.Made, s.Attempted, s.OpenS, s.ConnsPerSec, s.Dropped, s.CloseS)
		p("  connect     %s", latLine(s.ConnectLatency))
		if rp := s.Replay; rp != nil {
			p("  replays     %d of %d complete, %d ended with an ERROR, all within %.2fs", rp.Completed, rp.Wanted, rp.Errors, rp.WaitS)
			p("  replay time %s", latLine(rp.Latency))
		}
		if b := s.Bystander; b != nil {
			p("  bystander   %d SENDs, %d receipted, %d errors %v", b.Sent, b.Receipted, len(b.Errors), b.Errors)
			p("  receipt     %s", latLine(b.Latency))
		}
		if s.Server != nil {
			p("  server      %s", procLine(s.Server))
		}
	}
	if id := rep.Idle; id != nil {
		p("idle          %d connections held %.1fs", id.Connections, id.HoldS)
		if id.ServerRSSHeldMiB > 0 {
			p("  server RSS  %.1f MiB before, %.1f MiB held: %.1f KiB per connection", id.ServerRSSBaseMiB, id.ServerRSSHeldMiB, id.ServerKiBPerConn)
		}
		if id.Server != nil {
			p("  server      %s", procLine(id.Server))
		}
	}
	if t := rep.Traffic; t != nil {
		m := t.Counts
		rate := "flat out"
		if c.Rate > 0 {
			rate = fmt.Sprintf("%g msg/s each", c.Rate)
		}
		if t.Ahead > 0 {
			rate += fmt.Sprintf(", at most %d ahead of the slowest subscriber", t.Ahead)
		}
		p("traffic       %d rooms, %d subscribers, %d publishers (%s), published %.1fs", t.Rooms, t.Subscribers, t.Publishers, rate, t.PublishS)
		p("  messages    sent %d (%.0f/s), expected %d, delivered %d (%.0f/s), lost %d, duplicated %d, out of order %d",
			m.Sent, t.SentPerSec, m.Expected, m.Delivered, t.DeliveredPerSec, m.Lost, m.Duplicated, m.OutOfOrder)
		if m.Unexpected > 0 || m.Foreign > 0 {
			p("  other       unexpected %d, foreign %d", m.Unexpected, m.Foreign)
		}
		p("  latency     %s", latLine(t.Latency))
		if len(t.Timeline) > 0 {
			worst := t.Timeline[0]
			for _, k := range t.Timeline {
				if k.MaxLatencyMS > worst.MaxLatencyMS {
					worst = k
				}
			}
			p("  worst s     second %d: max latency %.1f ms, %d delivered (per-second timeline in --json)", worst.S, worst.MaxLatencyMS, worst.Delivered)
		}
		if t.BehindMaxMS > 0 {
			p("  behind      publishers fell up to %.1f ms behind schedule", t.BehindMaxMS)
		}
		if t.Receipts != nil {
			p("  receipts    %d, %s", t.Receipts.Acked, latLine(t.Receipts.Latency))
		}
		if t.Server != nil {
			p("  server      %s (while publishing)", procLine(t.Server))
		}
		if sc := t.ServerCost; sc != nil {
			p("  server cost %s", costLine(sc))
			p("  others      %.0f%% CPU (user mode) taken by other processes meanwhile (100%%: one core)", t.OtherCPUPercent)
		}
		if cc := t.ClientCost; cc != nil {
			p("  own cost    %.3f us CPU per delivery", cc.CPUUSPerDelivery)
		}
		if t.Client != nil {
			p("  chatbench   %s (while publishing)", procLine(t.Client))
		}
	}
	if rep.Server != nil {
		p("server        %s (whole run)", procLine(rep.Server))
	}
}

// costLine is a process's cost per delivery from the start of publishing
// until the last delivery.
func costLine(c *deliveryCost) string {
	s := fmt.Sprintf("%.3f us CPU per delivery", c.CPUUSPerDelivery)
	if c.Writes > 0 {
		s += fmt.Sprintf(", %.2f deliveries per write(2), %.1f bytes written per delivery", c.DeliveriesPerWrite, c.BytesPerDelivery)
	}
	return s + fmt.Sprintf(" (over %.1fs)", c.WindowS)
}

func byStage(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func latLine(l latencySummary) string {
	if l.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f ms, p90 %.2f, p99 %.2f, p99.9 %.2f, max %.2f (n=%d)", l.P50MS, l.P90MS, l.P99MS, l.P999MS, l.MaxMS, l.Count)
}

func procLine(r *procReport) string {
	if r.Error != "" && r.Samples == 0 {
		return "unavailable: " + r.Error
	}
	return fmt.Sprintf("CPU avg %.0f%% max %.0f%%, RSS %.1f -> %.1f MiB (peak %.1f), threads %d",
		r.CPUPercentAvg, r.CPUPercentMax, r.RSSStartMiB, r.RSSEndMiB, r.RSSPeakMiB, r.Threads)
}
