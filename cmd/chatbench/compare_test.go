package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTable: runs of two labels against both targets, read back from
// their JSON reports, make one table with each run's figures and the
// ratio of the means; an incomplete run says how much it delivered.
func TestTable(t *testing.T) {
	run := func(label, target string, rate, p50, p99, cpu, perWrite float64, delivered uint64) *report {
		return &report{Config: config{Label: label, Target: target}, Traffic: &trafficReport{OtherCPUPercent: 7,
			DeliveredPerSec: rate, Counts: deliveryCounts{Expected: 1000, Delivered: delivered},
			Latency:    latencySummary{Count: delivered, P50MS: p50, P99MS: p99},
			ServerCost: &deliveryCost{CPUUSPerDelivery: cpu, DeliveriesPerWrite: perWrite, Writes: 10},
		}}
	}
	dir := t.TempDir()
	var files []string
	for i, rep := range []*report{
		run("fan-out", targetSTOMP, 300000, 120, 900, 2, 12, 1000),
		run("fan-out", targetNATS, 1200000, 40, 150, 0.5, 70, 1000),
		run("fan-out", targetSTOMP, 500000, 100, 700, 2.2, 13, 1000),
		run("fan-out", targetNATS, 1300000, 45, 160, 0.52, 72, 1000),
		run("chat", targetSTOMP, 42500, 11800, 2359, 3, 2, 850),
		run("chat", targetNATS, 50000, 0.5, 3, 1, 4, 1000),
		{Config: config{Label: "idle", Target: targetNATS}}, // no traffic: not in the table
	} {
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Join(dir, string(rune('a'+i))+".json"))
		if err := os.WriteFile(files[i], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out, errs bytes.Buffer
	if code := tableMain(files, &out, &errs); code != 0 {
		t.Fatalf("exit %d: %s", code, errs.String())
	}
	got := out.String()
	t.Logf("\n%s", got)
	for _, want := range []string{
		"| fan-out | deliveries/s | 300,000 / 500,000 | 1,200,000 / 1,300,000 | 0.32 |",
		"|  | p99 latency | 900 ms / 700 ms | 150 ms / 160 ms | 5.16 |",
		"|  | server CPU per delivery | 2.00 µs / 2.20 µs | 0.50 µs / 0.52 µs | 4.12 |",
		"| chat | deliveries/s | 42,500 (85.0 % delivered) | 50,000 | 0.85 |",
		"|  | p50 latency | 11.8 s | 0.50 ms | 23,600 |",
		"|  | p99 latency | 2.36 s | 3.00 ms | 786 |",
		"|  | other processes' CPU (user) | 7 % | 7 % |  |",
		"|  | deliveries per write(2) | 2.0 | 4.0 | 0.50 |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if strings.Contains(got, "idle") || strings.Count(got, "\n") != 2+2*len(tableRows()) {
		t.Errorf("rows: %d lines", strings.Count(got, "\n"))
	}
	if code := tableMain([]string{filepath.Join(dir, "missing.json")}, &out, &errs); code != 1 {
		t.Errorf("a missing report: exit %d", code)
	}
}
