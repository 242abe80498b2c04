package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/kvstore"
)

// backend is what a Service runs on: the fakes (world, memStore), or the
// real thing (natsbus on an embedded JetStream, kvstore).
type backend struct {
	log    chat.MessageLog
	commit chat.Committer
	bus    chat.Bus
	store  chat.Store
	w      *world // nil: real JetStream, no faults to inject
}

func fakeBackend(t *testing.T) backend {
	w := newWorld()
	return backend{log: w, commit: w, bus: w, store: newMemStore(), w: w}
}

func jetStreamBackend(t *testing.T) backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := natsbus.Start(ctx, natsbus.Options{DataDir: t.TempDir(), ServerName: "chattest", Durability: natsbus.DurabilityReplicated})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	log, err := bus.OpenMessageLog(ctx, natsbus.LogConfig{Durability: natsbus.DurabilityReplicated})
	if err != nil {
		t.Fatal(err)
	}
	commit := log.NewCommitter(nil)
	t.Cleanup(func() { _ = commit.Close(context.Background()) })
	store, err := kvstore.Open(ctx, bus, kvstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return backend{log: log, commit: commit, bus: bus, store: store}
}

// service starts a Service on b; members is joined to every room named.
func (b backend) service(t *testing.T, cfg chat.Config) *chat.Service {
	t.Helper()
	if cfg.ProbeDelay == 0 {
		cfg.ProbeDelay = 50 * time.Millisecond
	}
	s := chat.NewService(b.log, b.commit, b.bus, b.store, cfg)
	t.Cleanup(s.Close)
	return s
}

func (b backend) join(t *testing.T, room string, users ...string) {
	t.Helper()
	for _, u := range users {
		if _, err := b.store.Join(context.Background(), room, u, storage.RoleMember); err != nil {
			t.Fatal(err)
		}
	}
}

// post stores a message and waits until it is stored.
func post(t *testing.T, s *chat.Service, user, room, text string) {
	t.Helper()
	if err := tryPost(s, user, room, text, ""); err != nil {
		t.Fatal(err)
	}
}

func tryPost(s *chat.Service, user, room, text, clientID string) error {
	body, _ := json.Marshal(map[string]string{"message": text})
	done := make(chan error, 1)
	s.Post(context.Background(), nil, user, room, body, nil, clientID, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("not stored within 10s")
	}
}

func subscribe(t *testing.T, s *chat.Service, user, room string, since *uint64) *sink {
	t.Helper()
	k := newSink()
	stop, err := s.SubscribeRoom(context.Background(), user, room, since, k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return k
}

func decode(t *testing.T, p *chat.Publication) chat.Message {
	t.Helper()
	var m chat.Message
	if err := json.Unmarshal(p.Body, &m); err != nil {
		t.Fatalf("publication %d: %v", p.ID, err)
	}
	return m
}

func ascending(ids []uint64) bool {
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			return false
		}
	}
	return true
}

// TestDomain runs the domain's behaviour against the fakes of its ports
// and again against real JetStream.
func TestDomain(t *testing.T) {
	for name, open := range map[string]func(*testing.T) backend{"fakes": fakeBackend, "jetstream": jetStreamBackend} {
		t.Run(name, func(t *testing.T) {
			t.Run("LiveInOrder", func(t *testing.T) { testLiveInOrder(t, open(t)) })
			t.Run("ReplayThenLive", func(t *testing.T) { testReplayThenLive(t, open(t)) })
			t.Run("HistoryAndUnread", func(t *testing.T) { testHistoryAndUnread(t, open(t)) })
			t.Run("QueueEncodedOnce", func(t *testing.T) { testQueueEncodedOnce(t, open(t)) })
			t.Run("MemberRemovedEnds", func(t *testing.T) { testMemberRemovedEnds(t, open(t)) })
			t.Run("ClientIDStoredOnce", func(t *testing.T) { testClientIDStoredOnce(t, open(t)) })
			t.Run("BurstFlushedOnce", func(t *testing.T) { testBurstFlushedOnce(t, open(t)) })
			t.Run("FlushWindow", func(t *testing.T) { testFlushWindow(t, open(t)) })
			t.Run("LargeRoomFlushedInChunks", func(t *testing.T) { testLargeRoom(t, open(t)) })
		})
	}
}

