package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat CPU times.
// It is 100 on every mainstream architecture; reading it needs sysconf.
const clockTicks = 100

// procSample is one reading of a process's CPU and memory.
type procSample struct {
	At      time.Time
	CPU     time.Duration // user + system time since the process started
	User    time.Duration // user time alone
	RSS     int64         // resident set size, bytes
	HWM     int64         // peak resident set size, bytes
	Threads int
	// From /proc/<pid>/io when readable: write(2)-family calls (write,
	// writev, pwrite: sockets, files and the runtime's wake-ups alike) and
	// the bytes they wrote.
	IO     bool
	Syscw  int64
	Wchars int64
}

// parseStat reads utime and stime (fields 14 and 15) from /proc/<pid>/stat
// and returns their sum. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStat(b []byte) (time.Duration, error) {
	cpu, _, err := parseStatTimes(b)
	return cpu, err
}

// parseStatTimes is parseStat that also returns utime alone.
func parseStatTimes(b []byte) (cpu, user time.Duration, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse stat: no command field")
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); utime is field 14.
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("parse stat: %d fields after the command", len(fields))
	}
	ut, err1 := strconv.ParseUint(string(fields[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parse stat: bad utime %q or stime %q", fields[11], fields[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, time.Duration(ut) * time.Second / clockTicks, nil
}

// parseStatus reads VmRSS, VmHWM and Threads from /proc/<pid>/status.
func parseStatus(b []byte) (rss, hwm int64, threads int, err error) {
	found := 0
	for line := range bytes.Lines(b) {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(val)
		if len(f) == 0 {
			continue
		}
		n, perr := strconv.ParseInt(string(f[0]), 10, 64)
		if perr != nil {
			continue
		}
		if len(f) > 1 && string(f[1]) == "kB" {
			n <<= 10
		}
		switch string(name) {
		case "VmRSS":
			rss = n
			found++
		case "VmHWM":
			hwm = n
			found++
		case "Threads":
			threads = int(n)
			found++
		}
	}
	if found < 3 {
		return 0, 0, 0, fmt.Errorf("parse status: VmRSS, VmHWM or Threads missing")
	}
	return rss, hwm, threads, nil
}

// parseIO reads syscw and wchar from /proc/<pid>/io.
func parseIO(b []byte) (syscw, wchar int64, err error) {
	found := 0
	for line := range bytes.Lines(b) {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		n, perr := strconv.ParseInt(string(bytes.TrimSpace(val)), 10, 64)
		if perr != nil {
			continue
		}
		switch string(name) {
		case "syscw":
			syscw = n
			found++
		case "wchar":
			wchar = n
			found++
		}
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("parse io: syscw or wchar missing")
	}
	return syscw, wchar, nil
}

func readProc(pid int) (procSample, error) {
	s := procSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read process %d: %w", pid, err)
	}
	if s.CPU, s.User, err = parseStatTimes(stat); err != nil {
		return s, fmt.Errorf("process %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read process %d: %w", pid, err)
	}
	if s.RSS, s.HWM, s.Threads, err = parseStatus(status); err != nil {
		return s, fmt.Errorf("process %d: %w", pid, err)
	}
	// Another user's process keeps its io from us; the rest still counts.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		if s.Syscw, s.Wchars, err = parseIO(b); err == nil {
			s.IO = true
		}
	}
	return s, nil
}

// sampler reads a process's /proc entries at a fixed interval, and on
// demand at phase boundaries.
type sampler struct {
	pid   int
	every time.Duration

	mu      sync.Mutex
	samples []procSample
	err     error
}

func newSampler(pid int, every time.Duration) *sampler {
	return &sampler{pid: pid, every: every}
}

// run samples until ctx ends. The run's own timeout bounds it.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sample takes a reading now and returns it.
func (s *sampler) sample() procSample {
	p, err := readProc(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return procSample{}
	}
	s.samples = append(s.samples, p)
	return p
}

// procReport sums up a process over a window of the run.
type procReport struct {
	PID           int     `json:"pid"`
	CPUPercentAvg float64 `json:"cpu_percent_avg"` // 100 = one core busy
	CPUPercentMax float64 `json:"cpu_percent_max"` // highest between two samples
	RSSStartMiB   float64 `json:"rss_start_mib"`
	RSSEndMiB     float64 `json:"rss_end_mib"`
	RSSPeakMiB    float64 `json:"rss_peak_mib"` // highest sampled in the window
	HWMMiB        float64 `json:"hwm_mib"`      // the kernel's peak RSS of the process's life
	Threads       int     `json:"threads_max"`
	Samples       int     `json:"samples"`
	Error         string  `json:"error,omitempty"`
}

