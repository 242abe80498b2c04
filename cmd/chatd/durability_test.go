package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestFsyncPrecedesReceipt runs the real chatd binary under strace and
// reads, from the kernel's side, the order of three things for every
// message: its write to a block file of the messages stream, an fsync of
// that file, and the WebSocket write carrying its RECEIPT. With
// --durability fsync every RECEIPT must follow an fsync that began after
// the message was written. The same check must fail with replicated and
// fast, which do not wait for the disk: otherwise it proves nothing. And
// what docs/operations.md says they risk is checked too: replicated hands
// the message to the kernel before the RECEIPT (a crash of the process
// loses nothing), fast does not.
//
// strace stops a thread at every traced syscall until it has recorded it,
// so the trace's order is causal: the RECEIPT's write cannot be recorded
// before an fsync whose end the RECEIPT waited for. Messages go out one at
// a time and in a burst (a group commit of many); on one node the server
// does not sync, chatd fsyncs the block file it wrote them to.
func TestFsyncPrecedesReceipt(t *testing.T) {
	straceBin := needStrace(t)
	bin := buildChatd(t)
	for _, tc := range []struct {
		durability string
		partitions int  // the messages' rooms spread over this many streams, each synced on its own
		synced     bool // every RECEIPT after an fsync of its message
		written    bool // every RECEIPT after its message's write to the file
	}{
		{"fsync", 1, true, true},
		{"fsync", 4, true, true},
		{"replicated", 1, false, true},
		{"fast", 1, false, false},
	} {
		t.Run(fmt.Sprintf("%s/partitions=%d", tc.durability, tc.partitions), func(t *testing.T) {
			dir := t.TempDir()
			trace := runTraced(t, straceBin, [][]string{{bin, "--dev", "--http", "127.0.0.1:0",
				"--data-dir", filepath.Join(dir, "n0"), "--durability", tc.durability, "--partitions", strconv.Itoa(tc.partitions)}})
			ev := parseTrace(t, trace)
			var unsynced, unwritten []string
			for i := range traceMessages {
				w, s, why := ev.storedBeforeReceipt(i, isStreamBlock)
				if !w {
					unwritten = append(unwritten, fmt.Sprintf("message %d: %s", i, why))
				}
				if !s {
					unsynced = append(unsynced, fmt.Sprintf("message %d: %s", i, why))
				}
			}
			t.Logf("of %d RECEIPTs, %d came before an fsync of their message, %d before its write", traceMessages, len(unsynced), len(unwritten))
			switch {
			case tc.synced && len(unsynced) > 0:
				t.Fatalf("--durability fsync sent RECEIPTs before the disk had the message (trace %s):\n%s", trace, strings.Join(unsynced, "\n"))
			case !tc.synced && len(unsynced) == 0:
				t.Fatalf("--durability %s: every RECEIPT followed an fsync; the check cannot tell fsync from not (trace %s)", tc.durability, trace)
			case tc.written && len(unwritten) > 0:
				t.Fatalf("--durability %s sent RECEIPTs before the message was written to the stream:\n%s", tc.durability, strings.Join(unwritten, "\n"))
			case !tc.written && len(unwritten) == 0:
				t.Fatalf("--durability %s: every RECEIPT followed the write; async persistence is not what runs", tc.durability)
			}
		})
	}
}

