// The replay storm (--storm-since): the storm's connections subscribe
// with since-id, as clients reconnecting after an outage do, and each
// counts the replayed messages until it has the room's history
// (--storm-prefill, posted before the first wave); a bystander in a room
// of its own meanwhile sends a receipted SEND every --storm-bystander and
// times its RECEIPT.

package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/stompws/frame"
)

// replayCount follows one storm connection's replay.
type replayCount struct {
	want  int64
	got   atomic.Int64
	start time.Time
	took  atomic.Int64 // ns from start to the last message wanted; 0: not yet
	done  chan struct{}
}

func newReplayCount(want int64) *replayCount {
	return &replayCount{want: want, start: time.Now(), done: make(chan struct{})}
}

func (rc *replayCount) add(n int64, now int64) {
	if n == 0 {
		return
	}
	if got := rc.got.Add(n); got >= rc.want && got-n < rc.want {
		rc.took.Store(now - rc.start.UnixNano())
		close(rc.done)
	}
}

// replayReport is a wave's replays.
type replayReport struct {
	Wanted    int            `json:"wanted"`
	Completed int            `json:"completed"`
	Errors    int            `json:"errors"` // ended with an ERROR from the server
	Latency   latencySummary `json:"latency"`
	WaitS     float64        `json:"wait_s"`
}

// bystanderReport is the bystander's SENDs during a wave (one still
// awaiting its RECEIPT when the wave ended is not counted).
type bystanderReport struct {
	Sent      int            `json:"sent"`
	Receipted int            `json:"receipted"`
	Errors    []string       `json:"errors,omitempty"`
	Latency   latencySummary `json:"latency"`
}

// bodyOf is a SEND body with text as its payload.
func (r *runner) bodyOf(text string) []byte {
	return []byte(r.bodyPre + text + r.bodySuf)
}

// prefill posts n messages to each storm room, in receipted bursts.
func (r *runner) prefill(ctx context.Context) error {
	const burst = 100
	for room := range r.cfg.StormRooms {
		name := r.cfg.roomName(room)
		c, err := r.dialAs(ctx, r.cfg.UserPrefix+"prefill"+strconv.Itoa(room))
		if err != nil {
			return fmt.Errorf("prefill %s: %w", name, err)
		}
		for i := 0; i < r.cfg.StormPrefill; i += burst {
			var b []byte
			n := min(burst, r.cfg.StormPrefill-i)
			for j := range n {
				b = frame.AppendFrame(b, frame.V12, "SEND", []frame.Header{
					{Name: "destination", Value: r.cfg.sendDest(name)}, {Name: "content-type", Value: "application/json"},
					{Name: "receipt", Value: strconv.Itoa(i + j)},
				}, r.bodyOf("prefill "+strconv.Itoa(i+j)))
			}
			if err := c.write(b); err != nil {
				c.close()
				return fmt.Errorf("prefill %s: %w", name, err)
			}
			if err := awaitReceipts(c, n); err != nil {
				c.close()
				return fmt.Errorf("prefill %s: %w", name, err)
			}
		}
		c.close()
	}
	return nil
}

// dialAs connects one STOMP connection of the run's own, outside the
// connection accounting.
func (r *runner) dialAs(ctx context.Context, login string) (*stompConn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
	defer cancel()
	o := connectOptions{url: r.cfg.URL, sockjs: r.cfg.Transport == transportSockJS, login: login, host: r.cfg.Host, readBuffer: 4096}
	if r.auth != nil {
		tok, err := r.auth.token(login)
		if err != nil {
			return nil, err
		}
		o.passcode = tok
	}
	return dialSTOMP(ctx, r.dialer(), o)
}

// awaitReceipts reads frames until n RECEIPTs came, failing on an ERROR.
func awaitReceipts(c *stompConn, n int) error {
	for n > 0 {
		f, err := c.readFrame()
		if err != nil {
			return err
		}
		switch string(f.Command()) {
		case "RECEIPT":
			n--
		case "ERROR":
			msg, _ := f.Header("message")
			return fmt.Errorf("server answered ERROR: %s", msg)
		}
	}
	return nil
}

// bystander sends a receipted SEND every --storm-bystander to a room no
// storm connection uses, one at a time, until ctx ends.
func (r *runner) bystander(ctx context.Context) *bystanderReport {
	rep := &bystanderReport{}
	c, err := r.dialAs(ctx, r.cfg.UserPrefix+"bystander")
	if err != nil {
		rep.Errors = append(rep.Errors, "connect: "+err.Error())
		return rep
	}
	defer c.close()
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	room := r.cfg.roomName(r.cfg.StormRooms) // past the storm's rooms
	var hist latencyHist
	t := time.NewTicker(r.cfg.StormBystander)
	defer t.Stop()
	for i := 0; ctx.Err() == nil; i++ {
		b := frame.AppendFrame(nil, frame.V12, "SEND", []frame.Header{
			{Name: "destination", Value: r.cfg.sendDest(room)}, {Name: "content-type", Value: "application/json"},
			{Name: "receipt", Value: strconv.Itoa(i)},
		}, r.bodyOf("bystander "+strconv.Itoa(i)))
		t0 := time.Now()
		if err := c.write(b); err != nil {
			break
		}
		rep.Sent++
		if err := awaitReceipts(c, 1); err != nil {
			if ctx.Err() != nil {
				rep.Sent-- // cut off by the wave's end, not answered
			} else {
				rep.Errors = append(rep.Errors, err.Error())
			}
			break
		}
		hist.record(time.Since(t0))
		rep.Receipted++
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	rep.Latency = hist.summary()
	return rep
}

// awaitReplays waits until every storm connection has its replay, or
// ends with an ERROR, or ctx ends; it reports how they went (Wanted is
// the caller's: connections that failed to open are not in cls).
func awaitReplays(ctx context.Context, cls []*client) replayReport {
	var rep replayReport
	var hist latencyHist
	t0 := time.Now()
	for _, cl := range cls {
		if cl.replay == nil {
			continue
		}
		select {
		case <-cl.replay.done:
		case <-cl.ended:
		case <-ctx.Done():
		}
		if took := cl.replay.took.Load(); took > 0 {
			rep.Completed++
			hist.record(time.Duration(took))
			continue
		}
		select {
		case <-cl.ended: // cl.err is settled
			if cl.err != "" {
				rep.Errors++
			}
		default:
		}
	}
	rep.WaitS = time.Since(t0).Seconds()
	rep.Latency = hist.summary()
	return rep
}

// stormClients collects a wave's clients.
type stormClients struct {
	mu  sync.Mutex
	cls []*client
}

func (s *stormClients) add(cl *client) {
	s.mu.Lock()
	s.cls = append(s.cls, cl)
	s.mu.Unlock()
}
