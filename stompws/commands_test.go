package stompws_test

// Protocol tests of the STOMP commands beyond SEND and SUBSCRIBE:
// acknowledgement modes, transactions, DISCONNECT, the halt after a
// failed frame, and shutdown.

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/coder/websocket"
	gsframe "github.com/go-stomp/stomp/v3/frame"
)

// 8a. Acknowledgement modes.
func TestProtocolAckModes(t *testing.T) {
	t.Parallel()
	ts := startServer(t)

	// subscribeAndReceive subscribes r with the ack mode, posts count
	// messages and returns the MESSAGE frames.
	subscribeAndReceive := func(t *testing.T, r *stomptest.Raw, dest, mode string, count int) []*gsframe.Frame {
		t.Helper()
		r.Subscribe("s1", dest, "ack:"+mode)
		poster := dialStomp(t, ts, "poster")
		for i := range count {
			poster.post(dest, "m"+strconv.Itoa(i))
		}
		var out []*gsframe.Frame
		for i := range count {
			f := r.Expect("MESSAGE")
			if string(f.Body) != "m"+strconv.Itoa(i) {
				t.Fatalf("message %d: %q", i, f.Body)
			}
			out = append(out, f)
		}
		return out
	}

	t.Run("client-individual 1.2", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "/topic/ack-ci", "client-individual", 3)
		for _, m := range ms {
			if m.Header.Get("ack") == "" {
				t.Fatalf("client-individual MESSAGE without ack header: %v", m.Header)
			}
		}
		r.Send(stomptest.Render("ACK", "", "id:"+ms[1].Header.Get("ack"), "receipt:a1"))
		r.ExpectReceipt("a1")
		r.Send(stomptest.Render("NACK", "", "id:"+ms[0].Header.Get("ack"), "receipt:n0"))
		r.ExpectReceipt("n0")
		r.Send(stomptest.Render("ACK", "", "id:"+ms[2].Header.Get("ack"), "receipt:a2"))
		r.ExpectReceipt("a2")
		// Each id settles once.
		r.Send(stomptest.Render("ACK", "", "id:"+ms[1].Header.Get("ack"), "receipt:again"))
		f := r.ExpectError("ACK for an unknown message")
		if got := f.Header.Get("receipt-id"); got != "again" {
			t.Errorf("ERROR receipt-id %q", got)
		}
	})

	t.Run("client 1.2 is cumulative", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "/topic/ack-c", "client", 3)
		for _, m := range ms {
			if m.Header.Get("ack") == "" {
				t.Fatalf("client MESSAGE without ack header: %v", m.Header)
			}
		}
		r.Send(stomptest.Render("ACK", "", "id:"+ms[1].Header.Get("ack"), "receipt:a1"))
		r.ExpectReceipt("a1")
		// Settled along with the second.
		r.Send(stomptest.Render("ACK", "", "id:"+ms[0].Header.Get("ack"), "receipt:a0"))
		r.ExpectError("ACK for an unknown message")
	})

	t.Run("unknown ids", func(t *testing.T) {
		t.Parallel()
		for _, id := range []string{"999999", "abc", ""} {
			r := dialRaw(t, ts)
			r.ConnectAs("ack", "1.2")
			r.Subscribe("s1", "/topic/ack-u", "ack:client-individual")
			r.Send(stomptest.Render("ACK", "", "id:"+id))
			r.ExpectError("ACK for an unknown message")
		}
		r := dialRaw(t, ts)
		r.ConnectAs("ack", "1.2")
		r.Send(stomptest.Render("NACK", "", "id:1"))
		r.ExpectError("NACK for an unknown message")
	})

	t.Run("auto has no ack header and nothing to ack", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "/topic/ack-auto", "auto", 1)
		if v, ok := ms[0].Header.Contains("ack"); ok {
			t.Fatalf("auto MESSAGE has ack:%s", v)
		}
		r.Send(stomptest.Render("ACK", "", "id:"+ms[0].Header.Get("message-id")))
		r.ExpectError("ACK for an unknown message")
	})

	t.Run("1.1 message-id and subscription", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("ack", "1.1")
		ms := subscribeAndReceive(t, r, "/topic/ack-11", "client-individual", 2)
		if _, ok := ms[0].Header.Contains("ack"); ok {
			t.Errorf("1.1 MESSAGE has an ack header: %v", ms[0].Header)
		}
		r.Send(stomptest.Render("ACK", "", "message-id:"+ms[0].Header.Get("message-id"), "subscription:s1", "receipt:a0"))
		r.ExpectReceipt("a0")
		r.Send(stomptest.Render("NACK", "", "message-id:"+ms[1].Header.Get("message-id"), "subscription:other", "receipt:a1"))
		r.ExpectError("NACK for an unknown message")
	})

	t.Run("1.0 refuses client-individual", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("ack", "1.0")
		r.Send(stomptest.Render("SUBSCRIBE", "", "id:s", "destination:/topic/ack10", "ack:client-individual"))
		r.ExpectError("invalid ack mode")
	})

	t.Run("ACK inside transactions", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, ts)
		r.ConnectAs("ack", "1.2")
		ms := subscribeAndReceive(t, r, "/topic/ack-tx", "client-individual", 2)
		a0, a1 := ms[0].Header.Get("ack"), ms[1].Header.Get("ack")
		// An aborted ACK settles nothing.
		r.Send(stomptest.Render("BEGIN", "", "transaction:t1") +
			stomptest.Render("ACK", "", "id:"+a0, "transaction:t1") +
			stomptest.Render("ABORT", "", "transaction:t1") +
			stomptest.Render("ACK", "", "id:"+a0, "receipt:after-abort"))
		r.ExpectReceipt("after-abort")
		// A committed one does.
		r.Send(stomptest.Render("BEGIN", "", "transaction:t2") +
			stomptest.Render("ACK", "", "id:"+a1, "transaction:t2") +
			stomptest.Render("COMMIT", "", "transaction:t2", "receipt:commit"))
		r.ExpectReceipt("commit")
		r.Send(stomptest.Render("ACK", "", "id:"+a1))
		r.ExpectError("ACK for an unknown message")
	})
}

