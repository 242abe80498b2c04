package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sweepRun is a paced run of a fan-out 10 x 100 (or shape s) against
// target at rate msg/s per room, delivering delivered of 1,000 expected.
func sweepRun(s shape, target string, rate, perSec, p99 float64, delivered uint64) *report {
	return &report{
		Config: config{Scenario: s.Scenario, Rooms: s.Rooms, Members: s.Members, Publishers: s.Publishers, MsgSize: s.MsgSize,
			Target: target, Rate: rate, Label: "rate " + rateString(rate)},
		Traffic: &trafficReport{DeliveredPerSec: perSec,
			Counts:  deliveryCounts{Sent: 10, Expected: 1000, Delivered: delivered, Lost: 1000 - delivered},
			Latency: latencySummary{Count: delivered, P50MS: p99 / 3, P99MS: p99}},
	}
}

func fanoutShape() shape {
	return shape{Scenario: "fanout", Rooms: 10, Members: 100, Publishers: 1, MsgSize: 128}
}
func chatShape() shape {
	return shape{Scenario: "chat", Rooms: 1000, Members: 5, Publishers: 1, MsgSize: 128}
}

func TestBarMisses(t *testing.T) {
	b := bar{p99MS: 100}
	ok := sweepRun(fanoutShape(), targetSTOMP, 100, 1e5, 99.9, 1000)
	if why := b.misses(ok); len(why) != 0 {
		t.Errorf("a clean run under the bar: %v", why)
	}
	for _, c := range []struct {
		name string
		edit func(r *report)
		want string
	}{
		{"p99 at the bar", func(r *report) { r.Traffic.Latency.P99MS = 100 }, "p99 100 ms"},
		{"one delivery short", func(r *report) { r.Traffic.Counts.Delivered, r.Traffic.Counts.Lost = 999, 1 }, "99.9 % delivered"},
		{"lost yet counted delivered", func(r *report) { r.Traffic.Counts.Lost = 150 }, "85.0 % delivered"},
		{"duplicated", func(r *report) { r.Traffic.Counts.Duplicated = 2 }, "2 duplicated"},
		{"out of order", func(r *report) { r.Traffic.Counts.OutOfOrder = 3 }, "3 out of order"},
		{"unexpected", func(r *report) { r.Traffic.Counts.Unexpected = 4 }, "4 unexpected"},
		{"dropped", func(r *report) { r.Conns.Dropped = 5 }, "5 dropped"},
		{"failed", func(r *report) { r.Conns.Failed = 6 }, "6 connections failed"},
		{"interrupted", func(r *report) { r.Interruped = true }, "interrupted"},
		{"nothing sent", func(r *report) { r.Traffic.Counts = deliveryCounts{} }, "nothing sent"},
		{"no traffic", func(r *report) { r.Traffic = nil }, "no traffic"},
	} {
		r := sweepRun(fanoutShape(), targetSTOMP, 100, 1e5, 50, 1000)
		c.edit(r)
		if why := strings.Join(b.misses(r), ", "); why != c.want {
			t.Errorf("%s: %q, want %q", c.name, why, c.want)
		}
	}
	// The bar is a flag.
	if why := (bar{p99MS: 50}).misses(ok); len(why) != 1 || why[0] != "p99 99.9 ms" {
		t.Errorf("--p99-ms 50: %v", why)
	}
}

