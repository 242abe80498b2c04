package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFaults runs every scenario once against real chatd processes: the
// short version of `go run ./cmd/chatfault` (docs/operations.md, Faults).
// Each fails on any message lost, duplicated or out of its sender's
// order, on a subscriber that missed one, on a node that crashed, and on
// a node that did not recover.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("3-process clusters through faults, about four minutes: skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "chatd")
	if out, err := exec.Command("go", "build", "-o", bin, "../chatd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	type run struct {
		sc   scenario
		name string
		args []string
	}
	var runs []run
	for _, sc := range scenarioList() {
		runs = append(runs, run{sc, sc.name, nil})
	}
	// The leader of most of four partitions killed, with rooms in every
	// partition: each stream's new leader takes over, nothing is lost.
	kill, _ := scenarioByName("kill-leader")
	runs = append(runs, run{kill, "kill-leader-partitions=4", []string{"--partitions", "4", "--rooms", "8", "--senders", "8"}})
	for _, r := range runs {
		sc := r.sc
		t.Run(r.name, func(t *testing.T) {
			if sc.tmpfs && os.Geteuid() != 0 {
				t.Skip("needs root, to mount a small tmpfs as a node's data disk (CI runs as root)")
			}
			o, err := parseOptions(append([]string{"--scenario", sc.name, "--work", t.TempDir()}, r.args...), os.Stderr)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
			defer cancel()
			rep, err := runScenario(ctx, o, sc, bin, o.work, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			writeReport(&out, rep)
			t.Log("\n" + out.String())
			if len(rep.Problems) > 0 {
				for _, n := range []string{"n0", "n1", "n2"} {
					if b, err := os.ReadFile(filepath.Join(o.work, n+".log")); err == nil {
						t.Logf("%s's log, its warnings and errors:\n%s", n, grepLevels(b))
					}
				}
				t.Fatalf("%s: %s", sc.name, strings.Join(rep.Problems, "; "))
			}
			if rep.Senders[0].Sent == 0 {
				t.Fatal("nothing was sent")
			}
		})
	}
}

// grepLevels keeps a log's WARN and ERROR lines.
func grepLevels(b []byte) string {
	var out strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out.WriteString(l + "\n")
		}
	}
	return out.String()
}

// TestAuditCountsWhatWentWrong feeds the audit's counting a history with
// each fault it must catch.
func TestAuditCountsWhatWentWrong(t *testing.T) {
	s := &sender{user: "sender0", run: "r", receipted: map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true}, next: 6}
	// 0, 2, 1 (out of order), 2 again (duplicate), 3; 4 receipted but lost; 5 never sent back.
	got := countSender(s, []int{0, 2, 1, 2, 3})
	want := senderReport{User: "sender0", Sent: 6, Receipted: 5, Stored: 4, Lost: 1, Duplicated: 1, OutOfOrder: 1}
	if got.Sent != want.Sent || got.Receipted != want.Receipted || got.Stored != want.Stored || got.Lost != want.Lost ||
		got.Duplicated != want.Duplicated || got.OutOfOrder != want.OutOfOrder {
		t.Fatalf("counted %+v, want %+v", got, want)
	}
	w := countWatcher([]uint64{1, 3, 2, 3, 5}, []uint64{1, 2, 3, 4, 5})
	if w.Missing != 1 || w.Duplicated != 1 || w.OutOfOrder != 1 || w.Received != 5 {
		t.Fatalf("watcher counted %+v: want 1 missing (4), 1 duplicated (3), 1 out of order (2)", w)
	}
	if user, i, ok := parseText("r", s.text(42)); !ok || user != "sender0" || i != 42 {
		t.Fatalf("parseText(text(42)) = %q %d %v", user, i, ok)
	}
}
