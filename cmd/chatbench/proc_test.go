package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want time.Duration
		err  bool
	}{
		{"plain", "1234 (chatd) S 1 1234 1234 0 -1 4194560 2130 0 0 0 250 130 0 0 20 0 9 0 100 1000 2000", 3800 * time.Millisecond, false},
		{"spaces and parens in the name", "7 (a b) (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1", 30 * time.Millisecond, false},
		{"no name", "1234 chatd S 1", 0, true},
		{"too short", "1 (x) S 1 2 3", 0, true},
		{"bad number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 2 0", 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("parseStat = %v, %v; want %v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tchatd\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t12\n"
	rss, hwm, threads, err := parseStatus([]byte(in))
	if err != nil || rss != 1024<<10 || hwm != 2048<<10 || threads != 12 {
		t.Fatalf("got %d %d %d %v", rss, hwm, threads, err)
	}
	if _, _, _, err := parseStatus([]byte("Name:\tchatd\nVmRSS:\t1 kB\n")); err == nil {
		t.Fatal("want an error when fields are missing")
	}
}

// TestReadProcSelf reads this test process's real /proc entries.
func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	p, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.RSS <= 0 || p.HWM < p.RSS || p.Threads < 1 {
		t.Fatalf("implausible sample %+v", p)
	}
	if _, err := readProc(-5); err == nil || !strings.Contains(err.Error(), "-5") {
		t.Fatalf("want an error naming the pid, got %v", err)
	}
}

func TestSummarizeSamples(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	samples := []procSample{
		{At: at(0), CPU: 0, RSS: 10 << 20, HWM: 10 << 20, Threads: 5},
		{At: at(1), CPU: 500 * time.Millisecond, RSS: 30 << 20, HWM: 30 << 20, Threads: 7},
		{At: at(2), CPU: 2000 * time.Millisecond, RSS: 20 << 20, HWM: 30 << 20, Threads: 6},
		{At: at(10), CPU: 9000 * time.Millisecond, RSS: 99 << 20, HWM: 99 << 20, Threads: 9}, // outside the window
	}
	r := summarizeSamples(procReport{}, samples, at(0), at(2))
	want := procReport{CPUPercentAvg: 100, CPUPercentMax: 150, RSSStartMiB: 10, RSSEndMiB: 20, RSSPeakMiB: 30, HWMMiB: 30, Threads: 7, Samples: 3}
	if r != want {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if r := summarizeSamples(procReport{}, samples, at(3), at(4)); r.Samples != 0 || r.CPUPercentAvg != 0 {
		t.Fatalf("empty window: %+v", r)
	}
}

func TestParseIO(t *testing.T) {
	in := "rchar: 10\nwchar: 2048\nsyscr: 3\nsyscw: 16\nread_bytes: 0\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n"
	syscw, wchar, err := parseIO([]byte(in))
	if err != nil || syscw != 16 || wchar != 2048 {
		t.Fatalf("got %d %d %v", syscw, wchar, err)
	}
	if _, _, err := parseIO([]byte("rchar: 1\n")); err == nil {
		t.Fatal("want an error when fields are missing")
	}
}

// TestCostOf: the cost per delivery between two samples, with and without
// /proc/<pid>/io.
func TestCostOf(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := procSample{At: t0, CPU: time.Second, IO: true, Syscw: 100, Wchars: 10000}
	b := procSample{At: t0.Add(2 * time.Second), CPU: 3 * time.Second, IO: true, Syscw: 1100, Wchars: 410000}
	got := costOf(a, b, 1_000_000)
	want := deliveryCost{WindowS: 2, CPUS: 2, CPUUSPerDelivery: 2, Writes: 1000, BytesWritten: 400000, DeliveriesPerWrite: 1000, BytesPerDelivery: 0.4}
	if got == nil || *got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	b.IO = false
	if got := costOf(a, b, 1_000_000); got == nil || got.Writes != 0 || got.CPUUSPerDelivery != 2 {
		t.Fatalf("without io: %+v", got)
	}
	if costOf(a, b, 0) != nil || costOf(procSample{}, b, 1) != nil {
		t.Fatal("a cost without deliveries or without a first sample")
	}
}

// TestReadProcIO: this process's real /proc/<pid>/io counts a write.
func TestReadProcIO(t *testing.T) {
	before, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !before.IO {
		t.Skip("/proc/self/io not readable here")
	}
	f, err := os.Create(t.TempDir() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	after, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.Syscw <= before.Syscw || after.Wchars < before.Wchars+100 {
		t.Fatalf("a 100-byte write: syscw %d -> %d, wchar %d -> %d", before.Syscw, after.Syscw, before.Wchars, after.Wchars)
	}
}

func TestParseMachineUserCPU(t *testing.T) {
	in := "cpu  100 20 30 1000 50 7 3 9 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
	got, ok := parseMachineUserCPU([]byte(in))
	if !ok || got != 1200*time.Millisecond { // user 100 + nice 20 ticks
		t.Fatalf("got %v %v", got, ok)
	}
	if _, ok := parseMachineUserCPU([]byte("cpu0 1 2\n")); ok {
		t.Fatal("a per-CPU line parsed")
	}
	if _, user, err := parseStatTimes([]byte("1234 (chatd) S 1 1234 1234 0 -1 4194560 2130 0 0 0 250 130 0 0 20 0 9 0 100 1000 2000")); err != nil || user != 2500*time.Millisecond {
		t.Fatalf("utime %v, %v", user, err)
	}
}
