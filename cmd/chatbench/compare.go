package main

// "chatbench table": the side-by-side table of scripts/bench compare,
// from the JSON reports of runs against chatd (--target stomp) and
// against nats-server (--target nats), grouped by --label.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// tableCommand is the subcommand that prints the table.
const tableCommand = "table"

// tableMain reads the reports named in args and prints the table.
func tableMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		_, _ = fmt.Fprintln(stderr, "usage: chatbench table REPORT.json...  (runs of one --label against both targets)")
		return 2
	}
	reps, err := readReports(args)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatbench table:", err)
		return 1
	}
	writeTable(stdout, reps)
	return 0
}

// readReports reads the JSON reports that chatbench --json-file wrote.
func readReports(names []string) ([]*report, error) {
	var reps []*report
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		rep := &report{}
		if err := json.Unmarshal(b, rep); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		reps = append(reps, rep)
	}
	return reps, nil
}

// tableRow is one figure of a scenario: how to read it from a run, how
// to print it, and whether chatd / nats-server means something.
type tableRow struct {
	name   string
	value  func(t *trafficReport) (float64, bool)
	format func(v float64) string
	ratio  bool
}

// tableRows are the figures of each scenario, in order.
func tableRows() []tableRow {
	return []tableRow{
		{"deliveries/s", func(t *trafficReport) (float64, bool) { return t.DeliveredPerSec, true }, thousands, true},
		{"p50 latency", func(t *trafficReport) (float64, bool) { return t.Latency.P50MS, t.Latency.Count > 0 }, millis, true},
		{"p99 latency", func(t *trafficReport) (float64, bool) { return t.Latency.P99MS, t.Latency.Count > 0 }, millis, true},
		{"server CPU per delivery", func(t *trafficReport) (float64, bool) {
			return costField(t.ServerCost, func(c *deliveryCost) float64 { return c.CPUUSPerDelivery })
		}, func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " µs" }, true},
		{"deliveries per write(2)", func(t *trafficReport) (float64, bool) {
			return costField(t.ServerCost, func(c *deliveryCost) float64 { return c.DeliveriesPerWrite })
		}, func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }, true},
		// Not a figure of the server: how much of the machine other work
		// took meanwhile (the load tool's own share is in the JSON).
		{"other processes' CPU (user)", func(t *trafficReport) (float64, bool) { return t.OtherCPUPercent, t.ServerCost != nil },
			func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) + " %" }, false},
	}
}

func costField(c *deliveryCost, f func(*deliveryCost) float64) (float64, bool) {
	if c == nil || (f(c) == 0 && c.Writes == 0) {
		return 0, false
	}
	return f(c), true
}

// writeTable prints, by label in the order first seen, each figure for
// chatd and nats-server (every run, " / " between) and the ratio of their
// means. A run that did not deliver everything says how much it did.
func writeTable(w io.Writer, reps []*report) {
	var labels []string
	byLabel := map[string]map[string][]*trafficReport{}
	for _, rep := range reps {
		if rep.Traffic == nil {
			continue
		}
		l := rep.Config.Label
		if l == "" {
			l = rep.Config.Scenario
		}
		if byLabel[l] == nil {
			labels = append(labels, l)
			byLabel[l] = map[string][]*trafficReport{}
		}
		byLabel[l][rep.Config.Target] = append(byLabel[l][rep.Config.Target], rep.Traffic)
	}
	p := func(cells ...string) { _, _ = fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |") }
	p("Scenario", "Figure", "chatd", "nats-server", "chatd / nats-server")
	p("---", "---", "---:", "---:", "---:")
	for _, l := range labels {
		chatd, engine := byLabel[l][targetSTOMP], byLabel[l][targetNATS]
		for i, row := range tableRows() {
			name := ""
			if i == 0 {
				name = l
			}
			a, am := tableCell(chatd, row, i == 0)
			b, bm := tableCell(engine, row, i == 0)
			ratio := ""
			if am > 0 && bm > 0 && row.ratio {
				ratio = ratioString(am / bm)
			}
			p(name, row.name, a, b, ratio)
		}
	}
}

// tableCell is one target's runs of a figure and their mean (0: none).
func tableCell(runs []*trafficReport, row tableRow, completeness bool) (string, float64) {
	var parts []string
	var sum float64
	n := 0
	for _, t := range runs {
		v, ok := row.value(t)
		if !ok {
			parts = append(parts, "–")
			continue
		}
		s := row.format(v)
		if c := t.Counts; completeness && c.Delivered < c.Expected && c.Expected > 0 {
			s += fmt.Sprintf(" (%.1f %% delivered)", math.Floor(1000*float64(c.Delivered)/float64(c.Expected))/10)
		}
		parts = append(parts, s)
		sum += v
		n++
	}
	if n == 0 {
		return strings.Join(parts, " / "), 0
	}
	return strings.Join(parts, " / "), sum / float64(n)
}

// ratioString prints a ratio with about three significant digits.
func ratioString(r float64) string {
	switch {
	case r >= 100:
		return thousands(r)
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}

// thousands prints a rate with thousands separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// millis prints a latency in milliseconds, or seconds from 1 s.
func millis(v float64) string {
	switch {
	case v >= 10000:
		return strconv.FormatFloat(v/1000, 'f', 1, 64) + " s"
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + " s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
}
