package main

import (
	"context"
	"math"
	"sync/atomic"
	"time"
)

// aheadGate bounds how far one publisher runs ahead of its room's slowest
// subscriber (--ahead): message n goes out only once every subscriber has
// received message n-limit or a later one. Flat out without it, publishers
// fill whatever queue the server has, and the rate measured is the
// queue's, with seconds of latency; with it, a rate comes with the latency
// at which it was delivered. Both targets use it: the subscribers' read
// loops report progress, whatever protocol brought the message.
type aheadGate struct {
	limit uint64
	seen  []paddedSeq   // by subscriber: highest sequence received; gone once its connection ended
	want  atomic.Uint64 // the sequence the publisher waits for every subscriber to reach; 0: none
	wake  chan struct{}
	floor uint64 // the slowest subscriber's sequence when last computed; the publisher's alone
}

// gone marks a subscriber whose connection ended: the publisher no longer
// waits for it (its missing messages count as lost).
const gone = math.MaxUint64

// paddedSeq keeps each subscriber's sequence on its own cache line: the
// read loops that store them run on different cores.
type paddedSeq struct {
	atomic.Uint64
	_ [56]byte
}

func newAheadGate(limit, subscribers int) *aheadGate {
	return &aheadGate{limit: uint64(limit), seen: make([]paddedSeq, subscribers), wake: make(chan struct{}, 1)}
}

// advance records that subscriber sub has received up to seq (its
// highest so far), and wakes the publisher if it waits for that.
func (g *aheadGate) advance(sub int, seq uint64) {
	prev := g.seen[sub].Load()
	if seq <= prev {
		return
	}
	g.seen[sub].Store(seq)
	// Only the crossing wakes: the publisher rechecks every subscriber.
	if w := g.want.Load(); w != 0 && prev < w && seq >= w {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// leave marks subscriber sub gone.
func (g *aheadGate) leave(sub int) { g.advance(sub, gone) }

// slowest is the lowest sequence any subscriber has reached.
func (g *aheadGate) slowest() uint64 {
	m := uint64(gone)
	for i := range g.seen {
		m = min(m, g.seen[i].Load())
	}
	return m
}

// wait blocks until message seq may go out, or ctx ends, or until. It
// reports whether to send.
func (g *aheadGate) wait(ctx context.Context, seq uint64, until <-chan time.Time) bool {
	if g == nil || seq <= g.limit || g.floor >= seq-g.limit {
		return true
	}
	need := seq - g.limit
	for {
		if g.floor = g.slowest(); g.floor >= need {
			return true
		}
		// Publish what is awaited, then look again: a subscriber that
		// passed need in between either is seen here or sees want.
		g.want.Store(need)
		if g.floor = g.slowest(); g.floor >= need {
			g.want.Store(0)
			return true
		}
		select {
		case <-g.wake:
			g.want.Store(0)
		case <-ctx.Done():
			return false
		case <-until:
			return false
		}
	}
}