// TestFsyncPrecedesReceiptOnAQuorum is the same check on a cluster of
// three chatd processes (3 replicas) under one strace, so that the order
// across processes is causal too. A replicated stream's messages reach
// disk first in each replica's Raft log (the stream's own files are synced
// later, from snapshots): with --durability fsync every RECEIPT must
// follow, on at least two of the three nodes, an fsync of the Raft log
// file that holds the message. With replicated, some must not.
func TestFsyncPrecedesReceiptOnAQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("3 processes under strace: skipped with -short")
	}
	straceBin := needStrace(t)
	bin := buildChatd(t)
	for _, tc := range []struct {
		durability string
		synced     bool
	}{
		{"fsync", true},
		{"replicated", false},
	} {
		t.Run(tc.durability, func(t *testing.T) {
			dir := t.TempDir()
			routeAddrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
			var routes []string
			for _, a := range routeAddrs {
				routes = append(routes, "nats-route://"+a)
			}
			var nodes [][]string
			for i, a := range routeAddrs {
				nodes = append(nodes, []string{bin, "--dev", "--name", "n" + strconv.Itoa(i), "--http", "127.0.0.1:0",
					"--data-dir", filepath.Join(dir, "n"+strconv.Itoa(i)), "--cluster", a,
					"--routes", strings.Join(routes, ","), "--durability", tc.durability})
			}
			trace := runTraced(t, straceBin, nodes)
			ev := parseTrace(t, trace)
			var short []string
			for i := range traceMessages {
				var synced []string
				var whys []string
				for k := range nodes {
					node := filepath.Join(dir, "n"+strconv.Itoa(k))
					raftLog := func(path string) bool {
						return strings.HasPrefix(path, node+"/") && strings.Contains(path, "/_js_/") && strings.HasSuffix(path, ".blk")
					}
					if _, s, why := ev.storedBeforeReceipt(i, raftLog); s {
						synced = append(synced, "n"+strconv.Itoa(k))
					} else {
						whys = append(whys, fmt.Sprintf("n%d: %s", k, why))
					}
				}
				if len(synced) < 2 {
					short = append(short, fmt.Sprintf("message %d: synced on %v only; %s", i, synced, strings.Join(whys, "; ")))
				}
			}
			t.Logf("of %d RECEIPTs, %d came before a quorum had synced their message", traceMessages, len(short))
			switch {
			case tc.synced && len(short) > 0:
				t.Fatalf("--durability fsync sent RECEIPTs before a quorum's disks had the message (trace %s):\n%s", trace, strings.Join(short, "\n"))
			case !tc.synced && len(short) == 0:
				t.Fatalf("--durability %s: every RECEIPT followed a quorum's fsync; the check cannot tell fsync from not (trace %s)", tc.durability, trace)
			}
		})
	}
}

// needStrace returns strace's path, or skips the test without it (fails
// it where CHATD_REQUIRE_STRACE says it must run, as in CI).
func needStrace(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("strace")
	if err != nil {
		if os.Getenv("CHATD_REQUIRE_STRACE") != "" {
			t.Fatalf("strace is required (CHATD_REQUIRE_STRACE): %v", err)
		}
		t.Skip("strace not installed (Debian: apt-get install -y strace); CI installs it")
	}
	return p
}

// traceMessages are sent: two alone, then a burst, then two alone, to
// traceRooms rooms in turn (with four partitions, one in each).
const (
	traceMessages = 44
	traceRooms    = 4
)

func traceText(i int) string      { return fmt.Sprintf("durable-%d-end", i) }
func traceReceiptID(i int) string { return fmt.Sprintf("rc-%d", i) }

