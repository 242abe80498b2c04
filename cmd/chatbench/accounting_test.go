package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestSeqTracker(t *testing.T) {
	cases := []struct {
		name       string
		recv       []uint64
		sent       uint64
		outcomes   []outcome // nil: not checked
		delivered  uint64
		duplicated uint64
		outOfOrder uint64
		missing    uint64
		beyond     uint64
		gaps       []seqRange
	}{
		{name: "nothing", sent: 3, missing: 3},
		{name: "in order", recv: []uint64{1, 2, 3}, sent: 3, delivered: 3,
			outcomes: []outcome{inOrder, inOrder, inOrder}},
		{name: "tail lost", recv: []uint64{1, 2}, sent: 5, delivered: 2, missing: 3},
		{name: "head lost", recv: []uint64{3, 4}, sent: 4, delivered: 2, missing: 2, gaps: []seqRange{{1, 2}}},
		{name: "middle lost", recv: []uint64{1, 4, 5}, sent: 5, delivered: 3, missing: 2, gaps: []seqRange{{2, 3}}},
		{name: "duplicate in order", recv: []uint64{1, 1, 2, 2, 2}, sent: 2, delivered: 2, duplicated: 3,
			outcomes: []outcome{inOrder, duplicate, inOrder, duplicate, duplicate}},
		{name: "swap", recv: []uint64{2, 1}, sent: 2, delivered: 2, outOfOrder: 1,
			outcomes: []outcome{inOrder, lateFill}},
		{name: "late fill splits a gap", recv: []uint64{1, 6, 3}, sent: 6, delivered: 3, outOfOrder: 1, missing: 3,
			gaps: []seqRange{{2, 2}, {4, 5}}},
		{name: "fill gap edges", recv: []uint64{5, 1, 4, 2, 3}, sent: 5, delivered: 5, outOfOrder: 4},
		{name: "late duplicate", recv: []uint64{3, 1, 1, 2, 3}, sent: 3, delivered: 3, outOfOrder: 2, duplicated: 2,
			outcomes: []outcome{inOrder, lateFill, duplicate, lateFill, duplicate}},
		{name: "reversed", recv: []uint64{4, 3, 2, 1}, sent: 4, delivered: 4, outOfOrder: 3},
		{name: "zero is invalid", recv: []uint64{0, 1}, sent: 1, delivered: 1, outcomes: []outcome{invalid, inOrder}},
		{name: "beyond sent", recv: []uint64{1, 2, 3, 4}, sent: 2, delivered: 4, beyond: 2},
		{name: "beyond sent with gap", recv: []uint64{1, 5}, sent: 2, delivered: 2, missing: 1, beyond: 1, gaps: []seqRange{{2, 4}}},
		{name: "many gaps", recv: []uint64{2, 4, 6, 8}, sent: 9, delivered: 4, missing: 5,
			gaps: []seqRange{{1, 1}, {3, 3}, {5, 5}, {7, 7}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var tr seqTracker
			for i, s := range tc.recv {
				got := tr.observe(s)
				if tc.outcomes != nil && got != tc.outcomes[i] {
					t.Errorf("observe(%d) #%d = %v, want %v", s, i, got, tc.outcomes[i])
				}
			}
			if tr.delivered != tc.delivered || tr.duplicated != tc.duplicated || tr.outOfOrder != tc.outOfOrder {
				t.Errorf("delivered %d duplicated %d out of order %d, want %d %d %d",
					tr.delivered, tr.duplicated, tr.outOfOrder, tc.delivered, tc.duplicated, tc.outOfOrder)
			}
			if got := tr.missing(tc.sent); got != tc.missing {
				t.Errorf("missing(%d) = %d, want %d", tc.sent, got, tc.missing)
			}
			if got := tr.beyond(tc.sent); got != tc.beyond {
				t.Errorf("beyond(%d) = %d, want %d", tc.sent, got, tc.beyond)
			}
			if tc.gaps != nil && !slices.Equal(tr.gaps, tc.gaps) {
				t.Errorf("gaps %v, want %v", tr.gaps, tc.gaps)
			}
			// However the messages came, what was sent is either delivered or missing.
			if tr.delivered-tr.beyond(tc.sent)+tr.missing(tc.sent) != tc.sent {
				t.Errorf("delivered %d - beyond %d + missing %d != sent %d",
					tr.delivered, tr.beyond(tc.sent), tr.missing(tc.sent), tc.sent)
			}
		})
	}
}

