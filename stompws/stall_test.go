package stompws_test

// Writes to a client that stops reading (issue #16): a client that keeps
// sending while it pauses paces what it is sent, and is never cut for it
// short of WriteStallMax; one that neither reads nor sends is cut, and
// the log says why.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/stompws"
)

// The stream a stalled client is sent: far more than its socket, the
// server's and the session's queue (stallConfig) hold together, so that
// writes block long before it ends.
const (
	stallMessages = 320
	stallBodySize = 32 << 10
)

func stallBody(i int) string {
	return fmt.Sprintf("%05d", i) + strings.Repeat("y", stallBodySize-5)
}

// stallConfig: writes time out after 300 ms; a client offering 100 ms
// heart-beats is silent after 500 ms (100 ms and the grace); the queue
// holds 1 MiB, so a replay waits once 512 KiB are queued.
func stallConfig(log io.Writer, obs stompws.Observer) stompws.Config {
	cfg := stompws.DefaultConfig()
	cfg.WriteTimeout = 300 * time.Millisecond
	cfg.HeartBeatMin = 100 * time.Millisecond
	cfg.HeartBeatGrace = 400 * time.Millisecond
	cfg.OutboundBytes = 1 << 20
	cfg.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg.Observer = obs
	return cfg
}

// openStalling opens a raw session (openRawBeating) whose client's socket
// takes little before the client reads, and returns its subscription.
func openStalling(t *testing.T, cfg stompws.Config, heartBeat string) (*rawWS, *stompws.Subscription) {
	t.Helper()
	w, h := openRawBeating(t, cfg, heartBeat)
	if err := w.c.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	return w, subs[0]
}

// replay delivers the stream to sub as a replay does (DeliverWait), on a
// goroutine of its own; the channel gets nil once every message is
// queued, or the error that stopped it.
func replay(sub *stompws.Subscription) <-chan error {
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for i := range stallMessages {
			if err := sub.DeliverWait(ctx, stompws.NewMessage("/topic/room", nil, []byte(stallBody(i)))); err != nil {
				res <- fmt.Errorf("message %d: %w", i, err)
				return
			}
		}
		res <- nil
	}()
	return res
}

// beat sends a STOMP heart-beat (an EOL) every d until stop is called.
func (w *rawWS) beat(d time.Duration) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if _, err := w.c.Write(wsFrame(0x1, []byte("\n"))); err != nil {
					w.t.Errorf("heart-beat: %v", err)
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit); <-done }) }
}

// readToEnd reads whatever the server still sends until the connection
// ends, and returns it.
func (w *rawWS) readToEnd() []byte {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(w.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		w.t.Fatal("the connection was not closed")
	}
	return b
}

// waitResult waits for replay's result.
func waitResult(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the replay neither ended nor failed within 10 s")
		return nil
	}
}

// TestStallPausedReplayIsPaced: a client that stops reading in the middle
// of a long replay, for five times WriteTimeout, but keeps sending its
// heart-beats, is not cut: the replay waits for it, and when it reads
// again it gets every message in order, and no ERROR.
func TestStallPausedReplayIsPaced(t *testing.T) {
	var logs testlog.Buffer
	obs := &closeCounter{}
	w, sub := openStalling(t, stallConfig(&logs, obs), "100,0")
	stop := w.beat(100 * time.Millisecond)
	defer stop()
	res := replay(sub)

	time.Sleep(1500 * time.Millisecond) // reading nothing
	select {
	case err := <-res:
		t.Fatalf("the replay ended (%v) while the client read nothing: it was not paced", err)
	default:
	}

	next := 0
	for next < stallMessages {
		op, p := w.read()
		if op != 0x1 && op != 0x2 {
			t.Fatalf("want a data frame, got opcode %#x %q", op, p)
		}
		for f := range strings.SplitSeq(string(p), "\x00") {
			if f = strings.TrimLeft(f, "\n"); f == "" {
				continue
			}
			if !strings.HasPrefix(f, "MESSAGE\n") || !strings.HasSuffix(f, "\n\n"+stallBody(next)) {
				t.Fatalf("message %d of %d: got %d bytes, starting %q", next, stallMessages, len(f), f[:min(len(f), 80)])
			}
			next++
		}
	}
	if err := waitResult(t, res); err != nil {
		t.Fatalf("replay: %v", err)
	}
	stop()
	if cuts := obs.cutReasons(); len(cuts) > 0 || strings.Contains(logs.String(), "session cut") {
		t.Fatalf("the paced session was cut (%v):\n%s", cuts, logs.String())
	}
}