// runTraced runs the chatd commands under one strace, sends the messages
// to the first node, waits for their RECEIPTs, stops every node and
// returns the trace file.
func runTraced(t *testing.T, straceBin string, nodes [][]string) string {
	t.Helper()
	dir := t.TempDir()
	trace := filepath.Join(dir, "strace.txt")
	var script strings.Builder
	for _, args := range nodes {
		for _, a := range args {
			script.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "' ")
		}
		script.WriteString("&\n")
	}
	script.WriteString("wait\n")
	// -y names each fd's file or socket; -s keeps whole buffers; only
	// the syscalls that write or sync are stopped at (--seccomp-bpf).
	cmd := exec.Command(straceBin, "-f", "-qq", "--seccomp-bpf", "-y", "-s", "1048576", "-o", trace,
		"-e", "trace=write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,fsync,fdatasync", "-e", "signal=none",
		"/bin/sh", "-c", script.String())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	logs := bufio.NewScanner(stderr)
	ready := regexp.MustCompile(`msg="chatd ready" http=(\S+) .* node=(\S+)`)
	addrs := map[string]string{}
	var logText strings.Builder
	for len(addrs) < len(nodes) && logs.Scan() {
		logText.WriteString(logs.Text() + "\n")
		if m := ready.FindStringSubmatch(logs.Text()); m != nil {
			addrs[m[2]] = m[1]
		}
	}
	if len(addrs) < len(nodes) {
		if strings.Contains(logText.String(), "ptrace") && os.Getenv("CHATD_REQUIRE_STRACE") == "" {
			t.Skipf("strace cannot trace here:\n%s", logText.String())
		}
		t.Fatalf("chatd under strace: %d of %d nodes became ready:\n%s", len(addrs), len(nodes), logText.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	first := addrs[nodeName(nodes[0])]

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+first+"/ws", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ws.CloseNow() }()
	ws.SetReadLimit(-1)
	write := func(s string) {
		if err := ws.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	var pending []string // frames read but not yet looked at
	next := func() string {
		for len(pending) == 0 {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			for _, f := range strings.Split(string(b), "\x00") {
				if f = strings.TrimLeft(f, "\r\n"); f != "" {
					pending = append(pending, f)
				}
			}
		}
		f := pending[0]
		pending = pending[1:]
		return f
	}
	send := func(i int) string {
		return fmt.Sprintf("SEND\ndestination:/app/chat.trace-%d\ncontent-type:application/json\nreceipt:%s\n\n{\"message\":%q}\x00",
			i%traceRooms, traceReceiptID(i), traceText(i))
	}
	expectReceipt := func(i int) {
		if f := next(); !strings.HasPrefix(f, "RECEIPT\nreceipt-id:"+traceReceiptID(i)+"\n") {
			t.Fatalf("want RECEIPT %s, got %q", traceReceiptID(i), f)
		}
	}
	write("CONNECT\naccept-version:1.2\nhost:/\nlogin:tracer\n\n\x00")
	if f := next(); !strings.HasPrefix(f, "CONNECTED") {
		t.Fatalf("connect: %q", f)
	}
	alone := []int{0, 1, traceMessages - 2, traceMessages - 1}
	for _, i := range alone[:2] {
		write(send(i))
		expectReceipt(i)
	}
	var burst strings.Builder
	for i := 2; i < traceMessages-2; i++ {
		burst.WriteString(send(i))
	}
	write(burst.String())
	for i := 2; i < traceMessages-2; i++ {
		expectReceipt(i)
	}
	for _, i := range alone[2:] {
		write(send(i))
		expectReceipt(i)
	}
	// The nodes are children of strace's shell: stop them, and the shell
	// and strace end with them.
	for _, pid := range childrenOf(t, childrenOf(t, cmd.Process.Pid)[0]) {
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("strace/chatd: %v", err)
	}
	return trace
}

// nodeName is the --name in a chatd command line, or what chatd defaults
// it to, the host name.
func nodeName(args []string) string {
	for i, a := range args {
		if a == "--name" && i+1 < len(args) {
			return args[i+1]
		}
	}
	h, _ := os.Hostname()
	return h
}

// childrenOf returns pid's child processes.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		child, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, child)
	}
	if len(out) == 0 {
		t.Fatalf("process %d has no children", pid)
	}
	return out
}

// syscallEv is one traced syscall: where in the trace it began and ended
// (line numbers), the file or socket it acted on, and what it wrote.
type syscallEv struct {
	name       string
	begin, end int
	fd         string
	data       string
}

// traceEvents are the syscalls of a trace that matter here.
type traceEvents struct {
	fileWrites []syscallEv // writes to block files (*.blk)
	syncs      []syscallEv // fsyncs
	sockWrites []syscallEv // writes to sockets
}

