// Command chatfault runs chatd clusters through faults and checks what
// their clients were promised. It starts three real chatd processes routed
// to each other, receipted senders that resend as docs/protocol.md says
// and subscribers that resume with since-id, injects a fault (kill -9 of
// the stream leader, kill -9 of two nodes, SIGSTOP beyond the heart-beat,
// a full data disk), heals it, and then reads every room's history: each
// sender's messages must be there once each, none that got a RECEIPT
// missing, in the order sent, and each subscriber must have received
// every one of them once, in order.
//
//	go run ./cmd/chatfault                                  # every scenario once
//	go run ./cmd/chatfault --scenario kill-two --cycles 10  # one, ten times over
//
// See docs/operations.md, Faults.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chatd/chatd/natsbus"
)

func main() {
	os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	chatd     string
	scenarios []string
	cycles    int
	down      time.Duration
	settle    time.Duration
	senders   int
	rooms     int
	window    int
	rate      float64
	// partitions is the nodes' --partitions.
	partitions int
	work       string
	keep       bool
	json       bool
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("chatfault", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names string
	fs.StringVar(&o.chatd, "chatd", "", "chatd binary to run (default: built from ./cmd/chatd)")
	fs.StringVar(&names, "scenario", "all", "scenarios to run, comma-separated: "+strings.Join(scenarioNames(), ", ")+", or all")
	fs.IntVar(&o.cycles, "cycles", 1, "faults per scenario, each healed before the next")
	fs.DurationVar(&o.down, "down", 20*time.Second, "how long each fault lasts before it is healed: as long as a SEND may wait for the store, so that some SENDs fail while others, sent later, outlive the fault")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "steady traffic before the first fault and after each")
	fs.IntVar(&o.senders, "senders", 6, "receipted senders, spread over the rooms and the nodes")
	fs.IntVar(&o.rooms, "rooms", 2, "rooms the senders share")
	fs.IntVar(&o.window, "window", 500, "SENDs each sender may have awaiting a RECEIPT: at --rate, how long it goes on sending into an outage")
	fs.Float64Var(&o.rate, "rate", 50, "new messages per second per sender")
	fs.IntVar(&o.partitions, "partitions", 1, "the nodes' --partitions: the faults then hit the node leading the most of the messages streams")
	fs.StringVar(&o.work, "work", "", "directory for the nodes' data and logs (default: a temporary one, removed after a clean run)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory after a clean run")
	fs.BoolVar(&o.json, "json", false, "print the reports as JSON")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "all":
			o.scenarios = append(o.scenarios, scenarioNames()...)
		case slices.Contains(scenarioNames(), n):
			o.scenarios = append(o.scenarios, n)
		default:
			return o, fmt.Errorf("--scenario: unknown %q (want %s or all)", n, strings.Join(scenarioNames(), ", "))
		}
	}
	switch {
	case o.cycles < 1:
		return o, errors.New("--cycles: at least 1")
	case o.senders < 1 || o.rooms < 1 || o.window < 1:
		return o, errors.New("--senders, --rooms and --window: at least 1")
	case o.rate <= 0:
		return o, errors.New("--rate: more than 0")
	case o.partitions < 1 || o.partitions > natsbus.MaxPartitions:
		return o, fmt.Errorf("--partitions: 1 to %d", natsbus.MaxPartitions)
	case o.down <= 0 || o.settle <= 0:
		return o, errors.New("--down and --settle: more than 0")
	}
	return o, nil
}

func mainErr(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatfault:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, a ...any) {
		_, _ = fmt.Fprintf(stderr, time.Now().Format("15:04:05 ")+format+"\n", a...)
	}
	reps, err := runAll(ctx, o, logf)
	if err != nil {
		_, _ = fmt.Fprintln(stderr, "chatfault:", err)
		return 1
	}
	clean := true
	for _, r := range reps {
		clean = clean && len(r.Problems) == 0
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reps)
	} else {
		for _, r := range reps {
			writeReport(stdout, r)
		}
	}
	if !clean {
		return 1
	}
	return 0
}

// runAll runs each scenario of o in turn on a cluster of its own.
func runAll(ctx context.Context, o options, logf func(string, ...any)) ([]report, error) {
	work := o.work
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "chatfault-"); err != nil {
			return nil, err
		}
	}
	bin := o.chatd
	if bin == "" {
		bin = filepath.Join(work, "chatd")
		logf("building ./cmd/chatd")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/chatd").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/chatd (run chatfault from the repository, or give --chatd): %v\n%s", err, out)
		}
	}
	var reps []report
	clean := true
	for _, name := range o.scenarios {
		sc, ok := scenarioByName(name)
		if !ok {
			return reps, fmt.Errorf("no scenario %q", name)
		}
		rep, err := runScenario(ctx, o, sc, bin, filepath.Join(work, name), logf)
		if err != nil {
			return reps, fmt.Errorf("%s: %w (logs in %s)", name, err, work)
		}
		clean = clean && len(rep.Problems) == 0
		reps = append(reps, rep)
	}
	if clean && !o.keep && o.work == "" {
		_ = os.RemoveAll(work)
	} else {
		logf("nodes' data and logs kept in %s", work)
	}
	return reps, nil
}

