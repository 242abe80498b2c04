package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/internal/testkit/tcpproxy"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startTestCluster starts size embedded NATS servers routed to each other,
// with clustered JetStream; each returned bus is one node. stop closes a
// node as chatd's shutdown does (lame duck first); the test's end stops
// the rest.
func startTestCluster(t *testing.T, size int, d Durability) (buses []*Bus, stop func(i int)) {
	t.Helper()
	var routes []string
	listens := make([]string, size)
	for i := range listens {
		listens[i] = "127.0.0.1:" + strconv.Itoa(port.Free(t))
		routes = append(routes, "nats-route://"+listens[i])
	}
	buses = make([]*Bus, size)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range buses {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			buses[i], errs[i] = Start(ctx, Options{
				DataDir: t.TempDir(), ServerName: "n" + strconv.Itoa(i), Durability: d,
				ClusterName: "failover", ClusterListen: listens[i], Routes: routes,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
		})
	}
	wg.Wait()
	var mu sync.Mutex
	stopped := make([]bool, size)
	stop = func(i int) {
		mu.Lock()
		defer mu.Unlock()
		if stopped[i] || buses[i] == nil {
			return
		}
		stopped[i] = true
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := buses[i].Close(ctx); err != nil {
			t.Errorf("close node %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		for i := range buses {
			stop(i)
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start node %d: %v", i, err)
		}
	}
	return buses, stop
}

// streamLeader names the server leading the messages stream.
func streamLeader(t *testing.T, l *MessageLog) string {
	t.Helper()
	leader, err := currentLeader(l)
	if err != nil || leader == "" {
		t.Fatalf("the messages stream has no leader: %v", err)
	}
	return leader
}

// TestLeaderChangesLoseNoMessage: messages submitted on one node while the
// stream's leader steps down, and then while the node leading it shuts
// down, are every one stored, once, and no submitter waits out the
// publish timeout: a publish the old leader left unanswered is sent again
// when the new leader is elected, and JetStream drops the repeat of one
// that was stored after all.
func TestLeaderChangesLoseNoMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster: skipped with -short")
	}
	for _, d := range []Durability{DurabilityReplicated, DurabilityFsync} {
		t.Run(string(d), func(t *testing.T) {
			buses, stop := startTestCluster(t, 3, d)
			ctx := context.Background()
			logs := make([]*MessageLog, len(buses))
			for i, b := range buses {
				l, err := b.OpenMessageLog(ctx, LogConfig{Replicas: 3, DuplicateWindow: time.Minute, MaxMsgSize: 1024, Durability: d})
				if err != nil {
					t.Fatalf("open message log on node %d: %v", i, err)
				}
				logs[i] = l
			}
			leader := streamLeader(t, logs[0])
			// Submit from a node that does not lead the stream now.
			from := 0
			if leader == "n0" {
				from = 1
			}
			l := logs[from]
			if !l.failover || !l.ordered {
				t.Fatalf("a clustered node's log: failover %v, ordered %v; want both", l.failover, l.ordered)
			}
			c := l.NewCommitter(nil)

			ld := startLoad(c)
			// Two step-downs, each waited out, then the leader shuts down.
			for range 2 {
				time.Sleep(300 * time.Millisecond)
				stepDown(t, buses[from], l)
			}
			time.Sleep(300 * time.Millisecond)
			lead := streamLeader(t, l)
			if lead == "n"+strconv.Itoa(from) {
				// Shutting down the submitter's own node would end the
				// test's publishing: move the leader away first.
				lead = stepDown(t, buses[from], l)
			}
			n, err := strconv.Atoi(strings.TrimPrefix(lead, "n"))
			if err != nil {
				t.Fatalf("leader %q", lead)
			}
			stop(n)
			time.Sleep(500 * time.Millisecond)
			ld.stop()
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			ld.check(t, l, "3 leader changes")
		})
	}
}

