package main

import (
	"bytes"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"time"
)

// Payload: publishers put "#cb1;<run>;<pub>;<seq>;<unixnano>;" in the chat
// message text, padded to the wanted size. It holds no character that JSON
// or STOMP escape, so it appears verbatim in whatever body the server
// wraps it in, and a subscriber finds it with one byte search instead of
// decoding JSON twice (the chat message is a JSON string inside JSON). The
// '#' is rare in what precedes it (ids, room and user names), so the search
// seldom stops at a false start.
const payloadMarker = "#cb1;"

// appendPayload appends a payload for publisher pub's message seq, sent (or
// due) at ts, padded with 'x' to at least size bytes.
func appendPayload(dst []byte, run string, pub uint32, seq uint64, ts int64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadMarker...)
	dst = append(dst, run...)
	dst = append(dst, ';')
	dst = strconv.AppendUint(dst, uint64(pub), 10)
	dst = append(dst, ';')
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ';')
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, ';')
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return dst
}

// payload is what a subscriber reads back from a message body.
type payload struct {
	run []byte // aliases the body
	pub uint32
	seq uint64
	ts  int64
}

// parsePayload finds a payload in a message body.
func parsePayload(body []byte) (payload, bool) {
	i := bytes.Index(body, []byte(payloadMarker))
	if i < 0 {
		return payload{}, false
	}
	b := body[i+len(payloadMarker):]
	j := bytes.IndexByte(b, ';')
	if j <= 0 {
		return payload{}, false
	}
	p := payload{run: b[:j]}
	b = b[j+1:]
	var ok bool
	var n uint64
	if n, b, ok = parseUintField(b); !ok || n > math.MaxUint32 {
		return payload{}, false
	}
	p.pub = uint32(n)
	if p.seq, b, ok = parseUintField(b); !ok || p.seq == 0 {
		return payload{}, false
	}
	if n, _, ok = parseUintField(b); !ok || n > math.MaxInt64 {
		return payload{}, false
	}
	p.ts = int64(n)
	return p, true
}

// parseUintField parses decimal digits up to a ';' and returns the rest
// after it.
func parseUintField(b []byte) (uint64, []byte, bool) {
	var n uint64
	for i, c := range b {
		if c == ';' {
			if i == 0 {
				return 0, nil, false
			}
			return n, b[i+1:], true
		}
		if c < '0' || c > '9' || i >= 19 {
			return 0, nil, false
		}
		n = n*10 + uint64(c-'0')
	}
	return 0, nil, false
}

// seqRange is an inclusive range of sequence numbers.
type seqRange struct{ lo, hi uint64 }

// seqTracker follows one publisher's sequence (1, 2, 3, ...) as one
// subscriber receives it. In-order delivery costs no memory; only the holes
// below the highest sequence seen are kept, so loss or reordering is exact
// without remembering every sequence.
type seqTracker struct {
	max  uint64     // highest sequence received
	gaps []seqRange // sequences below max not received yet, ascending, disjoint

	delivered  uint64 // distinct sequences received
	duplicated uint64 // receptions of a sequence already received
	outOfOrder uint64 // sequences that arrived after a higher one
}

// outcome is what observe made of one reception.
type outcome int

const (
	inOrder outcome = iota
	lateFill
	duplicate
	invalid
)

// observe records the reception of seq.
func (t *seqTracker) observe(seq uint64) outcome {
	switch {
	case seq == 0:
		return invalid
	case seq == t.max+1:
		t.max = seq
		t.delivered++
		return inOrder
	case seq > t.max:
		// Skipped some: they are late or lost; the end tells which.
		t.gaps = append(t.gaps, seqRange{t.max + 1, seq - 1})
		t.max = seq
		t.delivered++
		return inOrder
	}
	i := sort.Search(len(t.gaps), func(i int) bool { return t.gaps[i].hi >= seq })
	if i == len(t.gaps) || t.gaps[i].lo > seq {
		t.duplicated++
		return duplicate
	}
	g := t.gaps[i]
	switch {
	case g.lo == g.hi:
		t.gaps = append(t.gaps[:i], t.gaps[i+1:]...)
	case seq == g.lo:
		t.gaps[i].lo++
	case seq == g.hi:
		t.gaps[i].hi--
	default:
		t.gaps = append(t.gaps, seqRange{})
		copy(t.gaps[i+2:], t.gaps[i+1:])
		t.gaps[i] = seqRange{g.lo, seq - 1}
		t.gaps[i+1] = seqRange{seq + 1, g.hi}
	}
	t.delivered++
	t.outOfOrder++
	return lateFill
}

