package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
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
	RSS     int64         // resident set size, bytes
	HWM     int64         // peak resident set size, bytes
	Threads int
}

// parseStat reads utime and stime (fields 14 and 15) from /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted after its last ')'.
func parseStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat: no command field")
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); utime is field 14.
	if len(fields) < 13 {
		return 0, fmt.Errorf("parse stat: %d fields after the command", len(fields))
	}
	ut, err1 := strconv.ParseUint(string(fields[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse stat: bad utime %q or stime %q", fields[11], fields[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
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

func readProc(pid int) (procSample, error) {
	s := procSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read process %d: %w", pid, err)
	}
	if s.CPU, err = parseStat(stat); err != nil {
		return s, fmt.Errorf("process %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read process %d: %w", pid, err)
	}
	if s.RSS, s.HWM, s.Threads, err = parseStatus(status); err != nil {
		return s, fmt.Errorf("process %d: %w", pid, err)
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
