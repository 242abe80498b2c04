package e2e_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/natstest"
	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	chatdnode "github.com/chatd/chatd/node"
	"github.com/go-stomp/stomp/v3"
	"github.com/nats-io/nats-server/v2/server"
)

// flood is a sender that writes all its SENDs at once, each asking a
// RECEIPT, to rooms in turn.
type flood struct {
	user  string
	rooms []string
	n     int
	conn  *stomptest.Raw
}

func (f *flood) text(i int) string { return f.user + "-" + strconv.Itoa(i) }

func (f *flood) room(i int) string { return f.rooms[i%len(f.rooms)] }

// burst is the sender's frames, from..to, as one WebSocket message.
func (f *flood) burst(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		b.WriteString(stomptest.Render("SEND", msgBody(f.text(i)), "destination:/app/chat."+f.room(i),
			"content-type:application/json", "receipt:r"+strconv.Itoa(i)))
	}
	return b.String()
}

// receipts reads the sender's RECEIPTs: every one, in the order sent.
func (f *flood) receipts(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		fr := f.conn.Frame()
		if fr.Command != "RECEIPT" || fr.Header.Get("receipt-id") != "r"+strconv.Itoa(i) {
			t.Fatalf("%s: want RECEIPT r%d, got %s %v %q", f.user, i, fr.Command, fr.Header, fr.Body)
		}
	}
}

// watch collects n messages of a subscription in the background.
func watch(t *testing.T, sub *stomp.Subscription, n int) func() []chat.Message {
	t.Helper()
	var got []chat.Message
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			m, ok := <-sub.C
			if !ok || m.Err != nil {
				return
			}
			var cm chat.Message
			if err := json.Unmarshal(m.Body, &cm); err != nil {
				return
			}
			got = append(got, cm)
		}
	}()
	return func() []chat.Message {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: %d of %d messages within 30s", sub.Destination(), len(got), n)
		}
		return got
	}
}

// checkRoom checks what one room's subscribers saw: every subscriber the
// same messages in the same order, ids rising, and each sender's messages
// in the order it sent them, all of them.
func checkRoom(t *testing.T, room string, seen [][]chat.Message, want map[string][]string) {
	t.Helper()
	for i := 1; i < len(seen); i++ {
		if !slices.EqualFunc(seen[i], seen[0], func(a, b chat.Message) bool { return a.ID == b.ID && a.Message == b.Message }) {
			t.Fatalf("room %s: subscribers saw different orders:\n%v\n%v", room, texts(seen[0]), texts(seen[i]))
		}
	}
	bySender := map[string][]string{}
	for i, m := range seen[0] {
		if i > 0 && m.ID <= seen[0][i-1].ID {
			t.Fatalf("room %s: id %d after %d", room, m.ID, seen[0][i-1].ID)
		}
		bySender[m.UserID] = append(bySender[m.UserID], m.Message)
	}
	for user, texts := range want {
		if !slices.Equal(bySender[user], texts) {
			t.Fatalf("room %s: %s's messages arrived as %v\nsent %v", room, user, bySender[user], texts)
		}
	}
}

// scene connects the floods and two watchers of every room they write to,
// and returns, per room, the watchers' results and what each sender sent.
func scene(t *testing.T, n *node, floods []*flood) (map[string][]func() []chat.Message, map[string]map[string][]string) {
	t.Helper()
	want := map[string]map[string][]string{}
	total := map[string]int{}
	for _, f := range floods {
		for i := range f.n {
			r := f.room(i)
			if want[r] == nil {
				want[r] = map[string][]string{}
			}
			want[r][f.user] = append(want[r][f.user], f.text(i))
			total[r]++
		}
	}
	watchers := map[string][]func() []chat.Message{}
	for w := range 2 {
		c := dial(t, n, "watcher"+strconv.Itoa(w))
		for r := range want {
			watchers[r] = append(watchers[r], watch(t, c.subscribe("/topic/chat."+r), total[r]))
		}
	}
	for _, f := range floods {
		f.conn = dialRaw(t, n)
		f.conn.ConnectAs(f.user, "1.2")
	}
	return watchers, want
}