// TestStallSilentClientIsCut: a client that neither reads nor sends
// anything while a write to it is blocked is cut after WriteTimeout, and
// the replay ends. The log says so at info level, with the session, the
// user and the reason. No ERROR comes: the stalled write holds the full
// socket in the middle of its frame.
func TestStallSilentClientIsCut(t *testing.T) {
	var logs testlog.Buffer
	obs := &closeCounter{}
	w, sub := openStalling(t, stallConfig(&logs, obs), "0,0")
	start := time.Now()
	err := waitResult(t, replay(sub))
	if !errors.Is(err, stompws.ErrSubscriptionClosed) {
		t.Fatalf("replay to a silent client: want it closed, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the silent client was cut after %v", d)
	}
	got := w.readToEnd()
	if i := bytes.Index(got, []byte("ERROR\n")); i >= 0 {
		t.Fatalf("ERROR after the cut: %q", got[i:min(len(got), i+200)])
	}
	waitFor(t, "the cut's log line", func() bool { return strings.Contains(logs.String(), "session cut") })
	line := logLine(logs.String(), "session cut")
	for _, want := range []string{"level=INFO", "session=", "user=u", "cause=write_timeout", `reason="write timeout: the client did not take a write for`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	if cuts := obs.cutReasons(); !slices.Equal(cuts, []string{stompws.CutWriteTimeout}) {
		t.Errorf("cuts observed: %v", cuts)
	}
}

// TestStallBounded: a client that keeps sending heart-beats but never
// reads again is cut once one write has waited WriteStallMax.
func TestStallBounded(t *testing.T) {
	var logs testlog.Buffer
	obs := &closeCounter{}
	cfg := stallConfig(&logs, obs)
	cfg.WriteStallMax = 800 * time.Millisecond
	w, sub := openStalling(t, cfg, "100,0")
	stop := w.beat(100 * time.Millisecond)
	defer stop()
	err := waitResult(t, replay(sub))
	if !errors.Is(err, stompws.ErrSubscriptionClosed) {
		t.Fatalf("replay to a client that never reads: want it closed, got %v", err)
	}
	stop()
	_ = w.readToEnd()
	waitFor(t, "the cut's log line", func() bool { return strings.Contains(logs.String(), "session cut") })
	line := logLine(logs.String(), "session cut")
	for _, want := range []string{"level=INFO", "user=u", "cause=write_stall", `reason="write stalled: the client did not take a write for`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	if cuts := obs.cutReasons(); !slices.Equal(cuts, []string{stompws.CutWriteStall}) {
		t.Errorf("cuts observed: %v", cuts)
	}
}

// logLine returns the first line of logs that holds msg.
func logLine(logs, msg string) string {
	for l := range strings.SplitSeq(logs, "\n") {
		if strings.Contains(l, msg) {
			return l
		}
	}
	return ""
}

// TestReplayQueueStaysSmall: a backlog sent to a client that does not
// keep up waits once its session holds a full write's frames, not half
// of what the session may queue; and once it is written, the session does
// not keep a queue the size of that burst: thousands of clients replaying
// at once, then idle, hold little each.
func TestReplayQueueStaysSmall(t *testing.T) {
	var logs testlog.Buffer
	cfg := stallConfig(&logs, &closeCounter{})
	cfg.OutboundBytes = 64 << 20 // bounded by frames here, not bytes
	// The client's socket keeps its own size: one shrunk after connecting
	// (openStalling) drops what the kernel had let the sender send, whose
	// retransmits back off for seconds under load.
	w, h := openRawBeating(t, cfg, "100,0")
	subs := h.members()
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions", len(subs))
	}
	sub := subs[0]
	stop := w.beat(100 * time.Millisecond)
	defer stop()
	// Small messages (a write's worth of frames is under the bytes
	// bound), more than the sockets of both ends take together.
	const n = 60000
	body := func(i int) string { return fmt.Sprintf("%06d", i) + strings.Repeat("z", 250) }
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for i := range n {
			if err := sub.DeliverWait(ctx, stompws.NewMessage("/topic/room", nil, []byte(body(i)))); err != nil {
				res <- err
				return
			}
		}
		res <- nil
	}()
	most := 0
	for range 50 { // 500 ms of reading nothing
		time.Sleep(10 * time.Millisecond)
		queued, _ := sub.QueueState()
		most = max(most, queued)
	}
	select {
	case err := <-res:
		t.Fatalf("the replay ended (%v) while the client read nothing", err)
	default:
	}
	if most == 0 || most > 512 {
		t.Fatalf("the session held up to %d frames of the replay: want it to wait at a write's worth, 512", most)
	}
	next := 0
	for next < n {
		_, p := w.read()
		for f := range strings.SplitSeq(string(p), "\x00") {
			if f = strings.TrimLeft(f, "\n"); f == "" {
				continue
			}
			if want := "\n\n" + body(next); !strings.HasSuffix(f, want) {
				t.Fatalf("message %d: got %q", next, f[max(0, len(f)-20):])
			}
			next++
		}
	}
	if err := waitResult(t, res); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if queued, retained := sub.QueueState(); queued != 0 || retained > 256 {
		t.Fatalf("after the replay: %d frames queued, room for %d kept", queued, retained)
	}
}
