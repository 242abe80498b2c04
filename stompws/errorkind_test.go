package stompws_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
)

// TestErrorKinds drives real sessions into every ERROR the STOMP layer
// sends, and into the handler's errors, and checks the kind the Observer
// hears for each (once per ERROR frame) along with the message the client
// reads. Metrics sort ERRORs by these kinds: a message that changes, or a
// new ERROR, must keep its kind here.
func TestErrorKinds(t *testing.T) {
	t.Parallel()
	// connected opens a session as user at 1.2.
	connected := func(t *testing.T, ts *testServer) *stomptest.Raw {
		r := dialRaw(t, ts)
		r.ConnectAs("u", "1.2")
		return r
	}
	// sending opens a session and sends frames on it.
	sending := func(frames ...string) func(*testing.T, *testServer) *stomptest.Raw {
		return func(t *testing.T, ts *testServer) *stomptest.Raw {
			r := connected(t, ts)
			r.Send(strings.Join(frames, ""))
			return r
		}
	}
	// before sends frames on a session that has not sent CONNECT.
	before := func(frames ...string) func(*testing.T, *testServer) *stomptest.Raw {
		return func(t *testing.T, ts *testServer) *stomptest.Raw {
			r := dialRaw(t, ts)
			if len(frames) > 0 {
				r.Send(strings.Join(frames, ""))
			}
			return r
		}
	}
	f := stomptest.Render
	cases := []struct {
		name string
		kind string
		msg  string // what the client's ERROR message holds; "": not read
		cfg  func(*stompws.Config)
		run  func(t *testing.T, ts *testServer) *stomptest.Raw
	}{
		// CONNECT refused, or the session's credentials ended.
		{name: "frame before CONNECT", kind: "connect", msg: "expected CONNECT frame, got SEND",
			run: before(f("SEND", "x", "destination:/queue/q"))},
		{name: "unsupported version", kind: "connect", msg: "unsupported STOMP version",
			run: before(f("CONNECT", "", "accept-version:2.0", "login:u"))},
		{name: "bad heart-beat header", kind: "connect", msg: "invalid heart-beat header",
			run: before(f("CONNECT", "", "accept-version:1.2", "login:u", "heart-beat:x,1"))},
		{name: "no CONNECT in time", kind: "connect", msg: "no CONNECT frame within",
			cfg: func(c *stompws.Config) { c.ConnectTimeout = 200 * time.Millisecond }, run: before()},
		{name: "second CONNECT", kind: "connect", msg: "already connected",
			run: sending(f("CONNECT", "", "accept-version:1.2", "login:u"))},
		{name: "credentials expired", kind: "connect", msg: "credentials expired",
			run: func(t *testing.T, ts *testServer) *stomptest.Raw {
				r := dialRaw(t, ts)
				r.ConnectAs("expiring", "1.2")
				return r
			}},

		// Limits.
		{name: "sessions per user", kind: "limit", msg: "too many connections for this user (limit 1)",
			cfg: func(c *stompws.Config) { c.MaxSessionsPerUser = 1 },
			run: func(t *testing.T, ts *testServer) *stomptest.Raw {
				connected(t, ts)
				return before(f("CONNECT", "", "accept-version:1.2", "login:u"))(t, ts)
			}},
		{name: "frame too large", kind: "limit", msg: "frame too large",
			cfg: func(c *stompws.Config) {
				c.Limits = frame.Limits{MaxFrameSize: 1024, MaxHeaders: 32, MaxHeaderLen: 512}
			},
			run: sending(f("SEND", strings.Repeat("x", 1024), "destination:/queue/q"))},
		{name: "frame too large before CONNECT", kind: "limit", msg: "frame too large",
			run: before(f("CONNECT", strings.Repeat("z", 17<<10), "accept-version:1.2", "login:u"))},
		{name: "too many headers", kind: "limit", msg: "too many headers",
			run: sending(f("SEND", "x", append([]string{"destination:/queue/q"}, slices.Repeat([]string{"x:y"}, 32)...)...))},
		{name: "header too long", kind: "limit", msg: "header too long",
			run: sending(f("SEND", "x", "destination:/queue/q", "x:"+strings.Repeat("y", 9<<10)))},
		{name: "too many subscriptions", kind: "limit", msg: "too many subscriptions (limit 1)",
			cfg: func(c *stompws.Config) { c.MaxSubscriptions = 1 },
			run: sending(f("SUBSCRIBE", "", "id:1", "destination:/topic/a"), f("SUBSCRIBE", "", "id:2", "destination:/topic/b"))},
		{name: "too many transactions", kind: "limit", msg: "too many open transactions (limit 1)",
			cfg: func(c *stompws.Config) { c.MaxTransactions = 1 },
			run: sending(f("BEGIN", "", "transaction:a"), f("BEGIN", "", "transaction:b"))},
		{name: "transaction too large", kind: "limit", msg: "transaction too large (limit 1 frames)",
			cfg: func(c *stompws.Config) { c.MaxTxFrames = 1 },
			run: sending(f("BEGIN", "", "transaction:t"), f("SEND", "1", "destination:/queue/q", "transaction:t"),
				f("SEND", "2", "destination:/queue/q", "transaction:t"))},
		{name: "SEND rate", kind: "limit", msg: "SEND rate limit exceeded",
			cfg: func(c *stompws.Config) { c.SendRate, c.SendBurst = 0.01, 1 },
			run: sending(f("SEND", "1", "destination:/queue/q"), f("SEND", "2", "destination:/queue/q"))},

		{name: "heart-beat timeout", kind: "heartbeat", msg: "heart-beat timeout",
			cfg: func(c *stompws.Config) {
				c.HeartBeatMin, c.HeartBeatGrace = 100*time.Millisecond, 100*time.Millisecond
			},
			run: func(t *testing.T, ts *testServer) *stomptest.Raw {
				r := dialRaw(t, ts)
				r.ConnectAs("u", "1.2", "heart-beat:100,0")
				return r
			}},

		// Malformed frames, and frames without what they need.
		{name: "invalid command", kind: "malformed", msg: "invalid command", run: sending("send\n\n\x00")},
		{name: "malformed header", kind: "malformed", msg: "malformed header", run: sending("SEND\nfoo\n\n\x00")},
		{name: "empty header name", kind: "malformed", msg: "empty header name", run: sending("SEND\n:v\n\n\x00")},
		{name: "undefined escape", kind: "malformed", msg: "undefined escape sequence", run: sending("SEND\nx:a\\tb\n\n\x00")},
		{name: "invalid content-length", kind: "malformed", msg: "invalid content-length", run: sending("SEND\ncontent-length:x\n\n\x00")},
		{name: "missing NUL", kind: "malformed", msg: "missing NUL after body", run: sending("SEND\ncontent-length:1\n\nab\x00")},
		{name: "unknown command", kind: "malformed", msg: "unknown command FROB", run: sending(f("FROB", ""))},
		{name: "SEND without destination", kind: "malformed", msg: "SEND without destination", run: sending(f("SEND", "x"))},
		{name: "SUBSCRIBE without destination", kind: "malformed", msg: "SUBSCRIBE without destination",
			run: sending(f("SUBSCRIBE", "", "id:1"))},
		{name: "SUBSCRIBE without id", kind: "malformed", msg: "SUBSCRIBE without id",
			run: sending(f("SUBSCRIBE", "", "destination:/topic/a"))},
		{name: "UNSUBSCRIBE without id", kind: "malformed", msg: "UNSUBSCRIBE without id", run: sending(f("UNSUBSCRIBE", ""))},
		{name: "BEGIN without transaction", kind: "malformed", msg: "BEGIN without transaction", run: sending(f("BEGIN", ""))},

		{name: "invalid ack mode", kind: "request", msg: "invalid ack mode",
			run: sending(f("SUBSCRIBE", "", "id:1", "destination:/topic/a", "ack:sometimes"))},

		{name: "subscription id in use", kind: "subscription", msg: `subscription id "1" already in use`,
			run: sending(f("SUBSCRIBE", "", "id:1", "destination:/topic/a"), f("SUBSCRIBE", "", "id:1", "destination:/topic/b"))},
		{name: "no subscription", kind: "subscription", msg: `no subscription "1"`, run: sending(f("UNSUBSCRIBE", "", "id:1"))},

		{name: "ACK unknown", kind: "ack", msg: "ACK for an unknown message", run: sending(f("ACK", "", "id:1"))},
		{name: "NACK unknown", kind: "ack", msg: "NACK for an unknown message", run: sending(f("NACK", "", "id:1"))},
		{name: "ACK unknown in a COMMIT", kind: "ack", msg: "ACK for an unknown message",
			run: sending(f("BEGIN", "", "transaction:t"), f("ACK", "", "id:1", "transaction:t"), f("COMMIT", "", "transaction:t"))},
		{name: "unknown transaction", kind: "ack", msg: `unknown transaction "t"`, run: sending(f("COMMIT", "", "transaction:t"))},
		{name: "transaction begun twice", kind: "ack", msg: `transaction "t" already begun`,
			run: sending(f("BEGIN", "", "transaction:t"), f("BEGIN", "", "transaction:t"))},

		{name: "too many unacknowledged", kind: "slow_consumer", msg: "slow consumer: too many unacknowledged messages",
			cfg: func(c *stompws.Config) { c.MaxUnacked = 2 },
			run: sending(f("SUBSCRIBE", "", "id:1", "destination:/topic/a", "ack:client"),
				f("SEND", "1", "destination:/topic/a"), f("SEND", "2", "destination:/topic/a"), f("SEND", "3", "destination:/topic/a"))},
		{name: "outbound queue full", kind: "slow_consumer",
			cfg: func(c *stompws.Config) { c.OutboundFrames = 16 },
			run: func(t *testing.T, ts *testServer) *stomptest.Raw {
				r := connected(t, ts)
				r.Subscribe("1", "/topic/a")
				sub := ts.h.subscriptions("/topic/a")[0]
				pad := strings.Repeat("y", 30<<10)
				// The client reads nothing: its socket fills, then its queue.
				for n := 0; deliver(sub, stompws.NewMessage("/topic/a", nil, []byte(pad))); n++ {
					if n == 100000 {
						t.Fatal("the queue never filled")
					}
				}
				return nil
			}},

		{name: "shutdown", kind: "shutdown", msg: "server shutting down, reconnect",
			run: func(t *testing.T, ts *testServer) *stomptest.Raw {
				r := connected(t, ts)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_ = ts.srv.Shutdown(ctx, "server shutting down, reconnect")
				}()
				return r
			}},

		// The handler's errors: plain errors are internal; an Error keeps
		// its kind, or is "other" without one.
		{name: "handler error", kind: "internal", msg: "internal error", run: sending(f("SEND", "internal", "destination:/queue/q"))},
		{name: "authenticator error", kind: "internal", msg: "internal error",
			run: before(f("CONNECT", "", "accept-version:1.2", "login:internal"))},
		{name: "authenticator without user", kind: "internal", msg: "internal error",
			run: before(f("CONNECT", "", "accept-version:1.2", "login:nobody"))},
		{name: "authenticator refusal", kind: "connect", msg: "login header required",
			run: before(f("CONNECT", "", "accept-version:1.2"))},
		{name: "handler refusal", kind: "destination", msg: "cannot SEND to /refuse/q",
			run: sending(f("SEND", "x", "destination:/refuse/q"))},
		{name: "handler closes the session", kind: "forbidden", msg: "forbidden: closed by the handler",
			run: sending(f("SEND", "x", "destination:/close-me"))},
		{name: "handler error without a kind", kind: "other", msg: "an error of no kind",
			run: sending(f("SEND", "kindless", "destination:/queue/q"))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var mutate []func(*stompws.Config)
			if c.cfg != nil {
				mutate = append(mutate, c.cfg)
			}
			ts := startServer(t, mutate...)
			if r := c.run(t, ts); r != nil {
				r.ExpectError(c.msg)
			}
			waitFor(t, "an ERROR", func() bool { return len(ts.obs.errorKinds()) > 0 })
			// The kinds heard once the session that failed has ended.
			waitFor(t, "the session to end", func() bool { return ts.obs.closed.Load() >= 1 })
			if got := ts.obs.errorKinds(); fmt.Sprint(got) != fmt.Sprint([]string{c.kind}) {
				t.Fatalf("ERRORs of kinds %q, want one of %q", got, c.kind)
			}
		})
	}
}