// 8b. Transactions.
func TestProtocolTransactions(t *testing.T) {
	t.Parallel()
	ts := startServer(t)

	t.Run("commit", func(t *testing.T) {
		t.Parallel()
		const dest = "/topic/tx-commit"
		wsub := dialStomp(t, ts, "w1").subscribe(dest)
		r := dialRaw(t, ts)
		r.ConnectAs("txer", "1.2")
		r.Send(stomptest.Render("BEGIN", "", "transaction:t", "receipt:b"))
		r.ExpectReceipt("b")
		r.Send(stomptest.Render("SEND", "in-tx-1", "destination:"+dest, "transaction:t", "receipt:s1"))
		r.ExpectReceipt("s1")
		r.Send(stomptest.Render("SEND", "in-tx-2", "destination:"+dest, "transaction:t", "receipt:s2"))
		r.ExpectReceipt("s2")
		// Barrier: a SEND outside the transaction, after the ones inside.
		// Had those gone out already, they would arrive first.
		r.Send(stomptest.Render("SEND", "outside", "destination:"+dest, "receipt:out"))
		r.ExpectReceipt("out")
		if got := string(nextMessage(t, wsub).Body); got != "outside" {
			t.Fatalf("before COMMIT the subscriber got %q", got)
		}
		r.Send(stomptest.Render("COMMIT", "", "transaction:t", "receipt:c"))
		r.ExpectReceipt("c")
		for _, want := range []string{"in-tx-1", "in-tx-2"} {
			if got := string(nextMessage(t, wsub).Body); got != want {
				t.Fatalf("after COMMIT got %q, want %q", got, want)
			}
		}
	})

	t.Run("abort", func(t *testing.T) {
		t.Parallel()
		const dest = "/topic/tx-abort"
		wsub := dialStomp(t, ts, "w2").subscribe(dest)
		r := dialRaw(t, ts)
		r.ConnectAs("txer", "1.2")
		r.Send(stomptest.Render("BEGIN", "", "transaction:t") +
			stomptest.Render("SEND", "aborted", "destination:"+dest, "transaction:t") +
			stomptest.Render("ABORT", "", "transaction:t", "receipt:a") +
			stomptest.Render("SEND", "after-abort", "destination:"+dest, "receipt:s"))
		r.ExpectReceipt("a")
		r.ExpectReceipt("s")
		if got := string(nextMessage(t, wsub).Body); got != "after-abort" {
			t.Fatalf("got %q, want after-abort", got)
		}
		// The transaction is gone.
		r.Send(stomptest.Render("COMMIT", "", "transaction:t"))
		r.ExpectError("unknown transaction")
	})

	for _, tc := range []struct{ name, frames, want string }{
		{"COMMIT unknown", stomptest.Render("COMMIT", "", "transaction:nope"), "unknown transaction"},
		{"ABORT unknown", stomptest.Render("ABORT", "", "transaction:nope"), "unknown transaction"},
		{"SEND in unknown", stomptest.Render("SEND", "x", "destination:/queue/r", "transaction:nope"), "unknown transaction"},
		{"BEGIN twice", stomptest.Render("BEGIN", "", "transaction:t") + stomptest.Render("BEGIN", "", "transaction:t"), "already begun"},
		{"BEGIN without name", stomptest.Render("BEGIN", ""), "BEGIN without transaction"},
		{"bad SEND in commit", stomptest.Render("BEGIN", "", "transaction:t") +
			stomptest.Render("SEND", "nope", "destination:/queue/r", "transaction:t") +
			stomptest.Render("COMMIT", "", "transaction:t"), "invalid message body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := dialRaw(t, ts)
			r.ConnectAs("txer", "1.2")
			r.Send(tc.frames)
			r.ExpectError(tc.want)
		})
	}
}

