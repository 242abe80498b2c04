package chat_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/storage"
)

// world fakes the ports chat needs of NATS: the message log, group commit
// and the bus, in memory, with the faults a test may inject (live
// messages lost, a room whose newest id cannot be read for a while, a log
// that dropped its oldest messages).
type world struct {
	mu      sync.Mutex
	epoch   uint64
	msgs    []storage.Message // every message held, by id
	dedupe  map[string]uint64 // sender:clientID -> id
	watches map[string]map[*watch]struct{}
	topics  map[string]map[*topicWatch]struct{}
	drop    map[string]int           // room -> live messages to lose
	block   map[string]chan struct{} // room -> LastID waits until closed
	fail    map[string]error         // room -> LastID fails with it
	failNew map[string]error         // room -> Latest fails with it
	failed  map[string]int           // room -> Latest calls failNew failed
	perRoom int64
	// afterLive, if set (a func()), is called once a watch has handed a
	// live message over.
	afterLive atomic.Value
}

func newWorld() *world {
	return &world{
		epoch: 1000, dedupe: map[string]uint64{}, watches: map[string]map[*watch]struct{}{},
		topics: map[string]map[*topicWatch]struct{}{}, drop: map[string]int{}, block: map[string]chan struct{}{},
		fail: map[string]error{}, failNew: map[string]error{}, failed: map[string]int{},
	}
}

// watch delivers one room's live messages on a goroutine of its own, one
// at a time, as a NATS subscription does.
type watch struct {
	ch   chan live
	quit chan struct{}
	done chan struct{}
}

type live struct {
	m    storage.Message
	prev uint64
}

type topicWatch struct {
	fn func([]byte, string)
}

func (w *world) lastOf(room string) uint64 {
	for i := len(w.msgs) - 1; i >= 0; i-- {
		if w.msgs[i].Room == room {
			return w.msgs[i].ID
		}
	}
	return 0
}

func (w *world) nextID() uint64 {
	if len(w.msgs) == 0 {
		return w.epoch
	}
	return w.msgs[len(w.msgs)-1].ID + 1
}

// Submit implements chat.Committer: stored at once, then sent live.
func (w *world) Submit(room string, data []byte, sender, clientID string, abandon func() error, done func(uint64, error)) {
	if abandon != nil {
		if err := abandon(); err != nil {
			done(0, err)
			return
		}
	}
	w.mu.Lock()
	key := sender + "\x00" + clientID
	if id, ok := w.dedupe[key]; ok && clientID != "" {
		w.mu.Unlock()
		done(id, nil)
		return
	}
	prev := w.lastOf(room)
	m := storage.Message{ID: w.nextID(), Room: room, Data: data, Time: time.Now()}
	w.msgs = append(w.msgs, m)
	if clientID != "" {
		w.dedupe[key] = m.ID
	}
	if w.drop[room] > 0 {
		w.drop[room]--
	} else {
		for wt := range w.watches[room] {
			wt.ch <- live{m, prev}
		}
	}
	w.mu.Unlock()
	done(m.ID, nil)
}

// trim drops the log's n oldest messages, as retention would.
func (w *world) trim(n int) {
	w.mu.Lock()
	w.msgs = slices.Clone(w.msgs[n:])
	w.mu.Unlock()
}

func (w *world) room(room string) []storage.Message {
	var out []storage.Message
	for _, m := range w.msgs {
		if m.Room == room {
			out = append(out, m)
		}
	}
	return out
}

func (w *world) Page(_ context.Context, room string, before uint64, limit int) ([]storage.Message, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []storage.Message
	for _, m := range w.room(room) {
		if before == 0 || m.ID < before {
			out = append(out, m)
		}
	}
	return out[max(0, len(out)-limit):], nil
}

func (w *world) After(_ context.Context, room string, after uint64, limit int) ([]storage.Message, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []storage.Message
	for _, m := range w.room(room) {
		if m.ID > after && len(out) < limit {
			out = append(out, m)
		}
	}
	return out, nil
}

func (w *world) AfterUpTo(ctx context.Context, room string, after, _ uint64, limit int) ([]storage.Message, error) {
	return w.After(ctx, room, after, limit)
}

func (w *world) Span(ctx context.Context, room string, after, upTo uint64, limit int) ([]storage.Message, error) {
	msgs, err := w.After(ctx, room, after, limit)
	for i, m := range msgs {
		if m.ID > upTo {
			return msgs[:i], err
		}
	}
	return msgs, err
}

func (w *world) LastID(ctx context.Context, room string) (uint64, error) {
	w.mu.Lock()
	ch := w.block[room]
	w.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.fail[room]; err != nil {
		return 0, err
	}
	return w.lastOf(room), nil
}