// floods makes senders writing each messages to two of three rooms.
func floods(senders, each int) []*flood {
	rooms := []string{"gc0", "gc1", "gc2"}
	var out []*flood
	for s := range senders {
		out = append(out, &flood{user: "s" + strconv.Itoa(s), rooms: []string{rooms[s%3], rooms[(s+1)%3]}, n: each})
	}
	return out
}

// checkRooms waits for every watcher and checks every room.
func checkRooms(t *testing.T, watchers map[string][]func() []chat.Message, want map[string]map[string][]string) {
	t.Helper()
	for r, ws := range watchers {
		var seen [][]chat.Message
		for _, w := range ws {
			seen = append(seen, w())
		}
		checkRoom(t, r, seen, want[r])
	}
}

// groupCommitCases are the two ways group commit stores with --durability
// fsync: on one node chatd publishes a batch's messages singly and syncs
// the stream's block file itself; on a replicated stream (the first of
// three nodes, R3) a batch goes as one atomic batch, synced by the servers.
var groupCommitCases = []struct {
	name   string
	nodes  int
	atomic bool
}{
	{"one node", 1, false},
	{"three nodes", 3, true},
}

func groupCommitNode(t *testing.T, nodes int) *node {
	if nodes == 1 {
		return startNode(t)
	}
	return startCluster(t, nodes)[0]
}

// TestGroupCommitKeepsOrderAndReceipts: senders on their own sessions
// write hundreds of SENDs to three rooms at once. Every SEND gets its
// RECEIPT, in order; every subscriber of a room sees the same messages in
// the same order, each sender's in the order it sent them; and the node
// did store them in groups, as atomic batches where the stream is
// replicated.
func TestGroupCommitKeepsOrderAndReceipts(t *testing.T) {
	t.Parallel()
	for _, tc := range groupCommitCases {
		t.Run(tc.name, func(t *testing.T) {
			n := groupCommitNode(t, tc.nodes)
			before := scrape(t, n)
			const senders, each = 6, 150
			fs := floods(senders, each)
			watchers, want := scene(t, n, fs)
			var wg sync.WaitGroup
			for _, f := range fs {
				wg.Go(func() {
					f.conn.Send(f.burst(0, each))
					f.receipts(t, 0, each)
				})
			}
			wg.Wait()
			checkRooms(t, watchers, want)
			after := scrape(t, n)
			delta := func(k string) float64 { return after[k] - before[k] }
			atomic := delta(`chatd_jetstream_batch_messages_count{write="atomic"}`)
			batches := atomic + delta(`chatd_jetstream_batch_messages_count{write="single"}`)
			stored := delta(`chatd_jetstream_batch_messages_sum{write="atomic"}`) + delta(`chatd_jetstream_batch_messages_sum{write="single"}`)
			t.Logf("%v messages in %v batches, %v of them atomic", stored, batches, atomic)
			switch {
			case stored != senders*each:
				t.Fatalf("%v messages in batches, want all %d", stored, senders*each)
			case batches >= stored/2:
				t.Fatalf("%v messages in %v batches: SENDs arriving together were not stored together", stored, batches)
			case tc.atomic && atomic == 0:
				t.Fatal("no atomic batch on a replicated stream")
			case !tc.atomic && atomic > 0:
				t.Fatalf("%v atomic batches on one node, where chatd syncs single publishes", atomic)
			}
		})
	}
}

// TestTooLargeMessageFailsAlone: in the middle of a flood, one
// sender's message is too large to store once encoded (JSON escapes '<'
// to six bytes, so it fits the frame limit but not the stream's). chatd
// refuses it before it reaches JetStream, where it would be refused only
// after later messages of its sender's were written (a batch JetStream
// refuses is split, natsbus's TestRefusedBatchFailsOnlyTheCulprit). Its
// sender gets an ERROR after the RECEIPTs of its earlier messages, and
// nobody else notices: every other message is stored and receipted, in
// order.
func TestTooLargeMessageFailsAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range groupCommitCases {
		t.Run(tc.name, func(t *testing.T) { refusedFailsAlone(t, groupCommitNode(t, tc.nodes)) })
	}
}

