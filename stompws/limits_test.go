package stompws_test

// Protocol tests of limits and their consequences: frame and header
// limits, bad requests ending only the offending session, and clients cut
// off for not keeping up (slow consumers, too many unacknowledged
// messages) while everyone else still gets everything.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/coder/websocket"
)

// 6. Limits (the defaults: 64 KiB frames, 16 KiB before CONNECT, 32
// headers, 64 subscriptions).
func TestProtocolLimits(t *testing.T) {
	t.Parallel()
	ts := startServer(t)

	t.Run("frame over 64KiB", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("lim", "1.2")
		r.Send(stomptest.Render("SEND", strings.Repeat("x", 65<<10), "destination:/queue/lim"))
		r.ExpectError("frame too large")
	})

	t.Run("content-length over 64KiB", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("lim", "1.2")
		// Refused from the header alone: no body follows.
		r.Send("SEND\ndestination:/queue/lim\ncontent-length:70000\n\n")
		r.ExpectError("frame too large")
	})

	t.Run("frame under 64KiB", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("lim", "1.2")
		r.Send(stomptest.Render("SEND", strings.Repeat("y", 60<<10), "destination:/queue/lim", "receipt:big"))
		r.ExpectReceipt("big")
	})

	t.Run("pre-CONNECT frame over 16KiB", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.Send(stomptest.Render("CONNECT", strings.Repeat("z", 17<<10), "accept-version:1.2", "login:u"))
		r.ExpectError("frame too large")
	})

	t.Run("pre-CONNECT frame under 16KiB", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		pad := strings.Repeat("p", 6<<10)
		r.ConnectAs("lim", "1.2", "x-pad1:"+pad, "x-pad2:"+pad)
	})

	headers := func(n int) []string {
		h := []string{"destination:/queue/lim", "receipt:many"}
		for i := len(h); i < n; i++ {
			h = append(h, fmt.Sprintf("x-h%d:%d", i, i))
		}
		return h
	}
	t.Run("32 headers", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("lim", "1.2")
		r.Send(stomptest.Render("SEND", "h", headers(32)...))
		r.ExpectReceipt("many")
	})
	t.Run("33 headers", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("lim", "1.2")
		r.Send(stomptest.Render("SEND", "h", headers(33)...))
		r.ExpectError("too many headers")
	})

	t.Run("subscriptions over 64", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("lim", "1.2")
		var b strings.Builder
		for i := range 64 {
			h := []string{"id:s" + strconv.Itoa(i), "destination:/queue/q" + strconv.Itoa(i)}
			if i == 63 {
				h = append(h, "receipt:64")
			}
			b.WriteString(stomptest.Render("SUBSCRIBE", "", h...))
		}
		r.Send(b.String())
		r.ExpectReceipt("64")
		// A freed slot can be reused; past the limit is refused.
		r.Send(stomptest.Render("UNSUBSCRIBE", "", "id:s0", "receipt:un"))
		r.ExpectReceipt("un")
		r.Subscribe("again", "/queue/again")
		r.Send(stomptest.Render("SUBSCRIBE", "", "id:s65", "destination:/queue/one-too-many", "receipt:65"))
		r.ExpectError("too many subscriptions")
	})
}