// TestReconnectLosesNoMessage: chatd on an external NATS whose server
// restarts, or whose connection is cut and re-made, while messages are
// submitted. Publishes in flight when the connection broke (nats.go fails
// their acknowledgements with ErrDisconnected) are sent again once it is
// re-made, and stored once: JetStream drops the repeat of one that was
// stored, and a restarted server rebuilds its msgID memory from the
// stream.
func TestReconnectLosesNoMessage(t *testing.T) {
	for _, through := range []string{"a server restart", "a connection cut with acknowledgements in flight"} {
		t.Run(through, func(t *testing.T) {
			dir, port := t.TempDir(), port.Free(t)
			srv := startExternal(t, dir, port)
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			bus, l, proxy := externalLog(ctx, t, srv)
			c := l.NewCommitter(nil)
			ld := startLoad(c)
			time.Sleep(300 * time.Millisecond)
			if through == "a server restart" {
				srv.Shutdown()
				srv.WaitForShutdown()
				srv = startExternal(t, dir, port)
			} else {
				// The server stores what it is sent, but its
				// acknowledgements are held back and lost at the cut.
				proxy.Hold()
				time.Sleep(200 * time.Millisecond)
				proxy.Cut()
				time.Sleep(300 * time.Millisecond)
				proxy.Restore()
			}
			wait.Until(t, "reconnected", func() error {
				if !bus.nc.IsConnected() {
					return errors.New(bus.nc.Status().String())
				}
				return nil
			})
			time.Sleep(500 * time.Millisecond)
			ld.stop()
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			ld.check(t, l, through)
		})
	}
}

// startExternal starts a NATS server with JetStream, storing in dir and
// listening on port, as an external NATS chatd connects to.
func startExternal(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetLoggerV2(&serverLog{log: slog.New(slog.NewTextHandler(io.Discard, nil))}, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready within 10s")
	}
	return srv
}