func (w *world) Latest(_ context.Context, room string, upTo uint64) (*storage.Message, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.failNew[room]; err != nil {
		w.failed[room]++
		return nil, err
	}
	ms := w.room(room)
	for i := len(ms) - 1; i >= 0; i-- {
		if upTo == 0 || ms[i].ID <= upTo {
			return &ms[i], nil
		}
	}
	return nil, nil
}

func (w *world) State(context.Context, string) (storage.LogState, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := storage.LogState{Epoch: w.epoch, First: w.epoch, Last: w.epoch - 1}
	if len(w.msgs) > 0 {
		st.First, st.Last = w.msgs[0].ID, w.msgs[len(w.msgs)-1].ID
	}
	return st, nil
}

func (w *world) RoomCount(_ context.Context, room string) (uint64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return uint64(len(w.room(room))), nil
}

func (w *world) RoomTails(ctx context.Context, marks []storage.RoomMark) ([]storage.RoomTail, error) {
	out := make([]storage.RoomTail, len(marks))
	for i, mk := range marks {
		latest, err := w.Latest(ctx, mk.Room, 0)
		if err != nil {
			return nil, err
		}
		ms, err := w.After(ctx, mk.Room, mk.Read, 1<<30)
		if err != nil {
			return nil, err
		}
		out[i] = storage.RoomTail{Latest: latest, Unread: uint64(len(ms))}
	}
	return out, nil
}

func (w *world) MaxPerRoom() int64   { return w.perRoom }
func (w *world) MaxMessageSize() int { return 1 << 16 }

// WatchRoom implements chat.Bus.
func (w *world) WatchRoom(room string, fn func(storage.Message, uint64, int)) (func(), error) {
	wt := &watch{ch: make(chan live, 1<<14), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(wt.done)
		for {
			select {
			case l := <-wt.ch:
				fn(l.m, l.prev, len(wt.ch))
				if h, ok := w.afterLive.Load().(func()); ok {
					h()
				}
			case <-wt.quit:
				return
			}
		}
	}()
	w.mu.Lock()
	if w.watches[room] == nil {
		w.watches[room] = map[*watch]struct{}{}
	}
	w.watches[room][wt] = struct{}{}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.watches[room], wt)
		w.mu.Unlock()
		close(wt.quit)
		<-wt.done
	}, nil
}

func (w *world) watchTopic(key string, fn func([]byte, string)) (func(), error) {
	tw := &topicWatch{fn: fn}
	w.mu.Lock()
	if w.topics[key] == nil {
		w.topics[key] = map[*topicWatch]struct{}{}
	}
	w.topics[key][tw] = struct{}{}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.topics[key], tw)
		w.mu.Unlock()
	}, nil
}

func (w *world) publish(key, contentType string, body []byte) error {
	w.mu.Lock()
	var fns []func([]byte, string)
	for tw := range w.topics[key] {
		fns = append(fns, tw.fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn(body, contentType)
	}
	return nil
}

func (w *world) WatchUser(user, queue string, fn func([]byte, string)) (func(), error) {
	return w.watchTopic("user."+user+"."+queue, fn)
}

func (w *world) WatchReads(room string, fn func([]byte, string)) (func(), error) {
	return w.watchTopic("read."+room, fn)
}

func (w *world) PublishUser(user, queue, contentType string, body []byte) error {
	return w.publish("user."+user+"."+queue, contentType, body)
}

func (w *world) PublishReads(room, contentType string, body []byte) error {
	return w.publish("read."+room, contentType, body)
}

// memStore fakes a storage backend in maps.
type memStore struct {
	mu      sync.Mutex
	rooms   map[string]storage.Room
	members map[string]map[string]storage.Member // room -> user -> membership
	marks   map[[2]string]uint64
	leave   []func(room, user string)
	kept    map[string]int // storage.Keeper's count by room
}

func newMemStore() *memStore {
	return &memStore{rooms: map[string]storage.Room{}, members: map[string]map[string]storage.Member{}, marks: map[[2]string]uint64{}, kept: map[string]int{}}
}

func (s *memStore) putLocked(room string, m storage.Member) {
	if s.members[room] == nil {
		s.members[room] = map[string]storage.Member{}
	}
	s.members[room][m.User] = m
}

func (s *memStore) CreateRoom(_ context.Context, rm storage.Room) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.rooms[rm.ID]; ok {
		return storage.ErrExists
	}
	s.rooms[rm.ID] = rm
	s.putLocked(rm.ID, storage.Member{User: rm.CreatedBy, Role: storage.RoleOwner, JoinedAt: rm.CreatedAt})
	return nil
}

func (s *memStore) Room(_ context.Context, id string) (storage.Room, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rm, ok := s.rooms[id]; ok {
		return rm, nil
	}
	return storage.Room{}, storage.ErrNotFound
}

func (s *memStore) Join(_ context.Context, room, user string, role storage.Role) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.members[room][user]; ok {
		return false, nil
	}
	s.putLocked(room, storage.Member{User: user, Role: role, JoinedAt: time.Now()})
	return true, nil
}