// 11. Graceful shutdown.
func TestProtocolShutdown(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	r := dialRaw(t, ts)
	r.ConnectAs("sd", "1.2")
	r.Subscribe("s", "/topic/sd")
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		stopped <- ts.srv.Shutdown(ctx, "server shutting down, reconnect")
	}()
	f := r.Expect("ERROR")
	if msg := f.Header.Get("message"); msg != "server shutting down, reconnect" {
		t.Errorf("ERROR message %q", msg)
	}
	if code := r.CloseStatus(); code != websocket.StatusServiceRestart {
		t.Errorf("close code %d, want 1012", code)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not stop within 15s")
	}
}

// 12. DISCONNECT.
func TestProtocolDisconnect(t *testing.T) {
	t.Parallel()

	t.Run("with receipt", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, startServer(t))
		r.ConnectAs("dc", "1.2")
		r.Send(stomptest.Render("DISCONNECT", "", "receipt:bye"))
		r.ExpectReceipt("bye")
		if code := r.CloseStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close code %d, want 1000", code)
		}
	})

	t.Run("without receipt", func(t *testing.T) {
		t.Parallel()
		r := dialRaw(t, startServer(t))
		r.ConnectAs("dc", "1.0")
		r.Send(stomptest.Render("DISCONNECT", ""))
		if code := r.CloseStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close code %d, want 1000", code)
		}
	})

	t.Run("after pending SENDs", func(t *testing.T) {
		t.Parallel()
		// DISCONNECT right behind SENDs that are still being stored: the
		// receipts of both come back, in order, then a normal close.
		h := newFakeHandler()
		release := h.holdSends(t)
		ts := startServerWith(t, h)
		const dest = "/topic/dc-pending"
		wsub := dialStomp(t, ts, "dcw").subscribe(dest)
		r := dialRaw(t, ts)
		r.ConnectAs("dc", "1.2")
		var b strings.Builder
		for i := range 5 {
			b.WriteString(stomptest.Render("SEND", "m"+strconv.Itoa(i), "destination:"+dest, "receipt:s"+strconv.Itoa(i)))
		}
		b.WriteString(stomptest.Render("DISCONNECT", "", "receipt:bye"))
		r.Send(b.String())
		// The store goes on only once the server has read the DISCONNECT.
		waitFor(t, "the server to read DISCONNECT", func() bool { return ts.obs.framesIn("DISCONNECT") == 1 })
		release()
		for i := range 5 {
			r.ExpectReceipt("s" + strconv.Itoa(i))
		}
		r.ExpectReceipt("bye")
		if code := r.CloseStatus(); code != websocket.StatusNormalClosure {
			t.Fatalf("close code %d, want 1000", code)
		}
		for i := range 5 {
			if got := string(nextMessage(t, wsub).Body); got != "m"+strconv.Itoa(i) {
				t.Fatalf("got %q, want m%d", got, i)
			}
		}
	})
}

// TestProtocolNothingAfterAFailedFrameTakesEffect pipelines a good SEND, a
// bad one and another good one, while the store holds the first: the bad
// one's ERROR waits for the first's RECEIPT, and the third, read before
// the first was stored, is never stored.
func TestProtocolNothingAfterAFailedFrameTakesEffect(t *testing.T) {
	t.Parallel()
	for i := range 5 {
		h := newFakeHandler()
		release := h.holdSends(t)
		ts := startServerWith(t, h)
		r := dialRaw(t, ts)
		r.ConnectAs("alice", "1.2")
		r.Send(stomptest.Render("SEND", "kept", "destination:/queue/halt", "receipt:r1") +
			stomptest.Render("SEND", "nope", "destination:/queue/halt", "receipt:r2") +
			stomptest.Render("SEND", "must not be stored", "destination:/queue/halt", "receipt:r3"))
		waitFor(t, "the server to read the three SENDs", func() bool { return ts.obs.framesIn("SEND") == 3 })
		release()
		r.ExpectReceipt("r1")
		if f := r.ExpectError("invalid message body"); f.Header.Get("receipt-id") != "r2" {
			t.Fatalf("round %d: ERROR receipt-id %q", i, f.Header.Get("receipt-id"))
		}
		waitFor(t, "the session to end", func() bool { return ts.obs.closed.Load() == 1 })
		if got := h.storedBodies(); len(got) != 1 || got[0] != "kept" {
			t.Fatalf("round %d: stored %q, want only the first SEND", i, got)
		}
	}
}