var (
	// 1234 pwrite64(8</d/jetstream/$G/streams/CHAT_MESSAGES/msgs/1.blk>, "...", 396, 0) = 396
	callRe = regexp.MustCompile(`^(\d+) +(\w+)\((\d+)<([^>]*)>(.*)$`)
	// 1234 <... fsync resumed>) = 0
	resumedRe = regexp.MustCompile(`^(\d+) +<\.\.\. (\w+) resumed>`)
)

// parseTrace reads an strace -f -y trace. A syscall interrupted by another
// thread's is split over an "<unfinished ...>" line and a "resumed" line:
// it began at the first and ended at the second.
func parseTrace(t *testing.T, path string) *traceEvents {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	ev := &traceEvents{}
	open := map[string]*syscallEv{} // pid -> unfinished syscall
	add := func(e *syscallEv) {
		switch {
		case e.name == "fsync" || e.name == "fdatasync":
			ev.syncs = append(ev.syncs, *e)
		case strings.HasPrefix(e.fd, "socket:") || strings.HasPrefix(e.fd, "TCP:"):
			ev.sockWrites = append(ev.sockWrites, *e)
		case strings.HasSuffix(e.fd, ".blk"):
			ev.fileWrites = append(ev.fileWrites, *e)
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if m := resumedRe.FindStringSubmatch(text); m != nil {
			if e := open[m[1]]; e != nil && e.name == m[2] {
				e.end = line
				add(e)
				delete(open, m[1])
			}
			continue
		}
		m := callRe.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		e := &syscallEv{name: m[2], begin: line, end: line, fd: m[4], data: m[5]}
		if strings.HasSuffix(text, "<unfinished ...>") {
			open[m[1]] = e
			continue
		}
		add(e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(ev.fileWrites) == 0 || len(ev.sockWrites) == 0 {
		t.Fatalf("trace %s has %d writes to block files and %d socket writes: not the trace expected",
			path, len(ev.fileWrites), len(ev.sockWrites))
	}
	return ev
}

// isStreamBlock: a message block of the messages stream, not the staging
// store of an atomic batch (CHAT_MESSAGES/batches/...) nor an index.
func isStreamBlock(path string) bool { return streamBlock.MatchString(path) }

// streamBlock matches the block files of the messages streams: one
// stream, or one per partition.
var streamBlock = regexp.MustCompile(`/streams/CHAT_MESSAGES(_[0-9]+)?/msgs/[0-9]+\.blk$`)

// storedBeforeReceipt reports, for message i and the files that file
// selects, whether the message was written to one of them before its
// RECEIPT went out (written), and whether that file was then fsynced,
// the fsync beginning after the write ended and ending before the RECEIPT
// began (synced); why says what was missing.
func (ev *traceEvents) storedBeforeReceipt(i int, file func(path string) bool) (written, synced bool, why string) {
	text, receipt := traceText(i), "receipt-id:"+traceReceiptID(i)+`\n`
	var sent *syscallEv
	for k := range ev.sockWrites {
		if strings.Contains(ev.sockWrites[k].data, receipt) {
			sent = &ev.sockWrites[k]
			break
		}
	}
	if sent == nil {
		return false, false, "its RECEIPT is not in the trace"
	}
	var stored *syscallEv
	for k := range ev.fileWrites {
		if w := &ev.fileWrites[k]; file(w.fd) && strings.Contains(w.data, text) {
			stored = w
			break
		}
	}
	switch {
	case stored == nil:
		return false, false, "never written to those files while traced"
	case stored.begin > sent.begin:
		return false, false, fmt.Sprintf("RECEIPT at line %d, written to %s at line %d", sent.begin, stored.fd, stored.begin)
	}
	for _, s := range ev.syncs {
		if s.fd == stored.fd && s.begin > stored.end && s.end < sent.begin {
			return true, true, ""
		}
	}
	return true, false, fmt.Sprintf("written to %s at line %d, RECEIPT at line %d, no fsync of it between", stored.fd, stored.end, sent.begin)
}