func (s *memStore) Leave(_ context.Context, room, user string) error {
	s.mu.Lock()
	_, ok := s.members[room][user]
	delete(s.members[room], user)
	fns := s.leave
	s.mu.Unlock()
	if ok {
		for _, fn := range fns {
			fn(room, user)
		}
	}
	return nil
}

func (s *memStore) IsMember(_ context.Context, room, user string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.members[room][user]
	return ok, nil
}

func (s *memStore) Others(_ context.Context, room, user string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.members[room])
	if _, ok := s.members[room][user]; ok {
		n--
	}
	return n, nil
}

func (s *memStore) Membership(_ context.Context, room, user string) (storage.Member, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[room][user]
	return m, ok, nil
}

func (s *memStore) Members(_ context.Context, room string) ([]storage.Member, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Collect(maps.Values(s.members[room]))
	slices.SortFunc(out, func(a, b storage.Member) int { return strings.Compare(a.User, b.User) })
	return out, nil
}

func (s *memStore) UserRooms(_ context.Context, user string) ([]storage.UserRoom, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storage.UserRoom
	for room, ms := range s.members {
		if m, ok := ms[user]; ok {
			out = append(out, storage.UserRoom{ID: room, Name: s.rooms[room].Name, Role: m.Role, Read: s.marks[[2]string{room, user}]})
		}
	}
	slices.SortFunc(out, func(a, b storage.UserRoom) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (s *memStore) MarkRead(_ context.Context, room, user string, id uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{room, user}
	s.marks[k] = max(s.marks[k], id)
	return s.marks[k], nil
}

func (s *memStore) ReadMark(_ context.Context, room, user string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.marks[[2]string{room, user}], nil
}

func (s *memStore) Unread(_ context.Context, room string, msgs []storage.MessageRef) ([]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, len(msgs))
	for u := range s.members[room] {
		p := s.marks[[2]string{room, u}]
		for i, m := range msgs {
			if u != m.Sender && p < m.ID {
				out[i]++
			}
		}
	}
	return out, nil
}

func (s *memStore) Keep(room string) (release func()) {
	s.mu.Lock()
	s.kept[room]++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.kept[room]--
		s.mu.Unlock()
	}
}

func (s *memStore) keptCount(room string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kept[room]
}

func (s *memStore) OnLeave(fn func(room, user string)) {
	s.mu.Lock()
	s.leave = append(s.leave, fn)
	s.mu.Unlock()
}

// sink is a subscriber that keeps what it is given. As a client would,
// it sees what Deliver queued only once it is flushed: a delivery path
// that forgets to flush leaves a test waiting.
type sink struct {
	mu     sync.Mutex
	pubs   []*chat.Publication
	notes  []chat.Note
	queued []*chat.Publication
	qnotes []chat.Note
	ended  error
	more   chan struct{} // a signal per flush or end
	// flushes lists how many deliveries each Flush sent.
	flushes []int
	// hold, if set, holds the first Deliver until it is closed.
	hold chan struct{}
}

func newSink() *sink { return &sink{more: make(chan struct{}, 1<<16)} }

func (s *sink) Deliver(p *chat.Publication, n chat.Note) bool {
	s.mu.Lock()
	if h := s.hold; h != nil {
		s.hold = nil
		s.mu.Unlock()
		<-h
		s.mu.Lock()
	}
	s.queued = append(s.queued, p)
	s.qnotes = append(s.qnotes, n)
	s.mu.Unlock()
	return true
}

func (s *sink) Flush() {
	s.mu.Lock()
	if len(s.queued) > 0 {
		s.flushes = append(s.flushes, len(s.queued))
	}
	s.pubs = append(s.pubs, s.queued...)
	s.notes = append(s.notes, s.qnotes...)
	s.queued, s.qnotes = nil, nil
	s.mu.Unlock()
	s.more <- struct{}{}
}

func (s *sink) DeliverWait(_ context.Context, p *chat.Publication, n chat.Note) error {
	s.Deliver(p, n)
	s.Flush()
	return nil
}

func (s *sink) End(err error) {
	s.mu.Lock()
	s.ended = err
	s.mu.Unlock()
	s.more <- struct{}{}
}

func (s *sink) Logger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ids lists the ids delivered.
func (s *sink) ids() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]uint64, len(s.pubs))
	for i, p := range s.pubs {
		out[i] = p.ID
	}
	return out
}

// await waits until cond holds of the sink.
func (s *sink) await(cond func() bool) error {
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-s.more:
		case <-deadline:
			return errors.New("timed out")
		}
	}
}

// awaitIDs waits for n deliveries and returns their ids.
func (s *sink) awaitIDs(n int) ([]uint64, error) {
	err := s.await(func() bool { return len(s.pubs) >= n })
	ids := s.ids()
	if err != nil {
		return ids, fmt.Errorf("%d of %d deliveries: %w", len(ids), n, err)
	}
	return ids, nil
}