func refusedFailsAlone(t *testing.T, n *node) {
	before := scrape(t, n)
	const senders, each, culpritGood = 6, 150, 40
	fs := floods(senders, each)
	culprit := &flood{user: "culprit", rooms: []string{"gc0"}, n: culpritGood}
	watchers, want := scene(t, n, append(fs, culprit))
	huge := strings.Repeat("<", 12000) // 12 KB in the frame, 72 KB stored: over 64 KiB + 4 KiB
	bad := stomptest.Render("SEND", msgBody(huge), "destination:/app/chat.gc0", "content-type:application/json", "receipt:bad")

	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(func() {
			f.conn.Send(f.burst(0, each/2))
			f.conn.Send(f.burst(each/2, each))
			f.receipts(t, 0, each)
		})
	}
	// Sent while the floods keep the committer busy, so that all of it,
	// the bad message included, gathers into the next batch.
	culprit.conn.Send(culprit.burst(0, culpritGood) + bad)
	culprit.receipts(t, 0, culpritGood)
	if f := culprit.conn.Frame(); f.Command != "ERROR" || !strings.HasPrefix(f.Header.Get("message"), "message too large to store") ||
		f.Header.Get("receipt-id") != "bad" {
		t.Fatalf("culprit: want ERROR message too large to store (receipt-id bad), got %s %v", f.Command, f.Header)
	}
	wg.Wait()
	checkRooms(t, watchers, want)
	waitDeltas(t, n, before, map[string]float64{
		"chatd_jetstream_publish_failures_total": 0,
		"chatd_messages_stored_total":            senders*each + culpritGood,
		`chatd_errors_total{kind="limit"}`:       1,
	})
	after := scrape(t, n)
	t.Logf("atomic batches split: %v", after["chatd_jetstream_batch_splits_total"]-before["chatd_jetstream_batch_splits_total"])
}

// TestDurabilityMismatchStopsStart: a stream made for --durability fast
// (JetStream's async persist mode, fixed at creation) cannot serve fsync;
// chatd refuses to start and says why, instead of running weaker than
// asked.
func TestDurabilityMismatchStopsStart(t *testing.T) {
	t.Parallel()
	n := startNode(t, func(c *config.Config) { c.Durability = config.DurabilityFast })
	n.stop()
	n.cfg.Durability = config.DurabilityFsync
	err := n.tryStart()
	if err == nil || !strings.Contains(err.Error(), "persist_mode async, --durability fsync needs default") {
		t.Fatalf("start with fsync on a fast stream: %v", err)
	}
	n.cfg.Durability = config.DurabilityFast
	n.start()
}

// TestExternalNATSDoesNotClaimFsync: with --nats-url the NATS servers
// decide when they sync, which no client can see: chatd says so at start
// rather than claim fsync. The server here is a real one chatd does not
// own.
func TestExternalNATSDoesNotClaimFsync(t *testing.T) {
	t.Parallel()
	srv := natstest.Run(t, &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	for _, tc := range []struct {
		durability string
		want       string
	}{
		{config.DurabilityFsync, `level=WARN msg="durability fsync is not verified`},
		{config.DurabilityReplicated, `level=INFO msg=durability durability=replicated`},
	} {
		cfg := testConfig(t)
		cfg.NATSURL, cfg.NATSListen, cfg.Durability = srv.ClientURL(), "", tc.durability
		var logs testlog.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		a, err := chatdnode.Start(ctx, cfg, "test", slog.New(slog.NewTextHandler(&logs, nil)))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs.String(), tc.want) {
			t.Fatalf("--durability %s with --nats-url: log lacks %q:\n%s", tc.durability, tc.want, logs.String())
		}
	}
}
