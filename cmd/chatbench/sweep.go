package main

// "chatbench sustainable": the sustainable rate of each scenario, from the
// JSON reports of a sweep of paced rates (scripts/bench compare-sweep)
// against chatd and against nats-server. A throughput counts only with
// its latency (issue #17): a rate is sustainable when every delivery
// arrives, with p99 under the bar.

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// sustainableCommand is the subcommand that prints the summary.
const sustainableCommand = "sustainable"

func sustainableMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chatbench sustainable", flag.ContinueOnError)
	fs.SetOutput(stderr)
	p99 := fs.Float64("p99-ms", 100, "the bar: a run meets it only with p99 latency below this many milliseconds")
	check := fs.Bool("check", false, "print only the runs that missed the bar, and why; exit 1 if any did (scripts/bench compare-sweep stops going up for a target on it)")
	fs.Usage = func() {
		_, _ = fmt.Fprint(stderr, "usage: chatbench sustainable [--p99-ms 100] [--check] REPORT.json...\n\n"+
			"Per scenario (scenario, rooms, members, publishers, message size) and target, the highest\n"+
			"paced rate of a sweep at which every run delivered everything with p99 under the bar,\n"+
			"the next rate tried and why it failed, and the ratio chatd / nats-server of the\n"+
			"sustainable deliveries/s. Flat-out runs (--rate 0) are not part of a sweep.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 || *p99 <= 0 {
		fs.Usage()
		return 2
	}
	reps, err := readReports(fs.Args())
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatbench sustainable:", err)
		return 1
	}
	b := bar{p99MS: *p99}
	if *check {
		ok := true
		for i, rep := range reps {
			if why := b.misses(rep); len(why) > 0 {
				ok = false
				_, _ = fmt.Fprintf(stdout, "%s: %s\n", fs.Arg(i), strings.Join(why, ", "))
			}
		}
		if !ok {
			return 1
		}
		return 0
	}
	writeSustainable(stdout, groupSweeps(reps), b)
	return 0
}

// bar is what a run must meet for its rate to count as sustained.
type bar struct {
	p99MS float64
}

// misses says why a run missed the bar: nothing when it met it.
func (b bar) misses(rep *report) []string {
	var why []string
	add := func(format string, args ...any) { why = append(why, fmt.Sprintf(format, args...)) }
	if rep.Interruped {
		add("interrupted")
	}
	t := rep.Traffic
	if t == nil {
		return append(why, "no traffic")
	}
	c := t.Counts
	switch {
	case c.Expected == 0:
		add("nothing sent")
	case t.Latency.Count == 0:
		add("no latency sample")
	case t.Latency.P99MS >= b.p99MS:
		add("p99 %s", millis(t.Latency.P99MS))
	}
	if c.Expected > 0 && (c.Delivered < c.Expected || c.Lost > 0) {
		// Floor, so that a single missing delivery never reads 100.0 %.
		got := min(c.Delivered, c.Expected-min(c.Lost, c.Expected))
		add("%.1f %% delivered", math.Floor(1000*float64(got)/float64(c.Expected))/10)
	}
	for _, n := range []struct {
		v    uint64
		what string
	}{{c.Duplicated, "duplicated"}, {c.OutOfOrder, "out of order"}, {c.Unexpected, "unexpected"}} {
		if n.v > 0 {
			add("%d %s", n.v, n.what)
		}
	}
	if rep.Conns.Dropped > 0 {
		add("%d dropped", rep.Conns.Dropped)
	}
	if rep.Conns.Failed > 0 {
		add("%d connections failed", rep.Conns.Failed)
	}
	return why
}

// shape is what makes runs one scenario, whatever their rate or label.
type shape struct {
	Scenario   string
	Rooms      int
	Members    int
	Publishers int // per room
	MsgSize    int
}

func shapeOf(c config) shape {
	return shape{Scenario: c.Scenario, Rooms: c.Rooms, Members: c.Members, Publishers: c.Publishers, MsgSize: c.MsgSize}
}

