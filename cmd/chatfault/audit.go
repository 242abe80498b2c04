package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// stored is one message of a room's history.
type stored struct {
	ID      uint64 `json:"id"`
	Message string `json:"message"`
}

// history reads a room's whole history from a node's HTTP API, oldest
// first (dev mode: the bearer token is the user id).
func history(ctx context.Context, client *http.Client, addr, room string) ([]stored, error) {
	var all []stored
	before := uint64(0)
	for {
		q := url.Values{"limit": {"100"}}
		if before > 0 {
			q.Set("before", strconv.FormatUint(before, 10))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			"http://"+addr+"/api/rooms/"+url.PathEscape(room)+"/messages?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer auditor")
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", room, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		_ = resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", room, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("history of %s: %d %s", room, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		var page []stored
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, fmt.Errorf("history of %s: %w", room, err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		before = page[0].ID
		for _, m := range page {
			before = min(before, m.ID)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all, nil
}

// senderReport is what one sender was promised and what the store holds.
type senderReport struct {
	User        string         `json:"user"`
	Sent        int            `json:"sent"`        // distinct messages sent
	Receipted   int            `json:"receipted"`   // got a RECEIPT
	Stored      int            `json:"stored"`      // distinct messages in history
	Lost        int            `json:"lost"`        // receipted, not in history
	Duplicated  int            `json:"duplicated"`  // in history more than once
	OutOfOrder  int            `json:"outOfOrder"`  // stored before a message sent earlier
	Unreceipted int            `json:"unreceipted"` // never got a RECEIPT, even after the faults healed
	Reconnects  int            `json:"reconnects"`
	Errors      map[string]int `json:"errors,omitempty"` // ERROR frames by kind
}

// watcherReport is what a resuming subscriber received of each room.
type watcherReport struct {
	User       string         `json:"user"`
	Received   int            `json:"received"`
	Missing    int            `json:"missing"`    // stored, never received
	Duplicated int            `json:"duplicated"` // received more than once
	OutOfOrder int            `json:"outOfOrder"` // received after a newer id
	Resets     int            `json:"resets"`     // replays that reported a gap or reset
	Reconnects int            `json:"reconnects"`
	Errors     map[string]int `json:"errors,omitempty"` // ERROR frames by kind
}

// report is one scenario's outcome.
type report struct {
	Scenario     string          `json:"scenario"`
	Cycles       int             `json:"cycles"`
	Seconds      float64         `json:"seconds"`
	Senders      []senderReport  `json:"senders"`
	Watchers     []watcherReport `json:"watchers"`
	LongestStall float64         `json:"longestStallSeconds"` // longest time no sender got a RECEIPT
	NodeErrors   map[string]int  `json:"nodeErrorLogLines"`
	Problems     []string        `json:"problems,omitempty"` // anything that fails the run
}

// audit compares what the clients were told with every room's history.
func audit(ctx context.Context, c *cluster, l *load, run string, rep *report) error {
	rooms := map[string]bool{}
	for _, s := range l.senders {
		rooms[s.room] = true
	}
	var addr string
	for _, n := range c.nodes {
		if c.ready(ctx, n) == nil {
			addr = n.http
			break
		}
	}
	if addr == "" {
		return fmt.Errorf("no node is ready to read history from")
	}
	// Stored positions by sender, in store order, and each room's ids.
	positions := map[string][]int{}
	newest := map[string]uint64{}
	ids := map[string][]uint64{}
	for room := range rooms {
		h, err := history(ctx, c.client, addr, room)
		if err != nil {
			return err
		}
		for _, m := range h {
			ids[room] = append(ids[room], m.ID)
			newest[room] = max(newest[room], m.ID)
			if user, i, ok := parseText(run, m.Message); ok {
				positions[user] = append(positions[user], i)
			}
		}
	}
	for _, s := range l.senders {
		r := countSender(s, positions[s.user])
		if r.Lost+r.Duplicated+r.OutOfOrder+r.Unreceipted > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d lost, %d duplicated, %d out of order, %d never receipted",
				s.user, r.Lost, r.Duplicated, r.OutOfOrder, r.Unreceipted))
		}
		if r.Stored > r.Sent {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: history holds %d of its messages, it sent %d", s.user, r.Stored, r.Sent))
		}
		rep.Senders = append(rep.Senders, r)
	}
	l.settle(newest, 30*time.Second)
	for _, w := range l.watchers {
		r := watcherReport{User: w.user}
		w.mu.Lock()
		r.Resets, r.Reconnects, r.Errors = w.resets, w.reconnects, w.errors
		for room, want := range ids {
			c := countWatcher(w.got[room], want)
			r.Received += c.Received
			r.Missing += c.Missing
			r.Duplicated += c.Duplicated
			r.OutOfOrder += c.OutOfOrder
			if c.Foreign > 0 {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s received %d ids in %s that its history lacks", w.user, c.Foreign, room))
			}
		}
		w.mu.Unlock()
		if r.Missing+r.Duplicated+r.OutOfOrder+r.Resets > 0 {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d missing, %d duplicated, %d out of order, %d gaps or resets",
				w.user, r.Missing, r.Duplicated, r.OutOfOrder, r.Resets))
		}
		rep.Watchers = append(rep.Watchers, r)
	}
	// A fault is an outage, never a bug: clients must be told to retry
	// (unavailable), not that the server failed (internal error).
	internal := 0
	for _, s := range rep.Senders {
		internal += s.Errors[internalError]
	}
	for _, w := range rep.Watchers {
		internal += w.Errors[internalError]
	}
	if internal > 0 {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%d ERRORs said %q, where an outage must say unavailable", internal, internalError))
	}
	return nil
}

// internalError is the ERROR message of a failure chatd did not foresee.
const internalError = "internal error"

// countSender compares what s was told with stored, the numbers of its
// messages in the order the store holds them.
func countSender(s *sender, stored []int) senderReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := senderReport{User: s.user, Sent: s.next, Receipted: len(s.receipted), Unreceipted: len(s.unreceipted),
		Reconnects: s.reconnects, Errors: s.errors}
	seen := map[int]int{}
	highest := -1
	for _, i := range stored {
		seen[i]++
		switch {
		case seen[i] == 2:
			r.Duplicated++
		case seen[i] == 1 && i < highest:
			r.OutOfOrder++
		}
		highest = max(highest, i)
	}
	r.Stored = len(seen)
	for i := range s.receipted {
		if seen[i] == 0 {
			r.Lost++
		}
	}
	return r
}

// watcherCount is what a subscriber received of one room.
type watcherCount struct {
	Received, Missing, Duplicated, OutOfOrder int
	Foreign                                   int // ids the room's history lacks
}

// countWatcher compares the ids a subscriber received, in arrival order,
// with the room's history.
func countWatcher(got, history []uint64) watcherCount {
	c := watcherCount{Received: len(got)}
	count := map[uint64]int{}
	var last uint64
	for _, id := range got {
		count[id]++
		switch {
		case count[id] == 2:
			c.Duplicated++
		case count[id] == 1 && id < last:
			c.OutOfOrder++
		}
		last = max(last, id)
	}
	inHistory := make(map[uint64]bool, len(history))
	for _, id := range history {
		inHistory[id] = true
		if count[id] == 0 {
			c.Missing++
		}
	}
	for id := range count {
		if !inHistory[id] {
			c.Foreign++
		}
	}
	return c
}
