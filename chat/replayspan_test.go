package chat

import (
	"slices"
	"testing"
)

// pubsOf makes publications with ids from lo to hi, every step.
func pubsOf(lo, hi, step uint64) []*Publication {
	var out []*Publication
	for id := lo; id <= hi; id += step {
		out = append(out, &Publication{ID: id, Body: []byte("x")})
	}
	return out
}

func idsOf(pubs []*Publication) []uint64 {
	out := make([]uint64, len(pubs))
	for i, p := range pubs {
		out[i] = p.ID
	}
	return out
}

// TestReplaySpansMerge: reads that follow on, overlap or fill a hole
// between two others become one span with each message once, in order;
// the bytes held follow; a chunk is never longer than a read's batch; and
// a read of another life of the log replaces what the share held.
func TestReplaySpansMerge(t *testing.T) {
	var sh replayShare
	one := publicationSize(&Publication{Body: []byte("x")})
	check := func(what string, wantSpans [][2]uint64, wantIDs []uint64) {
		t.Helper()
		var got [][2]uint64
		var ids []uint64
		var size int64
		for _, s := range sh.spans {
			got = append(got, [2]uint64{s.after, s.last})
			ids = append(ids, idsOf(s.pubs)...)
			size += s.size
		}
		if !slices.Equal(got, wantSpans) || !slices.Equal(ids, wantIDs) {
			t.Fatalf("%s: spans %v with ids %v, want %v with %v", what, got, ids, wantSpans, wantIDs)
		}
		if sh.size != size || size != int64(len(wantIDs))*one {
			t.Fatalf("%s: %d bytes held, spans hold %d, want %d", what, sh.size, size, int64(len(wantIDs))*one)
		}
	}
	grew := sh.addLocked(7, 0, 10, pubsOf(2, 10, 2)) // 2 4 6 8 10
	check("first read", [][2]uint64{{0, 10}}, []uint64{2, 4, 6, 8, 10})
	if grew != 5*one {
		t.Fatalf("grew %d, want %d", grew, 5*one)
	}
	sh.addLocked(7, 20, 30, pubsOf(22, 30, 2))
	check("a read further on", [][2]uint64{{0, 10}, {20, 30}}, []uint64{2, 4, 6, 8, 10, 22, 24, 26, 28, 30})
	sh.addLocked(7, 10, 13, pubsOf(12, 12, 1))
	check("following on", [][2]uint64{{0, 13}, {20, 30}}, []uint64{2, 4, 6, 8, 10, 12, 22, 24, 26, 28, 30})
	grew = sh.addLocked(7, 13, 26, pubsOf(14, 26, 2)) // overlaps 22..26
	check("filling the hole, overlapping", [][2]uint64{{0, 30}}, pubsIDs(2, 30))
	if grew != 4*one {
		t.Fatalf("grew %d, want %d: only 14..20 are new", grew, 4*one)
	}

	if _, ok := sh.findLocked(7, 30, 40); ok {
		t.Fatal("found a chunk past the spans")
	}
	if _, ok := sh.findLocked(8, 3, 40); ok {
		t.Fatal("found a chunk of another life of the log")
	}
	c, ok := sh.findLocked(7, 3, 40)
	if !ok || !slices.Equal(idsOf(c.pubs), pubsIDs(4, 30)) || c.next != 30 {
		t.Fatalf("from 3: %v next %d (%v)", idsOf(c.pubs), c.next, ok)
	}
	c, ok = sh.findLocked(7, 3, 15)
	if !ok || !slices.Equal(idsOf(c.pubs), []uint64{4, 6, 8, 10, 12, 14}) || c.next != 15 {
		t.Fatalf("from 3 up to 15: %v next %d (%v)", idsOf(c.pubs), c.next, ok)
	}

	// A long span gives a batch at a time.
	sh.addLocked(7, 30, 30+2*replayBatch, pubsOf(31, 30+2*replayBatch, 1))
	c, ok = sh.findLocked(7, 30, 1<<40)
	if !ok || len(c.pubs) != replayBatch || c.next != 30+replayBatch {
		t.Fatalf("from 30: %d publications, next %d (%v): want a batch", len(c.pubs), c.next, ok)
	}

	held := sh.size
	grew = sh.addLocked(9, 100, 104, pubsOf(101, 104, 1))
	check("another life", [][2]uint64{{100, 104}}, []uint64{101, 102, 103, 104})
	if grew != 4*one-held {
		t.Fatalf("grew %d, want %d: the old life's spans dropped", grew, 4*one-held)
	}
}

func pubsIDs(lo, hi uint64) []uint64 { return idsOf(pubsOf(lo, hi, 2)) }