// TestSeqTrackerPermutations checks the invariants over every order of a
// small sequence with losses and duplicates.
func TestSeqTrackerPermutations(t *testing.T) {
	base := []uint64{1, 2, 3, 5, 5, 6}
	const sent = 7 // 4 and 7 never arrive
	var permute func([]uint64, int)
	checked := 0
	permute = func(a []uint64, k int) {
		if k == len(a) {
			var tr seqTracker
			inversions := 0
			for i, s := range a {
				tr.observe(s)
				for _, p := range a[:i] {
					if p > s {
						inversions++
						break
					}
				}
			}
			if tr.delivered != 5 || tr.duplicated != 1 || tr.missing(sent) != 2 {
				t.Fatalf("%v: delivered %d duplicated %d missing %d", a, tr.delivered, tr.duplicated, tr.missing(sent))
			}
			// A reception is out of order when a higher one came first,
			// unless it is the duplicate.
			if tr.outOfOrder > uint64(inversions) {
				t.Fatalf("%v: out of order %d > receptions after a higher one %d", a, tr.outOfOrder, inversions)
			}
			checked++
			return
		}
		for i := k; i < len(a); i++ {
			a[k], a[i] = a[i], a[k]
			permute(a, k+1)
			a[k], a[i] = a[i], a[k]
		}
	}
	permute(slices.Clone(base), 0)
	if checked != 720 {
		t.Fatalf("checked %d orders", checked)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, 10, 200} {
		b := appendPayload([]byte(`{"message":"`), "run1", 42, 17, 1795320202978319123, size)
		b = append(b, `"}`...)
		p, ok := parsePayload(b)
		if !ok || string(p.run) != "run1" || p.pub != 42 || p.seq != 17 || p.ts != 1795320202978319123 {
			t.Fatalf("size %d: %+v %v from %s", size, p, ok, b)
		}
		if n := len(b) - len(`{"message":"`) - len(`"}`); n < size {
			t.Fatalf("size %d: payload is %d bytes", size, n)
		}
	}
}

func TestParsePayload(t *testing.T) {
	cases := []struct {
		in   string
		ok   bool
		want payload
	}{
		{`{"id":1,"roomId":"cbx-1","message":"#cb1;ab;3;9;100;xxx","unreadCount":0}`, true, payload{run: []byte("ab"), pub: 3, seq: 9, ts: 100}},
		{`#cb1;r;0;1;0;`, true, payload{run: []byte("r"), pub: 0, seq: 1, ts: 0}},
		{`no payload here`, false, payload{}},
		{`#cb1;r;0;0;5;`, false, payload{}},                       // seq 0
		{`#cb1;;1;1;5;`, false, payload{}},                        // no run
		{`#cb1;r;x;1;5;`, false, payload{}},                       // bad pub
		{`#cb1;r;1;1;5`, false, payload{}},                        // truncated
		{`#cb1;r;4294967296;1;5;`, false, payload{}},              // pub overflows uint32
		{`#cb1;r;1;12345678901234567890123;5;`, false, payload{}}, // seq overflows
		{`#cb1;r;1;;5;`, false, payload{}},                        // empty seq
	}
	for _, tc := range cases {
		p, ok := parsePayload([]byte(tc.in))
		if ok != tc.ok || string(p.run) != string(tc.want.run) || p.pub != tc.want.pub || p.seq != tc.want.seq || p.ts != tc.want.ts {
			t.Errorf("parsePayload(%q) = %+v %v, want %+v %v", tc.in, p, ok, tc.want, tc.ok)
		}
	}
}

func TestHistBuckets(t *testing.T) {
	prevUpper := uint64(0)
	for i := range histBuckets {
		u := histUpper(i)
		if i > 0 && u <= prevUpper {
			t.Fatalf("bucket %d upper %d not above %d", i, u, prevUpper)
		}
		if histIndex(u) != i {
			t.Fatalf("histIndex(histUpper(%d)=%d) = %d", i, u, histIndex(u))
		}
		if histIndex(u+1) != i+1 && i+1 < histBuckets {
			t.Fatalf("histIndex(%d) = %d, want %d", u+1, histIndex(u+1), i+1)
		}
		prevUpper = u
	}
	if histUpper(histBuckets-1) != histMaxUS {
		t.Fatalf("last bucket ends at %d, want %d", histUpper(histBuckets-1), uint64(histMaxUS))
	}
}

