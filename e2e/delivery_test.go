package e2e_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
)

// TestSlowSubscriberCutOthersGetEverything: through the whole node (a
// room's bursts gathered and flushed once per subscriber), a subscriber
// that stops reading is cut off as a slow consumer: whole MESSAGE frames,
// then its ERROR, then the close, when it reads again (within the 10 s a
// closing session's stalled write is given). The room's other
// subscribers get every message of every sender once, in each sender's
// order, while it happens.
func TestSlowSubscriberCutOthersGetEverything(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	const (
		dest    = "/topic/chat.flood"
		senders = 4
		perSend = 150
		total   = senders * perSend
	)
	// 24 MB in all: more than the slow client's socket buffers and its
	// outbound queue (4 MiB) together.
	pad := strings.Repeat("x", 40<<10)

	slow := dialRaw(t, n)
	slow.ConnectAs("slow", "1.2")
	slow.Subscribe("s", dest)

	var fast []*stomp.Subscription
	for i := range 3 {
		fast = append(fast, dial(t, n, "fast"+strconv.Itoa(i)).subscribe(dest))
	}

	errs := make(chan error, senders+len(fast))
	var wg sync.WaitGroup
	for p := range senders {
		c := dial(t, n, "sender"+strconv.Itoa(p))
		wg.Go(func() {
			for k := range perSend {
				if err := c.tryPost("flood", fmt.Sprintf("%d-%d-%s", p, k, pad)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for i, sub := range fast {
		wg.Go(func() {
			next := make([]int, senders)
			for range total {
				select {
				case m, ok := <-sub.C:
					if !ok || m.Err != nil {
						errs <- fmt.Errorf("fast subscriber %d, after %v: %v", i, next, m)
						return
					}
					var p, k int
					if _, err := fmt.Sscanf(strings.SplitN(nextText(m.Body), "-x", 2)[0], "%d-%d", &p, &k); err != nil || p < 0 || p >= senders {
						errs <- fmt.Errorf("fast subscriber %d: body %.60q: %v", i, m.Body, err)
						return
					}
					if k != next[p] {
						errs <- fmt.Errorf("fast subscriber %d: sender %d's message %d, want %d", i, p, k, next[p])
						return
					}
					next[p]++
				case <-time.After(30 * time.Second):
					errs <- fmt.Errorf("fast subscriber %d: stuck at %v of %d each", i, next, perSend)
					return
				}
			}
		})
	}
	// Once it is found slow, the slow client reads again, within the 10 s
	// a closing session's stalled write is given: what was on its way,
	// each frame whole, then its ERROR, then the close.
	deadline := time.Now().Add(60 * time.Second)
	for scrape(t, n)["chatd_slow_consumer_disconnects_total"] < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slow subscriber was never cut off")
		}
		time.Sleep(20 * time.Millisecond) // polling the condition itself
	}
	got := 0
	for {
		f, err := slow.Read(10 * time.Second)
		if err != nil {
			t.Fatalf("slow subscriber, after %d messages: %v, want its ERROR", got, err)
		}
		if f.Command == "ERROR" {
			if msg := f.Header.Get("message"); !strings.Contains(msg, "slow consumer") {
				t.Fatalf("slow subscriber: ERROR %q", msg)
			}
			break
		}
		if f.Command != "MESSAGE" || !strings.Contains(string(f.Body), pad) {
			t.Fatalf("slow subscriber: got %s %v %.60q", f.Command, f.Header, f.Body)
		}
		got++
	}
	if got >= total {
		t.Fatalf("the slow subscriber got all %d messages before its ERROR", got)
	}
	slow.ExpectClosed()

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// nextText is the message field of a chat message's JSON body.
func nextText(body []byte) string {
	s := string(body)
	const key = `"message":"`
	i := strings.Index(s, key)
	if i < 0 {
		return ""
	}
	return s[i+len(key):]
}