func (s shape) String() string {
	name := map[string]string{"fanout": "fan-out", "chat": "chat-like"}[s.Scenario]
	if name == "" {
		name = s.Scenario
	}
	out := fmt.Sprintf("%s %s x %s", name, thousands(float64(s.Rooms)), thousands(float64(s.Members)))
	if s.Publishers != 1 {
		out += fmt.Sprintf(", %d publishers per room", s.Publishers)
	}
	if s.MsgSize > 0 {
		out += fmt.Sprintf(", %d B", s.MsgSize)
	}
	return out
}

// sweep is one scenario's runs by target, then by rate.
type sweep struct {
	shape   shape
	targets map[string][]rateRuns // ascending rates
}

// rateRuns are the runs of one paced rate, in msg/s per room.
type rateRuns struct {
	rate float64
	runs []*report
}

// groupSweeps groups paced traffic runs by shape (in the order first
// seen), target and rate per room. Flat-out runs have no rate to sweep.
func groupSweeps(reps []*report) []*sweep {
	var out []*sweep
	byShape := map[shape]*sweep{}
	for _, rep := range reps {
		c := rep.Config
		if rep.Traffic == nil || c.Rate <= 0 {
			continue
		}
		k := shapeOf(c)
		s := byShape[k]
		if s == nil {
			s = &sweep{shape: k, targets: map[string][]rateRuns{}}
			byShape[k] = s
			out = append(out, s)
		}
		rate := c.Rate * float64(max(c.Publishers, 1))
		rr := s.targets[c.Target]
		i, found := slices.BinarySearchFunc(rr, rate, func(r rateRuns, x float64) int { return cmp.Compare(r.rate, x) })
		if !found {
			rr = slices.Insert(rr, i, rateRuns{rate: rate})
		}
		rr[i].runs = append(rr[i].runs, rep)
		s.targets[c.Target] = rr
	}
	return out
}

// rateVerdict is one rate of a sweep against the bar.
type rateVerdict struct {
	rate       float64
	runs       int
	failed     int
	why        []string // of the failed runs, "run i: ..." when there are several
	perSec     float64  // deliveries/s, mean of the runs
	p99MS      float64  // worst of the runs
	aboveFirst bool     // met, but above a rate that failed: not counted
}

// sustained is a target's sweep: every rate tried, the highest sustained
// one (best) and the first that failed (next); -1 when there is none.
type sustained struct {
	tried      []rateVerdict
	best, next int
}

// topOfSweep reports whether every rate tried was met, so the sustainable
// rate is only a lower bound.
func (s sustained) topOfSweep() bool { return s.next < 0 && len(s.tried) > 0 }

// sustain judges a target's sweep. Going up from the lowest rate, a rate
// counts only if every run of it, and every lower rate, met the bar: a
// rate met above one that failed is noise, not capacity.
func sustain(rates []rateRuns, b bar) sustained {
	s := sustained{best: -1, next: -1}
	for _, rr := range rates {
		v := rateVerdict{rate: rr.rate, runs: len(rr.runs)}
		var p99 []float64
		for i, rep := range rr.runs {
			if rep.Traffic != nil {
				v.perSec += rep.Traffic.DeliveredPerSec / float64(len(rr.runs))
				p99 = append(p99, rep.Traffic.Latency.P99MS)
			}
			why := b.misses(rep)
			if len(why) == 0 {
				continue
			}
			v.failed++
			w := strings.Join(why, ", ")
			if len(rr.runs) > 1 {
				w = fmt.Sprintf("run %d of %d: %s", i+1, len(rr.runs), w)
			}
			v.why = append(v.why, w)
		}
		if len(p99) > 0 {
			v.p99MS = slices.Max(p99)
		}
		switch {
		case v.failed > 0 && s.next < 0:
			s.next = len(s.tried)
		case v.failed == 0 && s.next < 0:
			s.best = len(s.tried)
		case v.failed == 0:
			v.aboveFirst = true
		}
		s.tried = append(s.tried, v)
	}
	return s
}

// targetName is a target as the summary names it.
type targetName struct{ target, name string }

// targetNames are the targets in the order printed.
func targetNames() [2]targetName {
	return [2]targetName{{targetSTOMP, "chatd"}, {targetNATS, "nats-server"}}
}