// runScenario starts a cluster, runs traffic through cycles of the
// scenario's fault, then drains the senders and audits.
func runScenario(ctx context.Context, o options, sc scenario, bin, work string, logf func(string, ...any)) (report, error) {
	rep := report{Scenario: sc.name, Cycles: o.cycles}
	// A node must not start on an earlier run's data: its cluster's
	// addresses were others.
	if entries, err := os.ReadDir(work); err == nil && len(entries) > 0 {
		return rep, fmt.Errorf("%s holds an earlier run: remove it, or give another --work", work)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return rep, err
	}
	var tmpfs int64
	if sc.tmpfs {
		if os.Geteuid() != 0 {
			return rep, errors.New("needs root, to mount a small tmpfs as a node's data disk")
		}
		tmpfs = 192 << 20
	}
	start := time.Now()
	logf("%s: starting 3 nodes", sc.name)
	c, err := startCluster(ctx, bin, work, 3, tmpfs, []string{"--partitions", strconv.Itoa(o.partitions)})
	if err != nil {
		return rep, err
	}
	c.partitions = o.partitions
	defer c.close()
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.http)
	}
	run := sc.name + "-" + randomID()
	l := startLoad(ctx, addrs, run, o.senders, o.rooms, o.window, o.rate)
	defer l.close()
	sleep(ctx, o.settle)
	for cycle := 1; cycle <= o.cycles && ctx.Err() == nil; cycle++ {
		logf("%s: fault %d of %d: %s", sc.name, cycle, o.cycles, sc.about)
		if err := sc.fault(ctx, c, o, logf); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("cycle %d: %v", cycle, err))
		}
		if err := c.waitReady(ctx, c.nodes...); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("cycle %d: after healing: %v", cycle, err))
			break
		}
		if err := c.waitCurrent(ctx, time.Minute); err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("cycle %d: %v", cycle, err))
		}
		sleep(ctx, o.settle)
	}
	logf("%s: draining the senders", sc.name)
	if !l.drain(2 * time.Minute) {
		rep.Problems = append(rep.Problems, "senders still had messages without a RECEIPT 2 minutes after the last fault healed")
	}
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	if err := audit(ctx, c, l, run, &rep); err != nil {
		return rep, err
	}
	l.stats.mu.Lock()
	rep.LongestStall = l.stats.longestGap.Seconds()
	l.stats.mu.Unlock()
	rep.NodeErrors = c.errorLines()
	rep.Problems = append(rep.Problems, c.crashes()...)
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeReport prints one scenario's report as text.
func writeReport(w io.Writer, r report) {
	var sum senderReport
	errs := map[string]int{}
	for _, s := range r.Senders {
		sum.Sent += s.Sent
		sum.Receipted += s.Receipted
		sum.Stored += s.Stored
		sum.Lost += s.Lost
		sum.Duplicated += s.Duplicated
		sum.OutOfOrder += s.OutOfOrder
		sum.Unreceipted += s.Unreceipted
		sum.Reconnects += s.Reconnects
		for k, n := range s.Errors {
			errs[k] += n
		}
	}
	var ws watcherReport
	werrs := map[string]int{}
	for _, x := range r.Watchers {
		for k, n := range x.Errors {
			werrs[k] += n
		}
		ws.Received += x.Received
		ws.Missing += x.Missing
		ws.Duplicated += x.Duplicated
		ws.OutOfOrder += x.OutOfOrder
		ws.Resets += x.Resets
		ws.Reconnects += x.Reconnects
	}
	verdict := "clean"
	if len(r.Problems) > 0 {
		verdict = "FAILED"
	}
	_, _ = fmt.Fprintf(w, "%s: %s (%d cycles, %.0f s)\n", r.Scenario, verdict, r.Cycles, r.Seconds)
	_, _ = fmt.Fprintf(w, "  senders:  %d sent, %d receipted, %d stored; %d lost, %d duplicated, %d out of order, %d never receipted; %d reconnects\n",
		sum.Sent, sum.Receipted, sum.Stored, sum.Lost, sum.Duplicated, sum.OutOfOrder, sum.Unreceipted, sum.Reconnects)
	_, _ = fmt.Fprintf(w, "  watchers: %d received; %d missing, %d duplicated, %d out of order, %d gaps or resets; %d reconnects\n",
		ws.Received, ws.Missing, ws.Duplicated, ws.OutOfOrder, ws.Resets, ws.Reconnects)
	_, _ = fmt.Fprintf(w, "  longest time without a RECEIPT: %.1f s; ERRORs to senders: %s; to watchers: %s; ERROR log lines: %s\n",
		r.LongestStall, counts(errs), counts(werrs), counts(r.NodeErrors))
	for _, p := range r.Problems {
		_, _ = fmt.Fprintf(w, "  problem: %s\n", p)
	}
}

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