// 7. Bad requests end the offending session only: STOMP's own (missing
// headers, a subscription id in use) and those the handler refuses.
func TestProtocolBadRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	const dest = "/topic/r"
	watcher := dialStomp(t, ts, "watcher")
	wsub := watcher.subscribe(dest)
	poster := dialStomp(t, ts, "poster")

	cases := []struct {
		name, frame, want string
	}{
		{"subscribe without destination", stomptest.Render("SUBSCRIBE", "", "id:x"), "without destination"},
		{"subscribe without id", stomptest.Render("SUBSCRIBE", "", "destination:/topic/r"), "without id"},
		{"subscribe duplicate id", stomptest.Render("SUBSCRIBE", "", "id:mine", "destination:/topic/r2"), "already in use"},
		{"subscribe refused", stomptest.Render("SUBSCRIBE", "", "id:x", "destination:/refuse/r"), "cannot SUBSCRIBE"},
		{"send without destination", stomptest.Render("SEND", "x"), "without destination"},
		{"send refused destination", stomptest.Render("SEND", "x", "destination:/refuse/r"), "cannot SEND"},
		{"send refused body", stomptest.Render("SEND", "nope", "destination:/topic/r"), "invalid message body"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { // one after another: they share the destination
			// The offender is subscribed to the same destination when it misbehaves.
			r := dialRaw(t, ts)
			r.ConnectAs(fmt.Sprintf("bad%d", i), "1.2")
			r.Subscribe("mine", dest)
			r.Send(tc.frame)
			r.ExpectError(tc.want)
			// The destination still works for everyone else.
			p := *poster
			p.t = t
			text := "after " + tc.name
			p.post(dest, text)
			if got := string(nextMessage(t, wsub).Body); got != text {
				t.Fatalf("the watcher got %q, want %q", got, text)
			}
		})
	}
}

