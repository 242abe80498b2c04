package app

import (
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
)

// TestErrorKinds checks that every ERROR message of docs/protocol.md falls
// into a kind of its own, so chatd_errors_total{kind="other"} stays for the
// unforeseen.
func TestErrorKinds(t *testing.T) {
	for msg, want := range map[string]string{
		"expected CONNECT frame, got SEND":                               "connect",
		"login header required (dev mode: login is the user id)":         "connect",
		"invalid login: 1 to 128 printable characters, no spaces":        "connect",
		"unsupported STOMP version":                                      "connect",
		"no CONNECT frame within 10s":                                    "connect",
		"heart-beat timeout: nothing received for 15.2s":                 "heartbeat",
		"frame too large":                                                "limit",
		"too many headers":                                               "limit",
		"header too long":                                                "limit",
		"too many subscriptions (limit 64)":                              "limit",
		"too many open transactions (limit 8)":                           "limit",
		"transaction too large (limit 128 frames)":                       "limit",
		"message too large to store: more than 69632 bytes once encoded": "limit",
		"invalid command":                                                "malformed",
		"malformed header":                                               "malformed",
		"undefined escape sequence":                                      "malformed",
		"invalid content-length":                                         "malformed",
		"missing NUL after body":                                         "malformed",
		"SUBSCRIBE without id":                                           "malformed",
		"invalid destination":                                            "destination",
		"cannot SEND to /topic/chat.x: clients send to /app/chat.{room}": "destination",
		"cannot SUBSCRIBE to /app/chat.x: subscribe to /topic/...":       "destination",
		"forbidden: not a member of room x":                              "forbidden",
		`invalid message body: "message" must be a non-empty string`:     "request",
		"invalid log request: limit must be 1 to 100":                    "request",
		`invalid read receipt: want JSON {"lastReadId":<message id>}`:    "request",
		`invalid since-id "x": want a message id`:                        "request",
		"invalid client-msg-id: 1 to 128 characters":                     "request",
		`subscription id "x" already in use`:                             "subscription",
		`no subscription "x"`:                                            "subscription",
		"ACK for an unknown message":                                     "ack",
		`unknown transaction "t"`:                                        "ack",
		`transaction "t" already begun`:                                  "ack",
		"slow consumer: outbound queue full":                             "slow_consumer",
		"slow consumer: too many unacknowledged messages":                "slow_consumer",
		"server shutting down, reconnect":                                "shutdown",
		"internal error":                                                 "internal",
		"history unavailable, resubscribe":                               "internal",
		"something new":                                                  "other",
	} {
		if got := errorKind(msg); got != want {
			t.Errorf("errorKind(%q) = %q, want %q", msg, got, want)
		}
	}
}

// TestMetricsHotPathsDoNotAllocate: the observer methods run per frame and
// per delivery, so they must cost no allocation.
func TestMetricsHotPathsDoNotAllocate(t *testing.T) {
	m := newMetrics("n", "test")
	cmd := string([]byte("SEND")) // as the decoder makes it, not a constant
	allocs := testing.AllocsPerRun(1000, func() {
		m.FrameIn(cmd)
		m.FrameIn("WHATEVER")
		m.FramesOut("MESSAGE", 3)
		m.Delivered(chat.DeliveryLive, 5)
		m.Delivered(chat.DeliveryReplay, 1)
		m.Dropped(1)
		m.Subscribed()
		m.Unsubscribed()
		m.MessageStored(3 * time.Millisecond)
		m.BatchCommitted(40, true)
		m.BatchCommitted(3, false)
		m.ErrorSent(`subscription id "x" already in use`)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
}