// TestFeedKeepsItsRoom: while a room has subscribers on the node, its feed
// keeps it in the store's working set, once however many subscribe; the
// last to go lets it go.
func TestFeedKeepsItsRoom(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{AutoJoin: true})
	store := b.store.(*memStore)
	var stops []func()
	for _, u := range []string{"ann", "ben"} {
		stop, err := s.SubscribeRoom(context.Background(), u, "r", nil, newSink())
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, stop)
	}
	if n := store.keptCount("r"); n != 1 {
		t.Fatalf("room kept %d times with two subscribers, want once", n)
	}
	stops[0]()
	if n := store.keptCount("r"); n != 1 {
		t.Fatalf("room kept %d times with one subscriber left, want once", n)
	}
	stops[1]()
	if n := store.keptCount("r"); n != 0 {
		t.Fatalf("room still kept (%d) with no subscriber", n)
	}
}

// Messages that wait for a room's feed are flushed to its subscribers
// together: once the feed has taken all that waited, or every 64 (the
// feed's bound), and each reaches its subscriber once, in order.
// (Flushed once a message, 101 flushes; unbounded, one of 100.)
func testBurstFlushedOnce(t *testing.T, b backend) {
	// No probe while the first message is held: on a busy machine it
	// could fire meanwhile and catch the room up from the log in one go
	// ([1 100] once, in CI), which is not the live burst this is about.
	s := b.service(t, chat.Config{AutoJoin: true, ProbeDelay: time.Minute})
	k := newSink()
	hold := make(chan struct{})
	k.hold = hold
	stop, err := s.SubscribeRoom(context.Background(), "ann", "r", nil, k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	const n = 101 // the first is held; 100 wait behind it
	for i := range n {
		post(t, s, "ben", "r", strconv.Itoa(i))
	}
	close(hold)
	ids, err := k.awaitIDs(n)
	if err != nil {
		t.Fatal(err)
	}
	if !ascending(ids) || len(ids) != n {
		t.Fatalf("ids %v", ids)
	}
	k.mu.Lock()
	flushes := slices.Clone(k.flushes)
	k.mu.Unlock()
	// The held first message may have had company already, and the bus
	// may hand the feed the rest in more than one run, flushing whenever
	// nothing more waits ([1 64 31 5] and [58 43] once each): a few
	// flushes of at most 64, not 101 of one.
	if len(flushes) > 6 || slices.Max(flushes) > 64 {
		t.Fatalf("deliveries per flush %v, want a few bursts of at most 64", flushes)
	}
}

// A room quiet for a flush window flushes its message at once; messages
// that follow within the window are gathered and flushed together when
// it ends. (Without the window, each would be a flush of its own.)
func testFlushWindow(t *testing.T, b backend) {
	s := b.service(t, chat.Config{AutoJoin: true, FlushWindow: 500 * time.Millisecond})
	k := subscribe(t, s, "ann", "r", nil)
	post(t, s, "ben", "r", "first")
	if _, err := k.awaitIDs(1); err != nil {
		t.Fatal(err)
	}
	post(t, s, "ben", "r", "second")
	post(t, s, "ben", "r", "third")
	ids, err := k.awaitIDs(3)
	if err != nil {
		t.Fatal(err)
	}
	if !ascending(ids) || len(ids) != 3 {
		t.Fatalf("ids %v", ids)
	}
	k.mu.Lock()
	flushes := slices.Clone(k.flushes)
	k.mu.Unlock()
	if !slices.Equal(flushes, []int{1, 2}) {
		t.Fatalf("deliveries per flush %v, want [1 2]", flushes)
	}
}

// A room with more subscribers than one goroutine flushes (they are
// flushed in chunks, in parallel) gets every message to every one, once,
// in order.
func testLargeRoom(t *testing.T, b backend) {
	s := b.service(t, chat.Config{AutoJoin: true})
	sinks := make([]*sink, 600)
	for i := range sinks {
		sinks[i] = subscribe(t, s, "u"+strconv.Itoa(i), "big", nil)
	}
	for i := range 3 {
		post(t, s, "ann", "big", strconv.Itoa(i))
	}
	for i, k := range sinks {
		ids, err := k.awaitIDs(3)
		if err != nil {
			t.Fatalf("subscriber %d: %v", i, err)
		}
		if len(ids) != 3 || !ascending(ids) {
			t.Fatalf("subscriber %d: ids %v", i, ids)
		}
	}
}

// Two subscribers get every message of two senders once, in id order,
// each one publication for both, with what the sender wrote.
func testLiveInOrder(t *testing.T, b backend) {
	s := b.service(t, chat.Config{AutoJoin: true})
	k1, k2 := subscribe(t, s, "ann", "r", nil), subscribe(t, s, "ben", "r", nil)
	var wg sync.WaitGroup
	for _, u := range []string{"ann", "ben"} {
		wg.Go(func() {
			for i := range 25 {
				if err := tryPost(s, u, "r", u+strconv.Itoa(i), ""); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	ids1, err := k1.awaitIDs(50)
	if err != nil {
		t.Fatal(err)
	}
	ids2, _ := k2.awaitIDs(50)
	if len(ids1) != 50 || !ascending(ids1) || !slices.Equal(ids1, ids2) {
		t.Fatalf("subscribers got %v and %v, want 50 ascending ids, the same", ids1, ids2)
	}
	for i, p := range k1.pubs {
		if k2.pubs[i] != p {
			t.Fatal("one message made two publications")
		}
		if m := decode(t, p); m.ID != p.ID || m.RoomID != "r" || m.Message[:3] != m.UserID {
			t.Fatalf("message %+v", m)
		}
	}
}

// A replay delivers what was stored after since, then the live messages
// stored meanwhile, with no gap and no duplicate.
func testReplayThenLive(t *testing.T, b backend) {
	s := b.service(t, chat.Config{AutoJoin: true})
	for i := range 10 {
		post(t, s, "ann", "r", "before"+strconv.Itoa(i))
	}
	hist, err := s.History(context.Background(), "ann", "r", 0, 10)
	if err != nil || len(hist) != 10 {
		t.Fatalf("history %v %v", hist, err)
	}
	since := hist[2].ID
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			if err := tryPost(s, "ben", "r", "during"+strconv.Itoa(i), ""); err != nil {
				t.Error(err)
			}
		}
	}()
	k := subscribe(t, s, "cat", "r", &since)
	<-done
	ids, err := k.awaitIDs(27)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 27 || ids[0] != hist[3].ID || !ascending(ids) {
		t.Fatalf("replay since %d gave %v", since, ids)
	}
	if k.notes[0] != (chat.Note{}) {
		t.Fatalf("a whole history carries note %+v", k.notes[0])
	}
}

// History pages with current unread counts; a read receipt changes them,
// tells the room's read subscribers, and shows in the reader's room list.
func testHistoryAndUnread(t *testing.T, b backend) {
	s := b.service(t, chat.Config{})
	ctx := context.Background()
	b.join(t, "r", "ann", "ben", "cat")
	reads := newSink()
	stop, err := s.SubscribeReads(ctx, "cat", "r", reads)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for i := range 3 {
		post(t, s, "ann", "r", "m"+strconv.Itoa(i))
	}
	h, err := s.History(ctx, "ben", "r", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Message != "m1" || h[1].Message != "m2" || h[1].UnreadCount != 2 {
		t.Fatalf("newest page %+v", h)
	}
	older, err := s.History(ctx, "ben", "r", h[0].ID, 20)
	if err != nil || len(older) != 1 || older[0].Message != "m0" {
		t.Fatalf("page before %d: %+v %v", h[0].ID, older, err)
	}
	ev, err := s.MarkRead(ctx, "ben", "r", h[1].ID+1000) // past the newest: held to it
	pos := ev.LastReadID
	if err != nil || pos != h[1].ID || ev.RoomID != "r" || ev.UserID != "ben" {
		t.Fatalf("MarkRead: %d %v, want %d", pos, err, h[1].ID)
	}
	if h, _ := s.History(ctx, "cat", "r", 0, 1); h[0].UnreadCount != 1 {
		t.Fatalf("after ben read: %+v", h)
	}
	if err := reads.await(func() bool { return len(reads.pubs) == 1 }); err != nil {
		t.Fatal("no read event")
	}
	var got chat.ReadEvent
	if err := json.Unmarshal(reads.pubs[0].Body, &got); err != nil || got != (chat.ReadEvent{RoomID: "r", UserID: "ben", LastReadID: pos}) {
		t.Fatalf("read event %s: %v", reads.pubs[0].Body, err)
	}
	rooms, err := s.UserRooms(ctx, "ben")
	if err != nil || len(rooms) != 1 || rooms[0].UnreadCount != 0 || rooms[0].LastMessage == nil || rooms[0].LastMessage.Message != "m2" {
		t.Fatalf("ben's rooms %+v %v", rooms, err)
	}
	if _, err := s.History(ctx, "dan", "r", 0, 5); chat.KindOf(err) != chat.Forbidden {
		t.Fatalf("a non-member's history: %v", err)
	}
}

// A history reply reaches every session of its user, one publication for
// all.
func testQueueEncodedOnce(t *testing.T, b backend) {
	s := b.service(t, chat.Config{AutoJoin: true})
	ctx := context.Background()
	post(t, s, "ann", "r", "hello")
	k1, k2, other := newSink(), newSink(), newSink()
	for _, sub := range []struct {
		user string
		k    *sink
	}{{"ann", k1}, {"ann", k2}, {"ben", other}} {
		stop, err := s.SubscribeQueue(ctx, sub.user, chat.LogQueue, sub.k)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	if err := s.SendHistory(ctx, "ann", "r", 0, 10, chat.LogQueue); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*sink{k1, k2} {
		if err := k.await(func() bool { return len(k.pubs) == 1 }); err != nil {
			t.Fatal("no history reply")
		}
	}
	if k1.pubs[0] != k2.pubs[0] {
		t.Fatal("one event made two publications")
	}
	var page []chat.Message
	if err := json.Unmarshal(k1.pubs[0].Body, &page); err != nil || len(page) != 1 || page[0].Message != "hello" || k1.pubs[0].ContentType != "application/json" {
		t.Fatalf("reply %q (%s): %v", k1.pubs[0].Body, k1.pubs[0].ContentType, err)
	}
	if len(other.ids()) != 0 {
		t.Fatal("another user's queue got the reply")
	}
}

// Removing a member ends their subscriptions to the room and its reads.
func testMemberRemovedEnds(t *testing.T, b backend) {
	s := b.service(t, chat.Config{})
	ctx := context.Background()
	b.join(t, "r", "ann", "ben")
	annRoom, annReads, ben := newSink(), newSink(), newSink()
	for _, sub := range []struct {
		user  string
		k     *sink
		reads bool
	}{{"ann", annRoom, false}, {"ann", annReads, true}, {"ben", ben, false}} {
		var stop func()
		var err error
		if sub.reads {
			stop, err = s.SubscribeReads(ctx, sub.user, "r", sub.k)
		} else {
			stop, err = s.SubscribeRoom(ctx, sub.user, "r", nil, sub.k)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	if err := b.store.Leave(ctx, "r", "ann"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []*sink{annRoom, annReads} {
		if err := k.await(func() bool { return k.ended != nil }); err != nil {
			t.Fatal("a removed member's subscription goes on")
		}
		if chat.KindOf(k.ended) != chat.Forbidden {
			t.Fatalf("ended with %v", k.ended)
		}
	}
	post(t, s, "ben", "r", "still here")
	if _, err := ben.awaitIDs(1); err != nil || ben.ended != nil {
		t.Fatalf("the member who stayed: %v, ended %v", err, ben.ended)
	}
}

// A resend with the same client id stores nothing twice.
func testClientIDStoredOnce(t *testing.T, b backend) {
	s := b.service(t, chat.Config{AutoJoin: true})
	for range 3 {
		if err := tryPost(s, "ann", "r", "once", "c-1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tryPost(s, "ben", "r", "other sender, same id", "c-1"); err != nil {
		t.Fatal(err)
	}
	h, err := s.History(context.Background(), "ann", "r", 0, 10)
	if err != nil || len(h) != 2 {
		t.Fatalf("history %+v %v, want 2 messages", h, err)
	}
}

// TestGapsRepaired: live messages the bus loses, in the middle of a burst
// or at its end, reach subscribers all the same, in order, once.
func TestGapsRepaired(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{AutoJoin: true})
	k := subscribe(t, s, "ann", "r", nil)
	post(t, s, "ann", "r", "0")
	b.w.mu.Lock()
	b.w.drop["r"] = 3 // lost in the middle: the next message shows the gap
	b.w.mu.Unlock()
	for i := 1; i <= 6; i++ {
		post(t, s, "ann", "r", strconv.Itoa(i))
	}
	b.w.mu.Lock()
	b.w.drop["r"] = 2 // lost at the end: only the probe finds them
	b.w.mu.Unlock()
	post(t, s, "ann", "r", "7")
	post(t, s, "ann", "r", "8")
	ids, err := k.awaitIDs(9)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 9 || !ascending(ids) {
		t.Fatalf("got %v", ids)
	}
	for i, p := range k.pubs {
		if m := decode(t, p); m.Message != strconv.Itoa(i) {
			t.Fatalf("delivery %d is %q", i, m.Message)
		}
	}
}

// TestProbeRetries: a message lost at the end of a burst while the log
// cannot be read (a leader election, a lost hub) is found by a probe once
// the log answers again, however many probes failed before.
func TestProbeRetries(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{AutoJoin: true})
	k := subscribe(t, s, "ann", "r", nil)
	post(t, s, "ann", "r", "0")
	if _, err := k.awaitIDs(1); err != nil {
		t.Fatal(err)
	}
	b.w.mu.Lock()
	b.w.drop["r"] = 1
	b.w.failNew["r"] = fmt.Errorf("probe: %w", storage.ErrUnavailable)
	b.w.mu.Unlock()
	post(t, s, "ann", "r", "1")
	// Several probes fail, backing off.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b.w.mu.Lock()
		n := b.w.failed["r"]
		b.w.mu.Unlock()
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d probes in 10 s", n)
		}
	}
	b.w.mu.Lock()
	delete(b.w.failNew, "r")
	b.w.mu.Unlock()
	ids, err := k.awaitIDs(2)
	if err != nil {
		t.Fatalf("the message lost while probes failed never came: %v", err)
	}
	if len(ids) != 2 || !ascending(ids) {
		t.Fatalf("got %v", ids)
	}
}

// TestReplayNotes: a replay says when the history asked for is no longer
// whole (gap) or names another life of the log (reset).
func TestReplayNotes(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{AutoJoin: true})
	for i := range 6 {
		post(t, s, "ann", "r", strconv.Itoa(i))
	}
	b.w.trim(3) // retention dropped the first three
	first := b.w.epoch + 3
	since := b.w.epoch // had only the first
	gap := subscribe(t, s, "ben", "r", &since)
	if ids, err := gap.awaitIDs(3); err != nil || ids[0] != first {
		t.Fatalf("replay after a trim: %v %v", ids, err)
	}
	if gap.notes[0] != (chat.Note{Kind: chat.NoteGap, FirstID: first}) || gap.notes[1] != (chat.Note{}) {
		t.Fatalf("notes %+v, want a gap from %d on the first only", gap.notes, first)
	}
	stale := b.w.epoch + 100 // beyond the newest: another life's id
	reset := subscribe(t, s, "cat", "r", &stale)
	if ids, err := reset.awaitIDs(3); err != nil || ids[0] != first {
		t.Fatalf("replay from another life: %v %v", ids, err)
	}
	if reset.notes[0].Kind != chat.NoteReset {
		t.Fatalf("note %+v, want reset", reset.notes[0])
	}
}

// TestSlowStartDelaysOnlyItsRoom: a room whose feed cannot start (its
// newest id unreadable, as during a leader election) holds up its own
// subscribers, never another room's subscribe or unsubscribe.
func TestSlowStartDelaysOnlyItsRoom(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{AutoJoin: true})
	other := subscribe(t, s, "ann", "other", nil)
	release := make(chan struct{})
	b.w.mu.Lock()
	b.w.block["slow"] = release
	b.w.mu.Unlock()
	slowDone := make(chan error, 2)
	for _, u := range []string{"ann", "ben"} {
		go func() {
			stop, err := s.SubscribeRoom(context.Background(), u, "slow", nil, newSink())
			if err == nil {
				stop()
			}
			slowDone <- err
		}()
	}
	fast := make(chan error, 1)
	go func() {
		k := newSink()
		stop, err := s.SubscribeRoom(context.Background(), "cat", "fast", nil, k)
		if err == nil {
			post(t, s, "cat", "fast", "hi")
			_, err = k.awaitIDs(1)
			stop()
		}
		fast <- err
	}()
	select {
	case err := <-fast:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a slow room's start held up another room's subscribe")
	}
	post(t, s, "ann", "other", "unaffected")
	if _, err := other.awaitIDs(1); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-slowDone:
		t.Fatalf("the slow room's subscribe returned before its start could: %v", err)
	default:
	}
	close(release)
	for range 2 {
		select {
		case err := <-slowDone:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the slow room's subscribers never got in")
		}
	}
}

// failing stores nothing, with err.
type failing struct{ err error }

func (f failing) Submit(_ string, _ []byte, _, _ string, _ func() error, done func(uint64, error)) {
	done(0, f.err)
}

// TestPostRefusals: what a sender is told, by kind.
func TestPostRefusals(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{})
	b.join(t, "r", "ann")
	for name, tc := range map[string]struct {
		user, room, body string
		want             chat.Kind
	}{
		"not JSON":     {"ann", "r", "hi", chat.Invalid},
		"no message":   {"ann", "r", `{"text":"hi"}`, chat.Invalid},
		"empty":        {"ann", "r", `{"message":""}`, chat.Invalid},
		"not a member": {"ben", "r", `{"message":"hi"}`, chat.Forbidden},
		"bad room":     {"ann", "a.b", `{"message":"hi"}`, chat.Invalid},
	} {
		done := make(chan error, 1)
		s.Post(context.Background(), nil, tc.user, tc.room, []byte(tc.body), nil, "", func(err error) { done <- err })
		if err := <-done; chat.KindOf(err) != tc.want {
			t.Errorf("%s: %v (%s), want %s", name, err, chat.KindOf(err), tc.want)
		}
	}
	for cause, want := range map[error]chat.Kind{
		fmt.Errorf("publish: %w", storage.ErrTooLarge):    chat.TooLarge,
		fmt.Errorf("publish: %w", storage.ErrUnavailable): chat.Unavailable,
		errors.New("disk on fire"):                        chat.Internal,
	} {
		s := chat.NewService(b.log, failing{cause}, b.bus, b.store, chat.Config{})
		done := make(chan error, 1)
		s.Post(context.Background(), nil, "ann", "r", []byte(`{"message":"hi"}`), nil, "", func(err error) { done <- err })
		if err := <-done; chat.KindOf(err) != want || !errors.Is(err, cause) && want == chat.Internal {
			t.Errorf("store failing with %v: told %v (%s)", cause, err, chat.KindOf(err))
		}
		s.Close()
	}
}

// TestUnavailableOnEveryPath: a store that cannot serve for the moment is
// "unavailable" to a subscriber too (its feed starts from the room's
// newest id), never an internal error; and only the store's own signal
// makes it so.
func TestUnavailableOnEveryPath(t *testing.T) {
	b := fakeBackend(t)
	s := b.service(t, chat.Config{})
	b.join(t, "r", "ann")
	b.join(t, "q", "ann")
	b.w.mu.Lock()
	b.w.fail["r"] = fmt.Errorf("newest id of r: %w: no stream leader", storage.ErrUnavailable)
	b.w.fail["q"] = errors.New("newest id of q: disk on fire")
	b.w.mu.Unlock()
	_, err := s.SubscribeRoom(context.Background(), "ann", "r", nil, newSink())
	e, ok := chat.AsError(err)
	if !ok || e.Kind != chat.Unavailable || !strings.HasPrefix(e.Msg, "unavailable") {
		t.Fatalf("subscribing while the store is unavailable: %v (%s), want unavailable", err, chat.KindOf(err))
	}
	if _, err := s.SubscribeRoom(context.Background(), "ann", "q", nil, newSink()); chat.KindOf(err) != chat.Internal {
		t.Fatalf("subscribing while the store fails: %v (%s), want internal", err, chat.KindOf(err))
	}
}

// keepingStore is a store with a working set (storage.Keeper) that lets a
// test act while a room's feed starts.
type keepingStore struct {
	chat.Store
	onKeep func(room string)
}

func (k keepingStore) Keep(room string) func() {
	k.onKeep(room)
	return func() {}
}

// TestMessageWhileFeedStarts: a message that arrives while a room's feed
// is still starting (its watch already delivering, the store still
// keeping the room) finds the feed ready for it, and the room goes on;
// before, it found no probe timer and panicked on the watch's goroutine.
// The subscription is not in place until the subscribe returns, so that
// message may or may not reach it; the next one does, once.
func TestMessageWhileFeedStarts(t *testing.T) {
	b := fakeBackend(t)
	handed := make(chan struct{}, 1)
	b.w.afterLive.Store(func() {
		select {
		case handed <- struct{}{}:
		default:
		}
	})
	var s *chat.Service
	b.store = keepingStore{Store: b.store, onKeep: func(room string) {
		if err := tryPost(s, "ann", room, "while starting", ""); err != nil {
			t.Error(err)
		}
		select { // the watch has handed it to the starting feed
		case <-handed:
		case <-time.After(10 * time.Second):
			t.Error("the message never reached the starting feed")
		}
	}}
	s = b.service(t, chat.Config{AutoJoin: true})
	k := subscribe(t, s, "ann", "r", nil)
	post(t, s, "ann", "r", "after")
	err := k.await(func() bool {
		return len(k.pubs) > 0 && strings.Contains(string(k.pubs[len(k.pubs)-1].Body), `"after"`)
	})
	if ids := k.ids(); err != nil || len(ids) > 2 || !ascending(ids) {
		t.Fatalf("got %v, %v: want the message after the subscribe, once", ids, err)
	}
}
