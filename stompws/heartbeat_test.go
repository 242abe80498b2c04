package stompws_test

// Protocol tests of heart-beats and of the CONNECT timeout.

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/stompws"
	"github.com/coder/websocket"
)

// 9a. Heart-beats both ways.
func TestProtocolHeartBeats(t *testing.T) {
	t.Parallel()
	const every = 500 * time.Millisecond
	const grace = 300 * time.Millisecond
	// The CONNECT timeout stays at its default (10s), well past every+grace.
	ts := startServer(t, func(c *stompws.Config) {
		c.HeartBeat, c.HeartBeatMin = every, every
		c.HeartBeatGrace = grace
	})

	t.Run("server sends", func(t *testing.T) {
		t.Parallel()
		ws := dialWS(t, ts.url)
		t.Cleanup(func() { _ = ws.CloseNow() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ws.Write(ctx, websocket.MessageText,
			[]byte(stomptest.Render("CONNECT", "", "accept-version:1.2", "login:hb", "heart-beat:0,500"))); err != nil {
			t.Fatal(err)
		}
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("CONNECTED\n")) || !bytes.Contains(b, []byte("\nheart-beat:500,0\n")) {
			t.Fatalf("want CONNECTED with heart-beat:500,0, got %q", b)
		}
		const window = 3 * time.Second
		rctx, rcancel := context.WithTimeout(context.Background(), window)
		defer rcancel()
		var beats []time.Time
		for {
			_, b, err := ws.Read(rctx)
			if err != nil {
				if rctx.Err() == nil {
					t.Fatalf("read: %v", err)
				}
				break
			}
			if string(b) != "\n" {
				t.Fatalf("unexpected message %q", b)
			}
			beats = append(beats, time.Now())
		}
		if len(beats) < 2 {
			t.Fatalf("%d heart-beats in %s, want at least 2", len(beats), window)
		}
		if most := int(window/every) + 1; len(beats) > most {
			t.Fatalf("%d heart-beats in %s, want at most %d", len(beats), window, most)
		}
	})

	t.Run("none unless asked", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		f := r.ConnectAs("hb", "1.2", "heart-beat:0,0")
		if got := f.Header.Get("heart-beat"); got != "0,0" {
			t.Fatalf("CONNECTED heart-beat %q, want 0,0", got)
		}
		r2 := dialRaw(t, ts)
		f = r2.ConnectAs("hb", "1.2", "heart-beat:100,0")
		if got := f.Header.Get("heart-beat"); got != "0,500" {
			t.Fatalf("CONNECTED heart-beat %q, want 0,500 (never more often than HeartBeatMin)", got)
		}
		// Nothing was asked of the first client: it may stay silent past
		// every+grace. (A wait only to show that something does NOT happen.)
		time.Sleep(every + grace + 500*time.Millisecond)
		r.Subscribe("s", "/queue/still-here")
	})

	t.Run("silent client is closed", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		start := time.Now()
		f := r.ConnectAs("hb", "1.2", "heart-beat:500,0")
		if got := f.Header.Get("heart-beat"); got != "0,500" {
			t.Fatalf("CONNECTED heart-beat %q, want 0,500", got)
		}
		e := r.Expect("ERROR")
		elapsed := time.Since(start)
		if msg := e.Header.Get("message"); !strings.Contains(msg, "heart-beat") {
			t.Fatalf("ERROR %q, want a heart-beat timeout", msg)
		}
		if elapsed < every+grace-50*time.Millisecond {
			t.Errorf("closed after %s, before the %s the client was allowed", elapsed, every+grace)
		}
		if limit := every + grace + 2*time.Second; elapsed > limit {
			t.Errorf("closed after %s, want within %s", elapsed, limit)
		}
		r.ExpectClosed()
	})

	t.Run("client heart-beats keep it open", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("hb", "1.2", "heart-beat:500,0")
		tick := time.NewTicker(every / 3)
		defer tick.Stop()
		for end := time.Now().Add(3 * (every + grace)); time.Now().Before(end); {
			<-tick.C
			r.Send("\n")
		}
		r.Subscribe("s", "/queue/alive")
	})
}

// 9b. No CONNECT in time.
func TestProtocolConnectTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	ts := startServer(t, func(c *stompws.Config) { c.ConnectTimeout = timeout })

	for _, tc := range []struct{ name, send string }{
		{"nothing", ""},
		{"partial CONNECT", "CONNECT\naccept-version:1.2\n"},
		{"heart-beats only", "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := dialRaw(t, ts)
			start := time.Now()
			if tc.send != "" {
				r.Send(tc.send)
			}
			r.ExpectError("no CONNECT frame")
			if elapsed := time.Since(start); elapsed < timeout/2 || elapsed > timeout+5*time.Second {
				t.Errorf("closed after %s, want about %s", elapsed, timeout)
			}
		})
	}
}