func TestLatencyHistQuantiles(t *testing.T) {
	cases := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", []time.Duration{7 * time.Millisecond}, 0.99, 7 * time.Millisecond},
		{"exact small", []time.Duration{1 * time.Microsecond, 2 * time.Microsecond, 3 * time.Microsecond, 4 * time.Microsecond}, 0.5, 2 * time.Microsecond},
		{"max", []time.Duration{time.Millisecond, 3 * time.Second}, 1, 3 * time.Second},
		{"negative is zero", []time.Duration{-time.Second}, 0.5, 0},
		{"clamped", []time.Duration{100 * time.Hour}, 1, histMaxUS * time.Microsecond},
		{"p50 of two", []time.Duration{10 * time.Microsecond, 20 * time.Microsecond}, 0.5, 10 * time.Microsecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h latencyHist
			for _, s := range tc.samples {
				h.record(s)
			}
			if got := h.quantile(tc.q); got != tc.want {
				t.Fatalf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

// TestLatencyHistAccuracy checks the relative error bound on a uniform
// spread from 1 µs to 10 s.
func TestLatencyHistAccuracy(t *testing.T) {
	var h latencyHist
	var all []time.Duration
	for us := uint64(1); us < 10_000_000; us = us*1001/1000 + 1 {
		d := time.Duration(us) * time.Microsecond
		h.record(d)
		all = append(all, d)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[int(math.Ceil(q*float64(len(all))))-1]
		got := h.quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/32+float64(time.Microsecond) {
			t.Errorf("q%v = %v, exact %v: off by more than 1/32", q, got, exact)
		}
	}
	if h.n != uint64(len(all)) || h.quantile(1) != all[len(all)-1] || time.Duration(h.minUS)*time.Microsecond != all[0] {
		t.Fatalf("n %d max %v min %d", h.n, h.quantile(1), h.minUS)
	}
}

func TestLatencyHistMerge(t *testing.T) {
	var a, b, both latencyHist
	for i := range 1000 {
		d := time.Duration(i*37%5000) * time.Microsecond
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
		both.record(d)
	}
	var m latencyHist
	m.merge(&a)
	m.merge(nil)
	m.merge(&latencyHist{})
	m.merge(&b)
	if m != both {
		t.Fatalf("merged %v, want %v", m.summary(), both.summary())
	}
}

func TestDeliveryCountsTally(t *testing.T) {
	// Two publishers (sent 5 and 3), three subscribers seeing different things.
	sent := []uint64{5, 3}
	observe := func(seqs ...[]uint64) []seqTracker {
		tr := make([]seqTracker, len(seqs))
		for i, ss := range seqs {
			for _, s := range ss {
				tr[i].observe(s)
			}
		}
		return tr
	}
	subs := [][]seqTracker{
		observe([]uint64{1, 2, 3, 4, 5}, []uint64{1, 2, 3}), // all
		observe([]uint64{1, 3, 2, 5, 5}, []uint64{2, 3}),    // reorder, dup, loss
		observe([]uint64{1, 2, 3, 4, 5, 6}, []uint64{}),     // one beyond, all of the second lost
		nil, // a subscriber that got nothing
		observe([]uint64{1, 2, 3, 4, 5}, []uint64{1, 2, 3, 4, 4}), // beyond and dup
	}
	var c deliveryCounts
	for _, s := range subs {
		c.tally(s, sent)
	}
	want := deliveryCounts{Expected: 40, Delivered: 5 + 3 + 4 + 2 + 6 + 0 + 5 + 4, Lost: 0 + 2 + 3 + 8 + 0,
		Duplicated: 2, OutOfOrder: 1, Unexpected: 2}
	if c != want {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	if c.Delivered-c.Unexpected+c.Lost != c.Expected {
		t.Fatalf("counts do not add up: %+v", c)
	}
}
