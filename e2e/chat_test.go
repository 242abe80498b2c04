package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/go-stomp/stomp/v3"
)

func TestTwoUsersChat(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, bob := dial(t, n, "alice"), dial(t, n, "bob")
	aSub := alice.subscribe("/topic/chat.lobby")
	bSub := bob.subscribe("/topic/chat.lobby")

	alice.post("lobby", "hello bob")
	for _, sub := range []*stomp.Subscription{aSub, bSub} {
		m := next(t, sub)
		if ct := m.Header.Get("content-type"); ct != "application/json" {
			t.Errorf("content-type %q", ct)
		}
		var cm chat.Message
		if err := json.Unmarshal(m.Body, &cm); err != nil {
			t.Fatal(err)
		}
		if cm.UserID != "alice" || cm.RoomID != "lobby" || cm.Message != "hello bob" || cm.ID == 0 {
			t.Fatalf("got %+v", cm)
		}
		// Both are members (they subscribed); bob has not read it.
		if cm.UnreadCount != 1 {
			t.Errorf("unreadCount %d, want 1", cm.UnreadCount)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z07:00", cm.CreatedAt); err != nil {
			t.Errorf("createdAt %q is not RFC 3339 with milliseconds: %v", cm.CreatedAt, err)
		}
	}
	bob.post("lobby", "hi alice")
	first := nextChat(t, aSub)
	if first.UserID != "bob" || first.Message != "hi alice" {
		t.Fatalf("alice got %+v", first)
	}
	if got := nextChat(t, bSub); got.ID != first.ID {
		t.Fatalf("bob got id %d, alice %d", got.ID, first.ID)
	}
}