// TestProtocolHeartBeatOff: with heart-beats off both ways the server
// neither sends nor asks for heart-beats, whatever the client offers.
func TestProtocolHeartBeatOff(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *stompws.Config) { c.HeartBeat = -1 })
	r := dialRaw(t, ts)
	r.Send("CONNECT\naccept-version:1.2\nhost:/\nlogin:alice\nheart-beat:100,100\n\n\x00")
	f := r.Frame()
	if f.Command != "CONNECTED" || f.Header.Get("heart-beat") != "0,0" {
		t.Fatalf("got %s heart-beat %q, want CONNECTED 0,0", f.Command, f.Header.Get("heart-beat"))
	}
}

// TestHeartBeatsFollowTheClient: the agreed intervals are the client's,
// held to HeartBeatMin (stomp.js apps often ask for 4 s or less); a
// client that asks for none gets none; one that sends no heart-beat
// header leaves the server free to send at HeartBeat.
func TestHeartBeatsFollowTheClient(t *testing.T) {
	t.Parallel()
	ts := startServer(t, func(c *stompws.Config) { c.HeartBeatGrace = time.Second }) // defaults: 10 s, floor 1 s
	for _, tc := range []struct{ accept, header, want string }{
		{"1.2", "heart-beat:10000,10000", "10000,10000"},
		{"1.2", "heart-beat:4000,4000", "4000,4000"},
		{"1.2", "heart-beat:0,1000", "1000,0"},
		{"1.2", "heart-beat:100,50", "1000,1000"},
		{"1.2", "heart-beat:0,0", "0,0"},
		{"1.2", "", "10000,0"},
		{"1.1", "", "10000,0"},
		{"", "", "0,0"}, // STOMP 1.0 has no heart-beats
	} {
		r := dialRaw(t, ts)
		var extra []string
		if tc.header != "" {
			extra = append(extra, tc.header)
		}
		if got := r.ConnectAs("hb", tc.accept, extra...).Header.Get("heart-beat"); got != tc.want && (tc.accept != "" || got != "") {
			t.Errorf("version %q, %q: CONNECTED heart-beat %q, want %s", tc.accept, tc.header, got, tc.want)
		}
	}

	t.Run("0,1000 gets beats at least every second", func(t *testing.T) {
		t.Parallel()
		ws := dialWS(t, ts.url)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ws.Write(ctx, websocket.MessageText,
			[]byte(stomptest.Render("CONNECT", "", "accept-version:1.2", "login:hb", "heart-beat:0,1000"))); err != nil {
			t.Fatal(err)
		}
		if _, b, err := ws.Read(ctx); err != nil || !bytes.HasPrefix(b, []byte("CONNECTED\n")) {
			t.Fatalf("CONNECTED: %q %v", b, err)
		}
		last := time.Now()
		for range 4 {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if gap := time.Since(last); string(b) != "\n" || gap > 1500*time.Millisecond {
				t.Fatalf("got %q after %s, want a heart-beat within 1 s (and scheduling)", b, gap)
			}
			last = time.Now()
		}
	})

	t.Run("1000,0 and silent is closed within seconds", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		start := time.Now()
		if got := r.ConnectAs("hb", "1.2", "heart-beat:1000,0").Header.Get("heart-beat"); got != "0,1000" {
			t.Fatalf("CONNECTED heart-beat %q, want 0,1000", got)
		}
		r.ExpectError("heart-beat timeout")
		if elapsed := time.Since(start); elapsed > 4*time.Second || elapsed < 1900*time.Millisecond {
			t.Fatalf("closed after %s, want 2 s (1 s and the grace)", elapsed)
		}
	})
}

// TestHeartBeatsHeldBackAreNotSilence: a client whose SENDs fill its
// in-flight slots while the store holds them (an outage) makes the server
// stop reading; the heart-beats it keeps sending wait unread. The server
// must not cut it for a silence of its own making: once the store answers,
// every RECEIPT comes and the session goes on.
func TestHeartBeatsHeldBackAreNotSilence(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	release := h.holdSends(t)
	ts := startServerWith(t, h, func(c *stompws.Config) {
		c.HeartBeat, c.HeartBeatMin, c.HeartBeatGrace = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
		c.MaxInflight = 2
	})
	r := dialRaw(t, ts)
	r.ConnectAs("held", "1.2", "heart-beat:100,0")
	var b strings.Builder
	for i := range 3 {
		b.WriteString(stomptest.Render("SEND", "m"+strconv.Itoa(i), "destination:/queue/held", "receipt:r"+strconv.Itoa(i)))
	}
	r.Send(b.String())
	waitFor(t, "the server to read the third SEND", func() bool { return ts.obs.framesIn("SEND") == 3 })
	// Ten times the silence allowed, beating all along.
	for range 20 {
		r.Send("\n")
		time.Sleep(50 * time.Millisecond)
	}
	release()
	for i := range 3 {
		r.ExpectReceipt("r" + strconv.Itoa(i))
	}
	r.Send(stomptest.Render("SEND", "after", "destination:/queue/held", "receipt:after"))
	r.ExpectReceipt("after")
	if got := ts.obs.errorKinds(); len(got) != 0 {
		t.Fatalf("ERRORs sent: %v", got)
	}
}