func TestSustain(t *testing.T) {
	b := bar{p99MS: 100}
	S := targetSTOMP
	rates := func(reps ...*report) []rateRuns { return groupSweeps(reps)[0].targets[S] }

	// Met, met, failed, failed: the second rate is the sustainable one,
	// the third the next tried.
	s := sustain(rates(
		sweepRun(fanoutShape(), S, 500, 4.9e5, 300, 1000),
		sweepRun(fanoutShape(), S, 100, 0.99e5, 20, 1000),
		sweepRun(fanoutShape(), S, 250, 2.48e5, 60, 1000),
		sweepRun(fanoutShape(), S, 1000, 6e5, 900, 850),
	), b)
	if s.best != 1 || s.tried[s.best].rate != 250 || s.tried[s.best].perSec != 2.48e5 || s.next != 2 || s.topOfSweep() {
		t.Fatalf("best %d next %d: %+v", s.best, s.next, s.tried)
	}
	if why := strings.Join(s.tried[s.next].why, "; "); why != "p99 300 ms" {
		t.Errorf("why 500 failed: %q", why)
	}
	if got := triedString(s.tried); got != "100 ✓, 250 ✓, 500 ✗, 1,000 ✗" {
		t.Errorf("tried: %q", got)
	}

	// A failure in the middle: 500 met above a failed 250 is noise.
	s = sustain(rates(
		sweepRun(fanoutShape(), S, 100, 1e5, 20, 1000),
		sweepRun(fanoutShape(), S, 250, 2.4e5, 40, 990),
		sweepRun(fanoutShape(), S, 500, 5e5, 50, 1000),
	), b)
	if s.best != 0 || s.next != 1 || !s.tried[2].aboveFirst {
		t.Fatalf("failure in the middle: best %d next %d: %+v", s.best, s.next, s.tried)
	}
	if got := triedString(s.tried); got != "100 ✓, 250 ✗, 500 ✓ (above a failure: not counted)" {
		t.Errorf("tried: %q", got)
	}

	// Several runs of a rate: met only if every run met it; deliveries/s
	// is their mean, p99 the worst.
	s = sustain(rates(
		sweepRun(fanoutShape(), S, 100, 1e5, 20, 1000),
		sweepRun(fanoutShape(), S, 100, 0.98e5, 30, 1000),
		sweepRun(fanoutShape(), S, 250, 2.5e5, 50, 1000),
		sweepRun(fanoutShape(), S, 250, 2.5e5, 150, 1000),
		sweepRun(fanoutShape(), S, 250, 2.5e5, 60, 1000),
	), b)
	if s.best != 0 || s.next != 1 || s.tried[0].perSec != 0.99e5 || s.tried[0].p99MS != 30 {
		t.Fatalf("several runs: best %d next %d: %+v", s.best, s.next, s.tried)
	}
	if why := strings.Join(s.tried[1].why, "; "); why != "run 2 of 3: p99 150 ms" {
		t.Errorf("why 250 failed: %q", why)
	}
	if got := triedString(s.tried); got != "100 ✓, 250 ✗ (1 of 3 runs)" {
		t.Errorf("tried: %q", got)
	}

	// No rate met.
	s = sustain(rates(
		sweepRun(fanoutShape(), S, 100, 1e5, 200, 1000),
		sweepRun(fanoutShape(), S, 250, 1e5, 20, 500),
	), b)
	if s.best != -1 || s.next != 0 || s.topOfSweep() {
		t.Fatalf("none met: best %d next %d", s.best, s.next)
	}

	// Every rate met: the sustainable rate is a lower bound.
	s = sustain(rates(sweepRun(fanoutShape(), S, 100, 1e5, 20, 1000)), b)
	if s.best != 0 || s.next != -1 || !s.topOfSweep() {
		t.Fatalf("all met: best %d next %d", s.best, s.next)
	}
}

func TestSustainableRatio(t *testing.T) {
	b := bar{p99MS: 100}
	sw := func(target string, runs ...[3]float64) sustained {
		var reps []*report
		for _, r := range runs {
			delivered := uint64(1000)
			if r[2] > 0 {
				delivered = uint64(r[2])
			}
			reps = append(reps, sweepRun(fanoutShape(), target, r[0], r[0]*1000, r[1], delivered))
		}
		return sustain(groupSweeps(reps)[0].targets[target], b)
	}
	chatd := sw(targetSTOMP, [3]float64{100, 20}, [3]float64{250, 500})
	nats := sw(targetNATS, [3]float64{100, 5}, [3]float64{250, 10}, [3]float64{500, 20}, [3]float64{1000, 200})
	for _, c := range []struct {
		name        string
		chatd, nats sustained
		ratio, note string
	}{
		{"both bounded", chatd, nats, "0.20", ""},
		{"chatd at the top", sw(targetSTOMP, [3]float64{100, 20}), sw(targetNATS, [3]float64{100, 5}, [3]float64{250, 500}), "≥ 1.00", "chatd met every rate tried"},
		{"nats at the top", chatd, sw(targetNATS, [3]float64{100, 5}, [3]float64{250, 10}), "≤ 0.40", "nats-server met every rate tried"},
		{"chatd none", sw(targetSTOMP, [3]float64{100, 500}), nats, "< 0.20", "chatd met no rate tried"},
		{"nats none", chatd, sw(targetNATS, [3]float64{200, 5, 10}), "> 0.50", "nats-server met no rate tried"},
		{"neither", sw(targetSTOMP, [3]float64{100, 500}), sw(targetNATS, [3]float64{100, 5, 10}), "–", "neither met a rate tried"},
		{"nats not run", chatd, sustained{best: -1, next: -1}, "–", "a target was not run"},
	} {
		ratio, note := sustainableRatio(c.chatd, c.nats)
		if ratio != c.ratio || note != c.note {
			t.Errorf("%s: %q %q, want %q %q", c.name, ratio, note, c.ratio, c.note)
		}
	}
}