// 10. A client that stops reading is cut off, with its ERROR after whole
// frames and then a close; nobody else notices.
func TestProtocolSlowConsumer(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	const (
		dest       = "/topic/flood"
		publishers = 4
		perPub     = 3000
		total      = publishers * perPub
		batch      = 50
	)
	pad := strings.Repeat("x", 1000)

	fast := dialStomp(t, ts, "fast")
	fsub := fast.subscribe(dest)

	slow := dialRaw(t, ts)
	slow.ConnectAs("slow", "1.2")
	slow.Subscribe("s", dest)
	// From here on the slow client reads nothing until it is cut off.

	pubs := make([]*stomptest.Raw, publishers)
	for p := range pubs {
		pubs[p] = dialRaw(t, ts)
		pubs[p].ConnectAs("pub"+strconv.Itoa(p), "1.2")
	}
	errs := make(chan error, publishers+1)
	var wg sync.WaitGroup
	for p, r := range pubs {
		wg.Go(func() {
			errs <- func() error {
				for i := 0; i < perPub; i += batch {
					var b strings.Builder
					end := min(i+batch, perPub)
					for k := i; k < end; k++ {
						b.WriteString(stomptest.Render("SEND", fmt.Sprintf("p%d-%d-%s", p, k, pad),
							"destination:"+dest, "content-type:text/plain", fmt.Sprintf("receipt:%d", k)))
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := r.WS.Write(ctx, websocket.MessageText, []byte(b.String()))
					cancel()
					if err != nil {
						return fmt.Errorf("publisher %d: write: %w", p, err)
					}
					for k := i; k < end; k++ {
						f, err := r.Read(20 * time.Second)
						if err != nil {
							return fmt.Errorf("publisher %d: waiting for receipt %d: %w", p, k, err)
						}
						if f.Command != "RECEIPT" || f.Header.Get("receipt-id") != strconv.Itoa(k) {
							return fmt.Errorf("publisher %d: want RECEIPT %d, got %s %v", p, k, f.Command, f.Header)
						}
					}
				}
				return nil
			}()
		})
	}

	// Once cut off, the slow client reads again: the MESSAGEs that were on
	// their way, each whole, then its ERROR, then the end of the
	// connection, which must come without the client doing anything.
	slowGot := make(chan int, 1)
	wg.Go(func() {
		errs <- func() error {
			deadline := time.Now().Add(60 * time.Second)
			for ts.obs.slow.Load() == 0 {
				if time.Now().After(deadline) {
					return errors.New("the slow consumer was never cut off")
				}
				time.Sleep(5 * time.Millisecond) // polling the condition itself
			}
			got := 0
			defer func() { slowGot <- got }()
			for {
				f, err := slow.Read(10 * time.Second)
				if err != nil {
					return fmt.Errorf("slow consumer, after %d messages: %w, want its ERROR", got, err)
				}
				if f.Command == "ERROR" {
					if msg := f.Header.Get("message"); !strings.Contains(msg, "slow consumer") {
						return fmt.Errorf("slow consumer: ERROR %q", msg)
					}
					break
				}
				if f.Command != "MESSAGE" || !strings.HasSuffix(string(f.Body), pad) {
					return fmt.Errorf("slow consumer: got %s %v %.40q", f.Command, f.Header, f.Body)
				}
				got++
			}
			deadline = time.Now().Add(10 * time.Second)
			for {
				_, err := slow.Read(10 * time.Second)
				if err == nil {
					continue
				}
				if time.Now().After(deadline) || errors.Is(err, context.DeadlineExceeded) {
					return errors.New("slow consumer: connection still open 10s after its ERROR")
				}
				// A close frame: the connection is never cut while the
				// client reads.
				if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation {
					return fmt.Errorf("slow consumer: connection ended by %v (close code %d), want a close frame (1008)", err, code)
				}
				return nil
			}
		}()
	})

	// The fast consumer gets everything, in order, with no gap.
	nextSeq := make([]int, publishers)
	var lastID uint64
	for i := range total {
		m := nextMessage(t, fsub)
		var p, k int
		if _, err := fmt.Sscanf(string(m.Body), "p%d-%d-", &p, &k); err != nil || p < 0 || p >= publishers {
			t.Fatalf("message %d: unexpected body %.40q", i, m.Body)
		}
		if k != nextSeq[p] {
			t.Fatalf("message %d: publisher %d's #%d, want #%d", i, p, k, nextSeq[p])
		}
		nextSeq[p]++
		id, err := strconv.ParseUint(m.Header.Get("message-id"), 10, 64)
		if err != nil || lastID != 0 && id != lastID+1 {
			t.Fatalf("message %d: message-id %q after %d", i, m.Header.Get("message-id"), lastID)
		}
		lastID = id
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := <-slowGot; got >= total {
		t.Fatalf("slow consumer received all %d messages: it was never cut off", total)
	} else {
		t.Logf("slow consumer received %d of %d messages before the cut", got, total)
	}

	// The cut shows to the Observer: one slow consumer, its ERROR; and to
	// the handler, as deliveries the subscription no longer took.
	if n := ts.obs.slow.Load(); n != 1 {
		t.Errorf("%d slow consumers, want 1", n)
	}
	if kinds := ts.obs.errorKinds(); len(kinds) != 1 || kinds[0] != "slow_consumer" {
		t.Errorf("ERRORs of kinds %q, want one slow_consumer", kinds)
	}
	if dropped := ts.h.droppedDeliveries(); dropped < 1 {
		t.Errorf("%d deliveries refused after a slow consumer was cut mid-burst", dropped)
	}
}

// TestProtocolTooManyUnacked: a client-ack subscriber that reads but never
// ACKs is cut off with an ERROR once MaxUnacked (1,024) messages wait,
// while its queue is empty; the sender is unaffected.
func TestProtocolTooManyUnacked(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	const dest, total = "/topic/unacked", 1100
	lazy := dialRaw(t, ts)
	lazy.ConnectAs("lazy", "1.2")
	lazy.Subscribe("s", dest, "ack:client-individual")

	pub := dialRaw(t, ts)
	pub.ConnectAs("pub", "1.2")
	var b strings.Builder
	for k := range total {
		b.WriteString(stomptest.Render("SEND", "m"+strconv.Itoa(k), "destination:"+dest, fmt.Sprintf("receipt:%d", k)))
	}
	pub.Send(b.String())
	for k := range total {
		if f := pub.Expect("RECEIPT"); f.Header.Get("receipt-id") != strconv.Itoa(k) {
			t.Fatalf("receipt %d: %v", k, f.Header)
		}
	}
	got := 0
	for {
		f, err := lazy.Read(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d messages: %v, want an ERROR", got, err)
		}
		if f.Command == "ERROR" {
			// Messages queued but not yet written when the limit trips are
			// dropped with the session, so fewer than 1,024 may arrive.
			if msg := f.Header.Get("message"); msg != "slow consumer: too many unacknowledged messages" || got > 1024 {
				t.Fatalf("ERROR %q after %d messages, want the unacked limit, after at most 1024", msg, got)
			}
			return
		}
		if f.Command != "MESSAGE" {
			t.Fatalf("got %s", f.Command)
		}
		got++
	}
}
