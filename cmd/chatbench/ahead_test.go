package main

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAheadGate: a publisher waits until every subscriber has message
// n-limit, a subscriber that left no longer holds it, and the run's end
// or context ends the wait.
func TestAheadGate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g := newAheadGate(2, 3)
	for seq := uint64(1); seq <= 2; seq++ {
		if !g.wait(ctx, seq, nil) {
			t.Fatalf("message %d held back with nothing received", seq)
		}
	}
	done := make(chan bool, 1)
	go func() { done <- g.wait(ctx, 3, nil) }()
	blocked := func(what string) {
		t.Helper()
		select {
		case <-done:
			t.Fatalf("message 3 went out %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
	blocked("before any subscriber had message 1")
	g.advance(0, 1)
	g.advance(1, 5)
	blocked("with one subscriber still at 0")
	g.leave(2)
	if !<-done {
		t.Fatal("message 3 refused")
	}

	// The wait ends, refused, at the run's end or with the context.
	g = newAheadGate(1, 1)
	end := make(chan time.Time)
	go func() { done <- g.wait(ctx, 5, end) }()
	blocked("past the bound")
	close(end)
	if <-done {
		t.Fatal("message 5 allowed at the end")
	}
	cctx, ccancel := context.WithCancel(ctx)
	go func() { done <- g.wait(cctx, 5, nil) }()
	ccancel()
	if <-done {
		t.Fatal("message 5 allowed after the context ended")
	}
	var nilGate *aheadGate
	if !nilGate.wait(ctx, 1000, nil) {
		t.Fatal("no bound held a message back")
	}
}

// TestAheadGateConcurrent: subscribers on their own goroutines, one of
// them slow; the publisher never sends a message more than limit ahead
// of any of them, and gets through.
func TestAheadGateConcurrent(t *testing.T) {
	const limit, subs, msgs = 5, 4, 20000
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := newAheadGate(limit, subs)
	var sent atomic.Uint64
	chans := make([]chan uint64, subs)
	var wg sync.WaitGroup
	for i := range chans {
		chans[i] = make(chan uint64, 2*limit)
		wg.Go(func() {
			for seq := range chans[i] {
				if i == 0 && seq%1000 == 0 {
					time.Sleep(time.Millisecond) // the slow one
				}
				g.advance(i, seq)
			}
		})
	}
	for seq := uint64(1); seq <= msgs; seq++ {
		if !g.wait(ctx, seq, nil) {
			t.Fatalf("message %d refused", seq)
		}
		if s := g.slowest(); seq > limit && s < seq-limit {
			t.Fatalf("message %d sent with the slowest subscriber at %d", seq, s)
		}
		sent.Store(seq)
		for _, c := range chans {
			c <- seq
		}
	}
	for _, c := range chans {
		close(c)
	}
	wg.Wait()
	if g.slowest() != msgs {
		t.Fatalf("slowest at %d, want %d", g.slowest(), msgs)
	}
}