// TestGroupSweeps: runs group by shape, in the order first seen, then by
// target and rate per room (msg/s per publisher x publishers); labels do
// not matter, flat-out and traffic-less runs are left out.
func TestGroupSweeps(t *testing.T) {
	two := fanoutShape()
	two.Publishers = 2
	small := fanoutShape()
	small.MsgSize = 0
	flat := sweepRun(fanoutShape(), targetSTOMP, 0, 1e6, 900, 1000)
	idle := &report{Config: config{Scenario: "idle", Target: targetSTOMP}}
	a := sweepRun(chatShape(), targetSTOMP, 10, 5e4, 20, 1000)
	b := sweepRun(fanoutShape(), targetNATS, 250, 2.5e5, 20, 1000)
	c := sweepRun(fanoutShape(), targetSTOMP, 100, 1e5, 20, 1000)
	d := sweepRun(chatShape(), targetNATS, 10, 5e4, 2, 1000)
	e := sweepRun(fanoutShape(), targetSTOMP, 100, 1e5, 30, 1000)
	e.Config.Label = "another label"
	f := sweepRun(two, targetSTOMP, 50, 1e5, 20, 1000)
	g := sweepRun(small, targetSTOMP, 100, 1e5, 20, 1000)
	got := groupSweeps([]*report{flat, idle, a, b, c, d, e, f, g})
	if len(got) != 4 || got[0].shape != chatShape() || got[1].shape != fanoutShape() || got[2].shape != two || got[3].shape != small {
		t.Fatalf("shapes: %d %+v", len(got), got)
	}
	if r := got[0].targets; len(r[targetSTOMP]) != 1 || r[targetSTOMP][0].runs[0] != a || len(r[targetNATS]) != 1 || r[targetNATS][0].runs[0] != d {
		t.Errorf("chat: %+v", r)
	}
	if r := got[1].targets[targetSTOMP]; len(r) != 1 || r[0].rate != 100 || len(r[0].runs) != 2 || r[0].runs[0] != c || r[0].runs[1] != e {
		t.Errorf("fan-out chatd (flat-out run left out): %+v", r)
	}
	if r := got[2].targets[targetSTOMP]; len(r) != 1 || r[0].rate != 100 {
		t.Errorf("two publishers at 50 msg/s: %+v", r)
	}
	if s := got[2].shape.String(); s != "fan-out 10 x 100, 2 publishers per room, 128 B" {
		t.Errorf("shape: %q", s)
	}
	if s := chatShape().String(); s != "chat-like 1,000 x 5, 128 B" {
		t.Errorf("shape: %q", s)
	}
}

// TestSustainableMain: from JSON reports to the printed summary, the
// bar as a flag, and --check's exit status.
func TestSustainableMain(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, rep *report) string {
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	dropped := sweepRun(fanoutShape(), targetSTOMP, 500, 4e5, 80, 990)
	dropped.Conns.Dropped = 3
	files := []string{
		write("f1", sweepRun(fanoutShape(), targetSTOMP, 100, 99500, 20, 1000)),
		write("f2", sweepRun(fanoutShape(), targetNATS, 100, 99900, 5, 1000)),
		write("f3", sweepRun(fanoutShape(), targetSTOMP, 250, 248000, 60, 1000)),
		write("f4", sweepRun(fanoutShape(), targetNATS, 250, 249000, 8, 1000)),
		write("f5", dropped),
		write("f6", sweepRun(fanoutShape(), targetNATS, 500, 496000, 40, 1000)),
		write("c1", sweepRun(chatShape(), targetSTOMP, 2, 9900, 300, 1000)),
		write("c2", sweepRun(chatShape(), targetNATS, 2, 9950, 3, 1000)),
	}
	var out, errs bytes.Buffer
	if code := sustainableMain(files, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	got := out.String()
	t.Logf("\n%s", got)
	for _, want := range []string{
		"with p99 under 100 ms",
		"| fan-out 10 x 100, 128 B | chatd | 250 | 248,000 | 60.0 ms | 500 | 99.0 % delivered, 3 dropped | 100 ✓, 250 ✓, 500 ✗ |",
		"|  | nats-server | ≥ 500 | 496,000 | 40.0 ms | – | every rate tried met the bar | 100 ✓, 250 ✓, 500 ✓ |",
		"|  | chatd / nats-server |  | ≤ 0.50 |  |  | nats-server met every rate tried |  |",
		"| chat-like 1,000 x 5, 128 B | chatd | none met | – | – | 2 | p99 300 ms | 2 ✗ |",
		"|  | chatd / nats-server |  | < 1.00 |  |  | chatd met no rate tried |  |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q", want)
		}
	}

	// A stricter bar moves chatd's fan-out rate down to 100.
	out.Reset()
	if code := sustainableMain(append([]string{"--p99-ms", "50"}, files...), &out, &errs); code != 0 {
		t.Fatalf("--p99-ms 50: exit %d: %s", code, errs.String())
	}
	if want := "| fan-out 10 x 100, 128 B | chatd | 100 | 99,500 | 20.0 ms | 250 | p99 60.0 ms | 100 ✓, 250 ✗, 500 ✗ |"; !strings.Contains(out.String(), want) {
		t.Errorf("--p99-ms 50: lacks %q:\n%s", want, out.String())
	}

	out.Reset()
	if code := sustainableMain([]string{"--check", files[0], files[2]}, &out, &errs); code != 0 || out.Len() != 0 {
		t.Errorf("--check of met runs: exit %d, %q", code, out.String())
	}
	if code := sustainableMain([]string{"--check", files[0], files[4]}, &out, &errs); code != 1 || !strings.Contains(out.String(), "f5: 99.0 % delivered, 3 dropped") {
		t.Errorf("--check of a failed run: exit %d, %q", code, out.String())
	}
	if code := sustainableMain([]string{filepath.Join(dir, "missing.json")}, &out, &errs); code != 1 {
		t.Errorf("a missing report: exit %d", code)
	}
	if code := sustainableMain(nil, &out, &errs); code != 2 {
		t.Errorf("no report: exit %d", code)
	}
}