// externalLog connects a bus to srv through a proxy and opens its message
// log, synced on every write (one replica); the test's end closes the bus.
func externalLog(ctx context.Context, t *testing.T, srv *server.Server) (*Bus, *MessageLog, *tcpproxy.Proxy) {
	t.Helper()
	proxy := tcpproxy.New(t, srv.Addr().String())
	bus, err := Start(ctx, Options{URL: "nats://" + proxy.Addr(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	l, err := bus.OpenMessageLog(ctx, LogConfig{Replicas: 1, DuplicateWindow: time.Minute, MaxMsgSize: 1024, Durability: DurabilityFsync})
	if err != nil {
		t.Fatal(err)
	}
	if !l.failover {
		t.Fatal("a log on an external NATS does not count on failover")
	}
	return bus, l, proxy
}

// TestAcknowledgementsLostWithTheConnection: messages published one by one
// (a batch too small to be atomic), stored by the server, whose
// acknowledgements are lost with the connection. nats.go fails each with
// ErrDisconnected; its fate is unknown, so the committer sends it again
// once the connection is back, and JetStream acknowledges the repeat with
// the id it stored it under: every submitter hears success, and each
// message is stored once.
func TestAcknowledgementsLostWithTheConnection(t *testing.T) {
	srv := startExternal(t, t.TempDir(), port.Free(t))
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, l, proxy := externalLog(ctx, t, srv)
	c := l.NewCommitter(nil)
	defer func() { _ = c.Close(ctx) }()
	const n = atomicMin / 2
	// Every copy of the room's messages that reaches the server.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	copies := map[string]int{}
	counted, err := nc.Subscribe(l.names.Room("r"), func(m *nats.Msg) {
		mu.Lock()
		copies[string(m.Data)]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	proxy.Hold()
	type result struct {
		seq uint64
		err error
	}
	results := make(chan result, n)
	for i := range n {
		c.Submit("r", fmt.Appendf(nil, "m%d", i), "", "", nil, func(seq uint64, err error) { results <- result{seq, err} })
	}
	// The server stores the first batch; its acknowledgements are held
	// back, and the committer sends the next batch only after them.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, "the server stored messages", func() error {
		info, err := js.Stream(ctx, l.part("r").name)
		if err != nil {
			return err
		}
		if info.CachedInfo().State.Msgs == 0 {
			return errors.New("none stored")
		}
		return nil
	})
	select {
	case r := <-results:
		t.Fatalf("a submitter heard (%d, %v) with every acknowledgement held back", r.seq, r.err)
	default:
	}
	// Cut long enough that a publish sent again on a timer, rather than
	// at the reconnect, would pile copies up in the reconnect buffer.
	proxy.Cut()
	time.Sleep(2 * time.Second)
	proxy.Restore()
	seqs := map[uint64]bool{}
	for range n {
		select {
		case r := <-results:
			if r.err != nil {
				t.Fatalf("a message whose acknowledgement was lost with the connection failed: %v", r.err)
			}
			seqs[r.seq] = true
		case <-ctx.Done():
			t.Fatal("not every submitter heard")
		}
	}
	if len(seqs) != n {
		t.Errorf("%d distinct ids for %d messages: %v", len(seqs), n, seqs)
	}
	if got := roomData(t, l, "r"); len(got) != n {
		t.Errorf("the room holds %d messages, want %d: %q", len(got), n, got)
	}
	// Each message went out at most twice: first, and once again after the
	// reconnect, not also on a timer while the connection was down.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = counted.Unsubscribe()
	mu.Lock()
	defer mu.Unlock()
	for i := range n {
		if got := copies[fmt.Sprintf("m%d", i)]; got < 1 || got > 2 {
			t.Errorf("the server got %d copies of m%d, want one or two", got, i)
		}
	}
}

// loadSubmitters is how many goroutines a load submits from.
const loadSubmitters = 4

// load submits messages from loadSubmitters goroutines, each to a room
// of its own, steadily, until stop; check then verifies the outcome.
type load struct {
	c     *Committer
	halt  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	errs  []error
	worst time.Duration
	sent  [loadSubmitters]int
}

func startLoad(c *Committer) *load {
	ld := &load{c: c, halt: make(chan struct{})}
	for s := range loadSubmitters {
		ld.wg.Go(func() { ld.submit(s) })
	}
	return ld
}

func (ld *load) submit(s int) {
	var inFlight sync.WaitGroup
	defer inFlight.Wait()
	for i := 0; ; i++ {
		select {
		case <-ld.halt:
			return
		default:
		}
		inFlight.Add(1)
		began := time.Now()
		ld.c.Submit("r"+strconv.Itoa(s), fmt.Appendf(nil, `{"s":%d,"i":%d}`, s, i), "u"+strconv.Itoa(s), "", nil, func(_ uint64, err error) {
			defer inFlight.Done()
			ld.mu.Lock()
			defer ld.mu.Unlock()
			ld.worst = max(ld.worst, time.Since(began))
			if err != nil {
				ld.errs = append(ld.errs, fmt.Errorf("submitter %d message %d: %w", s, i, err))
			}
		})
		ld.sent[s] = i + 1
		if i%4 == 3 {
			time.Sleep(time.Millisecond) // a steady stream, not one burst
		}
	}
}

// stop ends the submitting and waits until every submitter has heard.
func (ld *load) stop() {
	close(ld.halt)
	ld.wg.Wait()
}

// check fails t unless every message was stored exactly once, none
// failed, and none waited out the publish timeout (it would have, had it
// not been sent again at the event).
func (ld *load) check(t *testing.T, l *MessageLog, through string) {
	t.Helper()
	for _, err := range ld.errs {
		t.Error(err)
	}
	// With msgIDs, a message sent again is not stored twice. A replica
	// answering the reads may lag a moment behind.
	total := 0
	for s := range loadSubmitters {
		total += ld.sent[s]
	}
	wait.Until(t, "every message stored once", func() error {
		missing, twice, reordered, example := 0, 0, 0, ""
		for s := range loadSubmitters {
			seen := make(map[string]int)
			last := -1
			for _, d := range roomData(t, l, "r"+strconv.Itoa(s)) {
				seen[d]++
				var m struct{ I int }
				if err := json.Unmarshal([]byte(d), &m); err != nil {
					return fmt.Errorf("stored %q: %w", d, err)
				}
				if m.I < last {
					reordered++
					example = fmt.Sprintf("submitter %d message %d stored after %d", s, m.I, last)
				}
				last = max(last, m.I)
			}
			for i := range ld.sent[s] {
				switch n := seen[fmt.Sprintf(`{"s":%d,"i":%d}`, s, i)]; {
				case n == 0:
					missing++
					example = fmt.Sprintf("submitter %d message %d", s, i)
				case n > 1:
					twice++
					example = fmt.Sprintf("submitter %d message %d", s, i)
				}
			}
		}
		if missing > 0 || twice > 0 || reordered > 0 {
			return fmt.Errorf("of %d messages %d not stored, %d stored more than once and %d stored after a later one of their submitter, e.g. %s", total, missing, twice, reordered, example)
		}
		return nil
	})
	t.Logf("%d messages through %s; the slowest took %v", total, through, ld.worst)
	if ld.worst >= publishTimeout {
		t.Errorf("a message took %v: it waited out the publish timeout (%v) instead of being sent again at once", ld.worst, publishTimeout)
	}
}

// stepDown asks the stream's leader to step down and returns the next.
func stepDown(t *testing.T, b *Bus, l *MessageLog) string {
	t.Helper()
	before := streamLeader(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+b.names.MessagesStream(0), nil); err != nil {
		t.Fatalf("step down: %v", err)
	}
	var after string
	wait.Until(t, "a new leader", func() error {
		now, err := currentLeader(l)
		if err != nil || now == "" || now == before {
			return fmt.Errorf("leader %q: %v", now, err)
		}
		after = now
		return nil
	})
	return after
}

// currentLeader asks the stream for its leader; while one is elected the
// answer is an error or no name.
func currentLeader(l *MessageLog) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := l.parts[0].stream.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", errors.New("the stream is not clustered")
	}
	return info.Cluster.Leader, nil
}
