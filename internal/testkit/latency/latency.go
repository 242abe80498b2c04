// Package latency collects durations in benchmarks and reports their
// percentiles as benchmark metrics.
package latency

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Recorder collects durations from concurrent goroutines.
type Recorder struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
}

// Report adds the p50 and p99 of what was recorded as metrics named
// prefix-p50-ms and prefix-p99-ms; nothing if nothing was.
func (r *Recorder) Report(b *testing.B, prefix string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.d) == 0 {
		return
	}
	slices.Sort(r.d)
	at := func(q float64) float64 {
		return float64(r.d[min(len(r.d)-1, int(q*float64(len(r.d))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), prefix+"-p50-ms")
	b.ReportMetric(at(0.99), prefix+"-p99-ms")
}
