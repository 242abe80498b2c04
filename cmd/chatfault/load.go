package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sender sends numbered, receipted messages to one room, at most window
// of them unreceipted at a time, and resends as docs/protocol.md says a
// client must: when its session ends it reconnects (to another node if
// that one is gone) and sends again, in the order first sent and with
// the same client-msg-id, every message that got no RECEIPT.
type sender struct {
	user   string
	room   string
	nodes  []string
	home   int
	window int
	every  time.Duration // between new messages
	run    string        // tells this run's messages from others'
	stats  *stats

	mu          sync.Mutex
	next        int          // messages 0..next-1 have been sent at least once
	unreceipted []int        // sent, no RECEIPT yet, in the order first sent
	receipted   map[int]bool // got a RECEIPT
	reconnects  int
	errors      map[string]int // ERROR frames by message
	receiptsOOO int            // RECEIPTs that came before an earlier SEND's
}

// stats is what every client of a run shares.
type stats struct {
	mu          sync.Mutex
	lastReceipt time.Time
	longestGap  time.Duration // longest time with no RECEIPT for any sender
}

func (s *stats) receipt(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.lastReceipt.IsZero() {
		s.longestGap = max(s.longestGap, now.Sub(s.lastReceipt))
	}
	s.lastReceipt = now
}

// text is message i's body text; parseText reads it back.
func (s *sender) text(i int) string { return s.run + "/" + s.user + "/" + strconv.Itoa(i) }

func parseText(run, text string) (user string, i int, ok bool) {
	rest, ok := strings.CutPrefix(text, run+"/")
	if !ok {
		return "", 0, false
	}
	user, num, ok := strings.Cut(rest, "/")
	if !ok {
		return "", 0, false
	}
	i, err := strconv.Atoi(num)
	return user, i, err == nil
}

// loop runs sessions until stop is closed and every message sent has a
// RECEIPT, or ctx ends.
func (s *sender) loop(ctx context.Context, stop <-chan struct{}) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if s.drained(stop) {
			return
		}
		addr := s.nodes[(s.home+attempt)%len(s.nodes)]
		c, err := dial(ctx, addr, s.user)
		if err != nil {
			sleep(ctx, min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
			continue
		}
		if attempt > 0 {
			s.mu.Lock()
			s.reconnects++
			s.mu.Unlock()
		}
		pause := s.session(ctx, c, stop)
		c.close()
		sleep(ctx, pause)
		if pause == 0 {
			attempt-- // the session ended well: stay on this node
		}
	}
}

// drained reports that stop is closed and nothing awaits a RECEIPT.
func (s *sender) drained(stop <-chan struct{}) bool {
	select {
	case <-stop:
	default:
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unreceipted) == 0
}

// session sends on c until it ends; it returns how long to wait before
// reconnecting.
func (s *sender) session(ctx context.Context, c *conn, stop <-chan struct{}) time.Duration {
	s.mu.Lock()
	resend := append([]int(nil), s.unreceipted...)
	s.mu.Unlock()
	for _, i := range resend {
		if s.send(c, i) != nil {
			return 100 * time.Millisecond
		}
	}
	tick := time.NewTicker(s.every)
	defer tick.Stop()
	stopping := stop
	for {
		s.mu.Lock()
		full := len(s.unreceipted) >= s.window
		idle := stopping == nil && len(s.unreceipted) == 0
		s.mu.Unlock()
		if idle {
			return 0
		}
		var send <-chan time.Time
		if !full && stopping != nil {
			send = tick.C
		}
		select {
		case <-ctx.Done():
			return 0
		case <-stopping:
			stopping = nil
		case <-send:
			s.mu.Lock()
			i := s.next
			s.next++
			s.unreceipted = append(s.unreceipted, i)
			s.mu.Unlock()
			if s.send(c, i) != nil {
				return 100 * time.Millisecond
			}
		case f, ok := <-c.frames:
			if !ok {
				return 100 * time.Millisecond
			}
			switch f.Command {
			case "RECEIPT":
				s.receipt(f.Value("receipt-id"))
			case "ERROR":
				s.mu.Lock()
				s.errors[errorKind(f.Value("message"))]++
				s.mu.Unlock()
				return time.Second // as the docs ask: a pause, then resend
			}
		}
	}
}

func (s *sender) send(c *conn, i int) error {
	body, _ := json.Marshal(map[string]string{"message": s.text(i)})
	id := strconv.Itoa(i)
	return c.write("SEND", body, "destination", "/app/chat."+s.room, "content-type", "application/json",
		"receipt", id, "client-msg-id", s.user+"-"+id)
}