// writeSustainable prints, per scenario, each target's sustainable rate,
// the next rate tried and why it failed, and the ratio of their
// sustainable deliveries/s.
func writeSustainable(w io.Writer, sweeps []*sweep, b bar) {
	pf := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format+"\n", args...) }
	pf("Sustainable rate: the highest paced rate at which every run delivered every expected message, none lost,")
	pf("duplicated or out of order, no connection dropped or failed, with p99 under %s; going up from the lowest", millis(b.p99MS))
	pf("rate tried, a rate met above one that failed does not count. Rates in msg/s per room.")
	pf("")
	p := func(cells ...string) { _, _ = fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |") }
	p("Scenario", "Target", "Sustainable rate", "Deliveries/s", "p99", "Next rate tried", "Why it failed", "Rates tried")
	p("---", "---", "---:", "---:", "---:", "---:", "---", "---")
	for _, sw := range sweeps {
		var got [2]sustained
		for i, t := range targetNames() {
			got[i] = sustain(sw.targets[t.target], b)
			s := got[i]
			rate, perSec, p99, next, why := "not run", "–", "–", "–", "–"
			switch {
			case len(s.tried) == 0:
			case s.best < 0:
				rate = "none met"
			default:
				v := s.tried[s.best]
				rate, perSec, p99 = rateString(v.rate), thousands(v.perSec), millis(v.p99MS)
				if s.topOfSweep() {
					rate = "≥ " + rate
					why = "every rate tried met the bar"
				}
			}
			if s.next >= 0 {
				v := s.tried[s.next]
				next, why = rateString(v.rate), strings.Join(v.why, "; ")
			}
			name := ""
			if i == 0 {
				name = sw.shape.String()
			}
			p(name, t.name, rate, perSec, p99, next, why, triedString(s.tried))
		}
		ratio, note := sustainableRatio(got[0], got[1])
		p("", "chatd / nats-server", "", ratio, "", "", note, "")
	}
}

// sustainableRatio is chatd's sustainable deliveries/s over nats-server's,
// and what bounds it when a sweep did not reach a failure or met no rate.
func sustainableRatio(chatd, nats sustained) (string, string) {
	switch {
	case len(chatd.tried) == 0 || len(nats.tried) == 0:
		return "–", "a target was not run"
	case chatd.best < 0 && nats.best < 0:
		return "–", "neither met a rate tried"
	case chatd.best < 0:
		// Below the ratio of chatd's lowest rate to nats-server's
		// sustainable one: one shape delivers in proportion to its rate.
		return "< " + ratioString(chatd.tried[0].rate/nats.tried[nats.best].rate), "chatd met no rate tried"
	case nats.best < 0:
		return "> " + ratioString(chatd.tried[chatd.best].rate/nats.tried[0].rate), "nats-server met no rate tried"
	}
	r := ratioString(chatd.tried[chatd.best].perSec / nats.tried[nats.best].perSec)
	switch {
	case chatd.topOfSweep() && nats.topOfSweep():
		return r, "both met every rate tried: sweep higher"
	case chatd.topOfSweep():
		return "≥ " + r, "chatd met every rate tried"
	case nats.topOfSweep():
		return "≤ " + r, "nats-server met every rate tried"
	}
	return r, ""
}

// triedString is every rate of a sweep with its outcome: "100 ✓, 250 ✗".
func triedString(vs []rateVerdict) string {
	var parts []string
	for _, v := range vs {
		s := rateString(v.rate)
		switch {
		case v.failed == 0 && v.aboveFirst:
			s += " ✓ (above a failure: not counted)"
		case v.failed == 0:
			s += " ✓"
		case v.runs > 1:
			s += fmt.Sprintf(" ✗ (%d of %d runs)", v.failed, v.runs)
		default:
			s += " ✗"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

// rateString prints a rate per room: whole numbers as such.
func rateString(r float64) string {
	if r == math.Trunc(r) {
		return thousands(r)
	}
	return strconv.FormatFloat(r, 'f', -1, 64)
}