// missing returns how many of the sequences 1..sent never arrived.
func (t *seqTracker) missing(sent uint64) uint64 {
	var n uint64
	for _, g := range t.gaps {
		if g.lo > sent {
			break
		}
		n += min(g.hi, sent) - g.lo + 1
	}
	if sent > t.max {
		n += sent - t.max
	}
	return n
}

// beyond returns how many distinct sequences above sent arrived: messages
// the publisher never counted as sent, which only a bug can cause.
func (t *seqTracker) beyond(sent uint64) uint64 {
	if t.max <= sent {
		return 0
	}
	n := t.max - sent
	for _, g := range t.gaps {
		if g.hi <= sent {
			continue
		}
		n -= g.hi - max(g.lo, sent+1) + 1
	}
	return n
}

// Latency histogram: log-linear buckets in microseconds, 32 per power of two,
// so any reported percentile is within about 3% of the true value; below
// 32 µs buckets are exact. Memory is fixed (7 KiB), whatever the count.
const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histMaxUS   = 1<<32 - 1 // about 71 minutes; longer values are clamped
	histBuckets = histSub + (32-histSubBits)*histSub
)

type latencyHist struct {
	counts [histBuckets]uint64
	n      uint64
	sumUS  uint64
	minUS  uint64
	maxUS  uint64
}

func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	shift := bits.Len64(us) - 1 - histSubBits
	return histSub + shift*histSub + int(us>>shift) - histSub
}

// histUpper is the largest value that falls in bucket i.
func histUpper(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	shift := (i - histSub) / histSub
	m := uint64(i-histSub-shift*histSub) + histSub
	return (m+1)<<shift - 1
}

// record adds one latency. Negative values (clock steps) count as 0.
func (h *latencyHist) record(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	us = min(us, histMaxUS)
	h.counts[histIndex(us)]++
	if h.n == 0 || us < h.minUS {
		h.minUS = us
	}
	h.maxUS = max(h.maxUS, us)
	h.n++
	h.sumUS += us
}

func (h *latencyHist) merge(o *latencyHist) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.minUS < h.minUS {
		h.minUS = o.minUS
	}
	h.maxUS = max(h.maxUS, o.maxUS)
	h.n += o.n
	h.sumUS += o.sumUS
}

// quantile returns the value at or below which a fraction q of the
// latencies fall (the bucket's upper bound, never above the maximum).
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.maxUS) * time.Microsecond
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			return time.Duration(min(histUpper(i), h.maxUS)) * time.Microsecond
		}
	}
	return time.Duration(h.maxUS) * time.Microsecond
}

func (h *latencyHist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sumUS/h.n) * time.Microsecond
}

// latencySummary is a histogram's report, in milliseconds.
type latencySummary struct {
	Count  uint64  `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p99_9_ms"`
	MaxMS  float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func (h *latencyHist) summary() latencySummary {
	return latencySummary{
		Count:  h.n,
		MeanMS: ms(h.mean()),
		P50MS:  ms(h.quantile(0.50)),
		P90MS:  ms(h.quantile(0.90)),
		P99MS:  ms(h.quantile(0.99)),
		P999MS: ms(h.quantile(0.999)),
		MaxMS:  ms(h.quantile(1)),
	}
}

// deliveryCounts totals what subscribers saw against what publishers sent.
type deliveryCounts struct {
	Sent       uint64 `json:"sent"`
	Expected   uint64 `json:"expected"`
	Delivered  uint64 `json:"delivered"`
	Lost       uint64 `json:"lost"`
	Duplicated uint64 `json:"duplicated"`
	OutOfOrder uint64 `json:"out_of_order"`
	// Unexpected counts distinct messages above what a publisher reports
	// sent; Foreign, messages of another run or without a payload.
	Unexpected uint64 `json:"unexpected"`
	Foreign    uint64 `json:"foreign"`
}

// tally adds one subscriber's trackers for publishers that sent sent[i]
// messages each: every subscriber of a room expects every message of every
// publisher of the room.
func (c *deliveryCounts) tally(trackers []seqTracker, sent []uint64) {
	for i := range sent {
		var t *seqTracker
		if i < len(trackers) {
			t = &trackers[i]
		} else {
			t = &seqTracker{}
		}
		c.Expected += sent[i]
		c.Delivered += t.delivered
		c.Duplicated += t.duplicated
		c.OutOfOrder += t.outOfOrder
		c.Lost += t.missing(sent[i])
		c.Unexpected += t.beyond(sent[i])
	}
}