func (s *sender) receipt(id string) {
	i, err := strconv.Atoi(id)
	if err != nil {
		return
	}
	s.stats.receipt(time.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, u := range s.unreceipted {
		if u == i {
			if k > 0 {
				s.receiptsOOO++
			}
			s.unreceipted = append(s.unreceipted[:k], s.unreceipted[k+1:]...)
			s.receipted[i] = true
			return
		}
	}
}

// errorKind is an ERROR message up to its first colon: the kind, without
// the detail that differs from one to the next.
func errorKind(msg string) string {
	k, _, _ := strings.Cut(msg, ":")
	return k
}

// watcher subscribes to every room from its first message and, when its
// session ends, resumes on another node with since-id the last id it saw,
// as a reconnecting client does.
type watcher struct {
	user  string
	rooms []string
	nodes []string
	home  int

	mu         sync.Mutex
	got        map[string][]uint64 // ids received, by room, in arrival order
	reconnects int
	resets     int            // replays that said history:gap or history:reset
	errors     map[string]int // ERROR frames by message
}

func (w *watcher) last(room string) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := w.got[room]
	if len(ids) == 0 {
		return 0
	}
	return ids[len(ids)-1]
}

func (w *watcher) loop(ctx context.Context) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		c, err := dial(ctx, w.nodes[(w.home+attempt)%len(w.nodes)], w.user)
		if err != nil {
			sleep(ctx, min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second))
			continue
		}
		if attempt > 0 {
			w.mu.Lock()
			w.reconnects++
			w.mu.Unlock()
		}
		w.session(ctx, c)
		c.close()
		sleep(ctx, 100*time.Millisecond)
	}
}

func (w *watcher) session(ctx context.Context, c *conn) {
	subs := map[string]string{}
	for k, room := range w.rooms {
		id := "s" + strconv.Itoa(k)
		subs[id] = room
		if c.write("SUBSCRIBE", nil, "id", id, "destination", "/topic/chat."+room, "ack", "auto",
			"since-id", strconv.FormatUint(w.last(room), 10)) != nil {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case f, ok := <-c.frames:
			if !ok {
				return
			}
			if f.Command == "ERROR" {
				w.mu.Lock()
				w.errors[errorKind(f.Value("message"))]++
				w.mu.Unlock()
				return
			}
			if f.Command != "MESSAGE" {
				continue
			}
			if h := f.Value("history"); h == "gap" || h == "reset" {
				w.mu.Lock()
				w.resets++
				w.mu.Unlock()
			}
			var m struct {
				ID uint64 `json:"id"`
			}
			room, ok := subs[f.Value("subscription")]
			if !ok || json.Unmarshal(f.Body, &m) != nil || m.ID == 0 {
				continue
			}
			w.mu.Lock()
			w.got[room] = append(w.got[room], m.ID)
			w.mu.Unlock()
		}
	}
}

// load is a run's senders and watchers.
type load struct {
	senders  []*sender
	watchers []*watcher
	stats    *stats
	stop     chan struct{} // closed: no new messages, only resends
	cancel   context.CancelFunc
	sending  sync.WaitGroup
	watching sync.WaitGroup
}

// startLoad starts senders spread over rooms and nodes, and one watcher
// per node.
func startLoad(ctx context.Context, nodes []string, run string, senders, rooms, window int, rate float64) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{stats: &stats{}, stop: make(chan struct{}), cancel: cancel}
	roomNames := make([]string, rooms)
	for i := range roomNames {
		roomNames[i] = fmt.Sprintf("%s-%d", run, i)
	}
	every := time.Duration(float64(time.Second) / rate)
	for i := range senders {
		s := &sender{user: "sender" + strconv.Itoa(i), room: roomNames[i%rooms], nodes: nodes, home: i % len(nodes),
			window: window, every: every, run: run, stats: l.stats, receipted: map[int]bool{}, errors: map[string]int{}}
		l.senders = append(l.senders, s)
		l.sending.Go(func() { s.loop(ctx, l.stop) })
	}
	for i := range nodes {
		w := &watcher{user: "watcher" + strconv.Itoa(i), rooms: roomNames, nodes: nodes, home: i, got: map[string][]uint64{},
			errors: map[string]int{}}
		l.watchers = append(l.watchers, w)
		l.watching.Go(func() { w.loop(ctx) })
	}
	return l
}

// drain stops new messages and waits until every message sent has a
// RECEIPT, or wait has passed.
func (l *load) drain(wait time.Duration) bool {
	close(l.stop)
	done := make(chan struct{})
	go func() { l.sending.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(wait):
		return false
	}
}

// settle waits until every watcher has seen the newest id of each room,
// or wait has passed.
func (l *load) settle(newest map[string]uint64, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		behind := false
		for _, w := range l.watchers {
			for room, id := range newest {
				behind = behind || w.last(room) < id
			}
		}
		if !behind {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *load) close() {
	l.cancel()
	l.sending.Wait()
	l.watching.Wait()
}
