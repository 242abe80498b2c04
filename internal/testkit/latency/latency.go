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

// Loop runs the benchmark's loop, calling each once an iteration with its
// index (nil: an iteration only waits a millisecond), while background
// runs beside it until the loop ends (nil: nothing runs beside it); then
// it reports each's latencies as name and background's as bgName.
func Loop(b *testing.B, name string, each func(i int, r *Recorder), bgName string, background func(stop <-chan struct{}, r *Recorder)) {
	var fg, bg Recorder
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if background != nil {
		wg.Go(func() { background(stop, &bg) })
	}
	for i := 0; b.Loop(); i++ {
		if each == nil {
			time.Sleep(time.Millisecond)
			continue
		}
		each(i, &fg)
	}
	close(stop)
	wg.Wait()
	fg.Report(b, name)
	bg.Report(b, bgName)
}