func mib(b int64) float64 { return float64(b*100/(1<<20)) / 100 }

// window reports the samples taken between from and to.
func (s *sampler) window(from, to time.Time) procReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := procReport{PID: s.pid}
	if s.err != nil {
		r.Error = s.err.Error()
	}
	return summarizeSamples(r, s.samples, from, to)
}

// summarizeSamples is the pure part of window.
func summarizeSamples(r procReport, all []procSample, from, to time.Time) procReport {
	var in []procSample
	for _, p := range all {
		if !p.At.Before(from) && !p.At.After(to) {
			in = append(in, p)
		}
	}
	r.Samples = len(in)
	if len(in) == 0 {
		return r
	}
	first, last := in[0], in[len(in)-1]
	r.RSSStartMiB, r.RSSEndMiB = mib(first.RSS), mib(last.RSS)
	for i, p := range in {
		r.RSSPeakMiB = max(r.RSSPeakMiB, mib(p.RSS))
		r.HWMMiB = max(r.HWMMiB, mib(p.HWM))
		r.Threads = max(r.Threads, p.Threads)
		if i > 0 {
			if dt := p.At.Sub(in[i-1].At); dt > 0 {
				r.CPUPercentMax = max(r.CPUPercentMax, pct(p.CPU-in[i-1].CPU, dt))
			}
		}
	}
	if dt := last.At.Sub(first.At); dt > 0 {
		r.CPUPercentAvg = pct(last.CPU-first.CPU, dt)
	}
	return r
}

func pct(cpu, wall time.Duration) float64 {
	return float64(int64(1000*float64(cpu)/float64(wall))) / 10
}

// deliveryCost is what a process spent per delivery between two samples.
type deliveryCost struct {
	WindowS          float64 `json:"window_s"`
	CPUS             float64 `json:"cpu_s"`
	CPUUSPerDelivery float64 `json:"cpu_us_per_delivery"`
	// From /proc/<pid>/io, when readable.
	Writes             int64   `json:"writes,omitempty"`
	BytesWritten       int64   `json:"bytes_written,omitempty"`
	DeliveriesPerWrite float64 `json:"deliveries_per_write,omitempty"`
	BytesPerDelivery   float64 `json:"bytes_written_per_delivery,omitempty"`
}

// costOf divides what the process did from a to b by deliveries.
func costOf(a, b procSample, deliveries uint64) *deliveryCost {
	if a.At.IsZero() || b.At.IsZero() || deliveries == 0 {
		return nil
	}
	round := func(x float64, digits float64) float64 { return math.Round(x*digits) / digits }
	c := &deliveryCost{WindowS: round(b.At.Sub(a.At).Seconds(), 1000), CPUS: round((b.CPU - a.CPU).Seconds(), 100)}
	c.CPUUSPerDelivery = round(float64((b.CPU-a.CPU).Microseconds())/float64(deliveries), 1000)
	if a.IO && b.IO {
		c.Writes, c.BytesWritten = b.Syscw-a.Syscw, b.Wchars-a.Wchars
		if c.Writes > 0 {
			c.DeliveriesPerWrite = round(float64(deliveries)/float64(c.Writes), 100)
		}
		c.BytesPerDelivery = round(float64(c.BytesWritten)/float64(deliveries), 10)
	}
	return c
}

// loadAvg is the machine's 1, 5 and 15 minute load averages, "" if
// unknown: a run on a busy machine says so.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// machineUserCPU is the time the machine's CPUs spent in user mode since
// boot (user and nice; guest time is within user), from /proc/stat's
// first line. User time only: the kernel's share of a run's work (network
// softirqs, the page cache's writeback of chatd's store) runs in whatever
// task the CPU was in, or in kernel threads, and would pass for others'.
func machineUserCPU() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	return parseMachineUserCPU(b)
}

func parseMachineUserCPU(b []byte) (time.Duration, bool) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 3 || string(f[0]) != "cpu" {
		return 0, false
	}
	var user uint64
	for _, x := range f[1:3] {
		n, err := strconv.ParseUint(string(x), 10, 64)
		if err != nil {
			return 0, false
		}
		user += n
	}
	return time.Duration(user) * time.Second / clockTicks, true
}