func TestUserIDComesFromSessionNotBody(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := dial(t, n, "alice")
	sub := alice.subscribe("/topic/chat.r")
	if err := alice.Send("/app/chat.r", "application/json",
		[]byte(`{"message":"x","userId":"mallory","id":1,"roomId":"other"}`), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	m := nextChat(t, sub)
	if m.UserID != "alice" || m.RoomID != "r" || m.ID == 1 {
		t.Fatalf("server trusted the body: %+v", m)
	}
}

func TestUserQueueReachesOnlyItsOwnerOnEverySession(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice1, alice2, bob := dial(t, n, "alice"), dial(t, n, "alice"), dial(t, n, "bob")
	a1 := alice1.subscribe("/user/queue/chat.log")
	a2 := alice2.subscribe("/user/queue/chat.log")
	b := bob.subscribe("/user/queue/chat.log")

	alice1.post("q", "one")
	if err := alice1.Send("/app/chat.q.log", "application/json", nil, stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []*stomp.Subscription{a1, a2} {
		var got []chat.Message
		if err := json.Unmarshal(next(t, sub).Body, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Message != "one" {
			t.Fatalf("log reply %+v", got)
		}
	}
	quiet(t, b, 300*time.Millisecond)

	// Another queue of alice's is separate from chat.log.
	other := alice2.subscribe("/user/queue/notices")
	if err := alice1.Send("/app/chat.q.log", "application/json", nil, stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	next(t, a1)
	quiet(t, other, 200*time.Millisecond)
}

// history asks for /app/chat.{room}.log and returns the reply.
func history(t testing.TB, c *client, logSub *stomp.Subscription, room, body string) []chat.Message {
	t.Helper()
	if err := c.Send("/app/chat."+room+".log", "application/json", []byte(body), stomp.SendOpt.Receipt); err != nil {
		t.Fatalf("log request: %v", err)
	}
	var got []chat.Message
	if err := json.Unmarshal(next(t, logSub).Body, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func texts(ms []chat.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Message
	}
	return out
}

func TestHistoryPagingSurvivesRestart(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := dial(t, n, "alice")
	// Interleave another room so ids are not contiguous within a room.
	for i := range 45 {
		alice.post("hist", "m"+strconv.Itoa(i))
		alice.post("noise", "n"+strconv.Itoa(i))
	}
	check := func(c *client) {
		logSub := c.subscribe("/user/queue/chat.log")
		latest := history(t, c, logSub, "hist", "")
		if len(latest) != chat.DefaultLogLimit {
			t.Fatalf("default page has %d messages", len(latest))
		}
		want := []string{}
		for i := 25; i < 45; i++ {
			want = append(want, "m"+strconv.Itoa(i))
		}
		if !slices.Equal(texts(latest), want) {
			t.Fatalf("latest page %v, want %v", texts(latest), want)
		}
		for i := 1; i < len(latest); i++ {
			if latest[i].ID <= latest[i-1].ID {
				t.Fatalf("page not oldest first: %d then %d", latest[i-1].ID, latest[i].ID)
			}
		}
		older := history(t, c, logSub, "hist", fmt.Sprintf(`{"before":%d,"limit":15}`, latest[0].ID))
		if !slices.Equal(texts(older), want0(10, 25)) {
			t.Fatalf("older page %v", texts(older))
		}
		oldest := history(t, c, logSub, "hist", fmt.Sprintf(`{"before":%d,"limit":100}`, older[0].ID))
		if !slices.Equal(texts(oldest), want0(0, 10)) {
			t.Fatalf("oldest page %v", texts(oldest))
		}
		if rest := history(t, c, logSub, "hist", fmt.Sprintf(`{"before":%d}`, oldest[0].ID)); len(rest) != 0 {
			t.Fatalf("before the first message: %v", texts(rest))
		}
		// limit above the maximum is held to it
		if big := history(t, c, logSub, "hist", `{"limit":1000}`); len(big) != 45 {
			t.Fatalf("limit 1000 gave %d (room has 45)", len(big))
		}
	}
	check(alice)
	n.restart()
	check(dial(t, n, "alice"))
}

func want0(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, "m"+strconv.Itoa(i))
	}
	return out
}

func TestReceiptMeansStored(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := dial(t, n, "alice")
	// No subscriber anywhere: the only way to see the message is history.
	alice.post("stored", "durable")
	n.restart()
	bob := dial(t, n, "bob")
	got := history(t, bob, bob.subscribe("/user/queue/chat.log"), "stored", "")
	if len(got) != 1 || got[0].Message != "durable" || got[0].UserID != "alice" {
		t.Fatalf("after restart history is %+v", got)
	}
}

func TestClientMsgIDIsStoredOnce(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, bob := dial(t, n, "alice"), dial(t, n, "bob")
	sub := bob.subscribe("/topic/chat.dedupe")
	for range 3 {
		alice.post("dedupe", "once", stomp.SendOpt.Header("client-msg-id", "c-1"))
	}
	// bob may reuse alice's client id: ids are per user.
	bob.post("dedupe", "bob's", stomp.SendOpt.Header("client-msg-id", "c-1"))
	alice.post("dedupe", "twice", stomp.SendOpt.Header("client-msg-id", "c-2"))
	var got []string
	for range 3 {
		got = append(got, nextChat(t, sub).Message)
	}
	if !slices.Equal(got, []string{"once", "bob's", "twice"}) {
		t.Fatalf("broadcast %v", got)
	}
	quiet(t, sub, 300*time.Millisecond)
	h := history(t, bob, bob.subscribe("/user/queue/chat.log"), "dedupe", "")
	if !slices.Equal(texts(h), got) {
		t.Fatalf("stored %v", texts(h))
	}
}

func TestReadReceiptsChangeUnreadCount(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, bob, carol := dial(t, n, "alice"), dial(t, n, "bob"), dial(t, n, "carol")
	for _, c := range []*client{alice, bob, carol} {
		c.subscribe("/topic/chat.reads")
	}
	reads := alice.subscribe("/topic/chat.reads.read")
	alice.post("reads", "a")
	alice.post("reads", "b")
	logSub := alice.subscribe("/user/queue/chat.log")
	h := history(t, alice, logSub, "reads", "")
	if len(h) != 2 || h[0].UnreadCount != 2 || h[1].UnreadCount != 2 {
		t.Fatalf("before reads: %+v", h)
	}
	markRead := func(c *client, id uint64) {
		t.Helper()
		if err := c.Send("/app/chat.reads.read", "application/json",
			fmt.Appendf(nil, `{"lastReadId":%d}`, id), stomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	markRead(bob, h[0].ID)
	var ev chat.ReadEvent
	if err := json.Unmarshal(next(t, reads).Body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev != (chat.ReadEvent{RoomID: "reads", UserID: "bob", LastReadID: h[0].ID}) {
		t.Fatalf("read event %+v", ev)
	}
	h = history(t, alice, logSub, "reads", "")
	if h[0].UnreadCount != 1 || h[1].UnreadCount != 2 {
		t.Fatalf("after bob read the first: %+v", h)
	}
	// Positions never move back, and a backwards mark is not broadcast.
	markRead(bob, h[1].ID)
	next(t, reads)
	markRead(bob, h[0].ID)
	markRead(carol, h[1].ID+1_000_000) // beyond the newest: held to it
	if err := json.Unmarshal(next(t, reads).Body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.UserID != "carol" || ev.LastReadID != h[1].ID {
		t.Fatalf("carol's read event %+v", ev)
	}
	h = history(t, alice, logSub, "reads", "")
	if h[0].UnreadCount != 0 || h[1].UnreadCount != 0 {
		t.Fatalf("after everyone read: %+v", h)
	}
	// The sender's own read position does not count.
	markRead(alice, h[1].ID)
	alice.post("reads", "c")
	h = history(t, alice, logSub, "reads", "")
	if h[2].UnreadCount != 2 {
		t.Fatalf("new message unread by bob and carol: %+v", h[2])
	}
}

// TestSinceIDReplayWhileOthersSend is the reconnect story: a client that
// missed messages resumes from the last id it saw and gets each one once,
// in order, while another user keeps sending through the switch from
// replay to live.
func TestSinceIDReplayWhileOthersSend(t *testing.T) {
	partitioned(t, testSinceIDReplayWhileOthersSend)
}

func testSinceIDReplayWhileOthersSend(t *testing.T, partitions func(*config.Config)) {
	n := startNode(t, partitions)
	watcher := dial(t, n, "watcher") // sees everything live: the reference
	ref := watcher.subscribe("/topic/chat.replay")
	bob := dial(t, n, "bob")
	bSub := bob.subscribe("/topic/chat.replay")
	alice := dial(t, n, "alice")
	alice.post("replay", "before")
	lastSeen := nextChat(t, bSub).ID
	_ = bob.Disconnect()

	// Missed while away: more than one replay batch.
	const missed, during = 600, 300
	for i := range missed {
		alice.post("replay", "missed "+strconv.Itoa(i))
	}
	carol := dial(t, n, "carol")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range during {
			if err := carol.tryPost("replay", "during "+strconv.Itoa(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	bob2 := dial(t, n, "bob")
	resumed := bob2.subscribeSince("/topic/chat.replay", lastSeen)
	wg.Wait()

	var want []uint64
	for range 1 + missed + during {
		m := nextChat(t, ref)
		if m.ID > lastSeen {
			want = append(want, m.ID)
		}
	}
	var got []uint64
	for range want {
		got = append(got, nextChat(t, resumed).ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("resumed subscriber got %d ids, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
	}
	quiet(t, resumed, 300*time.Millisecond)
	// Live after the replay: the next message arrives once.
	alice.post("replay", "after")
	if m := nextChat(t, resumed); m.Message != "after" {
		t.Fatalf("live after replay: %+v", m)
	}
}

// TestReconnectStormSharesReads: a room's clients reconnecting together,
// as after a node's restart, each get every message after the id they
// saw, once, in order; and the node reads the room's history from the
// store about once between them (--replay-share), not once each.
func TestReconnectStormSharesReads(t *testing.T) {
	partitioned(t, testReconnectStormSharesReads)
}

func testReconnectStormSharesReads(t *testing.T, partitions func(*config.Config)) {
	n := startNode(t, partitions)
	ref := dial(t, n, "watcher").subscribe("/topic/chat.storm")
	alice := dial(t, n, "alice")
	const stored, clients = 600, 24 // three replay batches
	for i := range stored {
		alice.post("storm", "m"+strconv.Itoa(i))
	}
	var ids []uint64
	for range stored {
		ids = append(ids, nextChat(t, ref).ID)
	}
	before := scrape(t, n)
	since := make([]uint64, clients)
	subs := make([]*stomp.Subscription, clients)
	for i := range clients {
		if i%2 == 1 {
			since[i] = ids[i*17] // ids no two batches line up on
		}
		subs[i] = dial(t, n, fmt.Sprintf("u%d", i)).subscribeSince("/topic/chat.storm", since[i])
	}
	for i, sub := range subs {
		var got []uint64
		for _, id := range ids {
			if id > since[i] {
				got = append(got, nextChat(t, sub).ID)
			}
		}
		want := slices.DeleteFunc(slices.Clone(ids), func(id uint64) bool { return id <= since[i] })
		if !slices.Equal(got, want) {
			t.Fatalf("u%d from %d got %d ids, want %d; first difference at %d", i, since[i], len(got), len(want), firstDiff(got, want))
		}
	}
	after := scrape(t, n)
	store := after[`chatd_replay_reads_total{from="store"}`] - before[`chatd_replay_reads_total{from="store"}`]
	shared := after[`chatd_replay_reads_total{from="shared"}`] - before[`chatd_replay_reads_total{from="shared"}`]
	// Each reading its own: 24 replays of two or three batches.
	if store > 12 || shared < 30 {
		t.Fatalf("replays read %v batches from the store and shared %v: want the room read about once", store, shared)
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// partitioned runs a test on one stream and on four (--partitions).
func partitioned(t *testing.T, test func(t *testing.T, partitions func(*config.Config))) {
	for _, p := range []int{1, 4} {
		t.Run("partitions="+strconv.Itoa(p), func(t *testing.T) {
			t.Parallel()
			test(t, func(c *config.Config) { c.Partitions = p })
		})
	}
}

func TestSinceIDGapWhenHistoryTrimmed(t *testing.T) {
	partitioned(t, testSinceIDGapWhenHistoryTrimmed)
}

func testSinceIDGapWhenHistoryTrimmed(t *testing.T, partitions func(*config.Config)) {
	n := startNode(t, partitions, func(c *config.Config) { c.HistoryMaxPerRoom = 5 })
	alice := dial(t, n, "alice")
	sub := alice.subscribe("/topic/chat.trim")
	alice.post("trim", "first")
	firstID := nextChat(t, sub).ID
	for i := range 10 {
		alice.post("trim", "m"+strconv.Itoa(i))
	}
	bob := dial(t, n, "bob")
	resumed := bob.subscribeSince("/topic/chat.trim", firstID)
	m := next(t, resumed)
	if h := m.Header.Get("history"); h != "gap" {
		t.Fatalf("history header %q, want gap (headers %v)", h, m.Header)
	}
	var cm chat.Message
	_ = json.Unmarshal(m.Body, &cm)
	if cm.Message != "m5" || m.Header.Get("history-first-id") != strconv.FormatUint(cm.ID, 10) {
		t.Fatalf("first replayed %+v, history-first-id %s", cm, m.Header.Get("history-first-id"))
	}
	for i := 6; i < 10; i++ {
		m := next(t, resumed)
		if m.Header.Get("history") != "" {
			t.Fatalf("history header repeated on a later message")
		}
	}
	// A subscriber whose since-id is still held gets no note.
	carol := dial(t, n, "carol")
	fine := carol.subscribeSince("/topic/chat.trim", cm.ID)
	if m := next(t, fine); m.Header.Get("history") != "" {
		t.Fatalf("unexpected history note %q", m.Header.Get("history"))
	}
}

func TestSinceIDFromEarlierLifeIsReset(t *testing.T) {
	partitioned(t, testSinceIDFromEarlierLifeIsReset)
}

func testSinceIDFromEarlierLifeIsReset(t *testing.T, partitions func(*config.Config)) {
	n := startNode(t, partitions)
	alice := dial(t, n, "alice")
	sub := alice.subscribe("/topic/chat.life")
	for range 3 {
		alice.post("life", "old")
	}
	var oldIDs []uint64
	for range 3 {
		oldIDs = append(oldIDs, nextChat(t, sub).ID)
	}
	// The store is lost: the stream is rebuilt and ids start over.
	n.stop()
	if err := os.RemoveAll(filepath.Join(n.cfg.DataDir, "jetstream")); err != nil {
		t.Fatal(err)
	}
	n.start()
	alice = dial(t, n, "alice")
	alice.post("life", "new")
	bob := dial(t, n, "bob")
	resumed := bob.subscribeSince("/topic/chat.life", oldIDs[1])
	m := next(t, resumed)
	if m.Header.Get("history") != "reset" {
		t.Fatalf("history header %q, want reset", m.Header.Get("history"))
	}
	var cm chat.Message
	_ = json.Unmarshal(m.Body, &cm)
	if cm.Message != "new" || cm.ID <= oldIDs[2] {
		t.Fatalf("after reset got %+v; new ids must rise above the old life's (%d)", cm, oldIDs[2])
	}
}

// TestReadYourWrites: a history request, or a since-id SUBSCRIBE, sent
// right after a SEND on the same session, without waiting for the
// RECEIPT, sees that SEND: in a new room and in one with history.
func TestReadYourWrites(t *testing.T) {
	n := startNode(t)
	c := dial(t, n, "alice")
	logSub := c.subscribe("/user/queue/chat.log")
	for _, room := range []string{"ryw-new", "ryw-old"} {
		if room == "ryw-old" {
			for i := range 50 {
				c.post(room, fmt.Sprintf("old %d", i))
			}
		}
		for i := range 20 {
			text := fmt.Sprintf("%s %d", room, i)
			body, _ := json.Marshal(map[string]string{"message": text})
			if err := c.Send("/app/chat."+room, "application/json", body); err != nil {
				t.Fatal(err)
			}
			if err := c.Send("/app/chat."+room+".log", "application/json", nil); err != nil {
				t.Fatal(err)
			}
			var got []chat.Message
			if err := json.Unmarshal(next(t, logSub).Body, &got); err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 || got[len(got)-1].Message != text {
				t.Fatalf("history right after sending %q ends with %q", text, texts(got))
			}
			// A replay from the message before it, subscribed at once
			// after another SEND, holds that SEND too.
			after := got[len(got)-1].ID
			text2 := text + " again"
			body, _ = json.Marshal(map[string]string{"message": text2})
			if err := c.Send("/app/chat."+room, "application/json", body); err != nil {
				t.Fatal(err)
			}
			sub := c.subscribeSince("/topic/chat."+room, after)
			var m chat.Message
			if err := json.Unmarshal(next(t, sub).Body, &m); err != nil {
				t.Fatal(err)
			}
			if m.Message != text2 {
				t.Fatalf("replay right after sending %q starts with %q", text2, m.Message)
			}
			c.unsubscribe(sub)
		}
	}
}
