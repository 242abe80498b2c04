// Package chat is chatd's domain: rooms, messages, history, replay, read
// receipts, unread counts and user queues. Service gives STOMP destinations
// their meaning as a stompws.Handler.
package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Authenticator checks a STOMP CONNECT. It is the seam for production
// authentication; DevAuthenticator is the dev-mode one.
type Authenticator interface {
	Authenticate(ctx context.Context, req *stompws.ConnectRequest) (stompws.Principal, error)
}

// Config tunes the chat service.
type Config struct {
	// AutoJoin makes a user a member of any room they send or subscribe to
	// (dev mode). Otherwise only members may use a room.
	AutoJoin bool
	// ProbeDelay is how long after a room's last live message a node checks
	// that it missed nothing at the end of the room (see roomFeed).
	ProbeDelay time.Duration
	Logger     *slog.Logger
	// Metrics is told of stored, delivered and dropped messages and of
	// replays; nil: nothing is.
	Metrics Metrics
	// Archive, if set, holds every message, also those the stream has
	// dropped: history and replays read past the stream's oldest message
	// from it, and rooms can be searched.
	Archive Archive
}

// History page sizes for /app/chat.{room}.log.
const (
	DefaultLogLimit = 20
	MaxLogLimit     = 100
)

// replayBatch is how many stored messages one direct get returns in a replay.
const replayBatch = 256

// Service implements stompws.Handler for chatd's destinations.
type Service struct {
	nc     *nats.Conn
	msgs   *natsbus.MessageLog
	commit *natsbus.Committer
	store  storage.Store
	auth   Authenticator
	cfg    Config
	log    *slog.Logger

	mu      sync.Mutex
	feeds   map[string]*roomFeed // room -> live feed, while it has local subscribers
	fanouts map[string]*fanout   // NATS subject -> local subscribers
	subs    map[*stompws.Subscription]func()
	wg      sync.WaitGroup

	// liveReceived counts room messages this node took from NATS: with
	// interest-based fan-out only rooms with local subscribers add to it.
	liveReceived atomic.Uint64
}

// LiveReceived is the number of room messages this node has received from
// NATS for delivery to its own subscribers.
func (s *Service) LiveReceived() uint64 { return s.liveReceived.Load() }

var _ stompws.Handler = (*Service)(nil)

// NewService wires the chat domain to NATS, the message log, the group
// commit that stores posted messages in it, and storage. The caller closes
// commit after Close.
func NewService(bus *natsbus.Bus, msgs *natsbus.MessageLog, commit *natsbus.Committer, store storage.Store, auth Authenticator, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ProbeDelay <= 0 {
		cfg.ProbeDelay = time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = nopMetrics{}
	}
	s := &Service{
		nc: bus.NC, msgs: msgs, commit: commit, store: store, auth: auth, cfg: cfg, log: cfg.Logger,
		feeds: map[string]*roomFeed{}, fanouts: map[string]*fanout{}, subs: map[*stompws.Subscription]func(){},
	}
	if n, ok := store.(storage.LeaveNotifier); ok {
		n.OnLeave(s.memberLeft)
	}
	return s
}

// memberLeft ends, with an ERROR, every local session of user that is
// subscribed to room or its read receipts: a removed member stops
// receiving at once. Removals are rare, so scanning every subscription
// beats keeping an index on the delivery path.
func (s *Service) memberLeft(room, user string) {
	gone := map[*stompws.Session]bool{}
	s.mu.Lock()
	for sub := range s.subs {
		if sub.Session().User() == user && roomOf(sub.Destination) == room {
			gone[sub.Session()] = true
		}
	}
	s.mu.Unlock()
	for sess := range gone {
		sess.Logger().Info("member removed from room: ending session", "room", room)
		sess.Close(stompws.Errorf("forbidden: no longer a member of room %s", room))
	}
}

// roomOf is the room of a room or read-receipt destination, else "".
func roomOf(dest string) string {
	d, err := parseDestination(dest)
	if err != nil || d.kind != destRoom && d.kind != destRoomReads {
		return ""
	}
	return d.name
}

// Authenticate implements stompws.Handler.
func (s *Service) Authenticate(ctx context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	return s.auth.Authenticate(ctx, req)
}

// authorize lets user use room: in dev mode by joining it (creating it,
// with user as owner, if it is new), otherwise only if a member.
func (s *Service) authorize(ctx context.Context, room, user string) error {
	ok, err := s.store.IsMember(ctx, room, user)
	if err != nil {
		return fmt.Errorf("membership of %s: %w", room, err)
	}
	if ok {
		return nil
	}
	if !s.cfg.AutoJoin {
		return notMember(room)
	}
	err = s.store.CreateRoom(ctx, storage.Room{ID: room, Name: room, CreatedBy: user, CreatedAt: time.Now()})
	if errors.Is(err, storage.ErrExists) {
		_, err = s.store.Join(ctx, room, user, storage.RoleMember)
	}
	if err != nil {
		return fmt.Errorf("join %s: %w", room, err)
	}
	return nil
}

// Errors that callers map to their protocol (errors.Is); errors.As finds
// the client-facing *stompws.Error in each.
var (
	// ErrForbidden: the user may not do this (not a member, not an admin).
	ErrForbidden = errors.New("forbidden")
	// ErrNotFound: no such room, or no such member.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the change clashes with what exists.
	ErrConflict = errors.New("conflict")
)

// clientError is a refusal the client is told about: kind says which.
type clientError struct {
	kind error
	err  *stompws.Error
}

func (e clientError) Error() string        { return e.err.Error() }
func (e clientError) Unwrap() error        { return e.err }
func (e clientError) Is(target error) bool { return target == e.kind }

func refuse(kind error, format string, args ...any) error {
	return clientError{kind: kind, err: stompws.Errorf(format, args...)}
}

func notMember(room string) error {
	return refuse(ErrForbidden, "forbidden: not a member of room %s", room)
}

// Send implements stompws.Handler: the /app destinations.
func (s *Service) Send(ctx context.Context, sess *stompws.Session, f *stompws.Frame, done func(error)) {
	d, derr := parseDestination(f.Value("destination"))
	if derr != nil {
		done(derr)
		return
	}
	switch d.kind {
	case destPost:
		s.post(ctx, sess, d.name, f, done)
	case destLog:
		s.async(func() { done(s.history(ctx, sess, d.name, f.Body)) })
	case destMarkRead:
		s.async(func() { done(s.markRead(ctx, sess, d.name, f.Body)) })
	default:
		done(stompws.Errorf("cannot SEND to %s: clients send to /app/chat.{room}", f.Value("destination")))
	}
}

func (s *Service) async(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// maxClientMsgID bounds the client-msg-id header.
const maxClientMsgID = 128

func (s *Service) post(ctx context.Context, sess *stompws.Session, room string, f *stompws.Frame, done func(error)) {
	var body struct {
		Message *string `json:"message"`
	}
	if err := json.Unmarshal(f.Body, &body); err != nil {
		done(stompws.Errorf("invalid message body: want JSON {\"message\":\"...\"}"))
		return
	}
	if body.Message == nil || *body.Message == "" {
		done(stompws.Errorf("invalid message body: \"message\" must be a non-empty string"))
		return
	}
	msgID := ""
	if cid, ok := f.Get("client-msg-id"); ok {
		if cid == "" || len(cid) > maxClientMsgID {
			done(stompws.Errorf("invalid client-msg-id: 1 to %d characters", maxClientMsgID))
			return
		}
		// Scoped by user, so one user's ids never suppress another's.
		msgID = natsbus.UserToken(sess.User()) + ":" + cid
	}
	if err := s.authorize(ctx, room, sess.User()); err != nil {
		done(err)
		return
	}
	others, err := s.store.Unread(ctx, room, []storage.MessageRef{{ID: math.MaxUint64, Sender: sess.User()}})
	if err != nil {
		done(fmt.Errorf("members of %s: %w", room, err))
		return
	}
	data, err := json.Marshal(storedMessage{
		RoomID:    room,
		UserID:    sess.User(),
		Message:   *body.Message,
		CreatedAt: formatTime(time.Now()),
		Headers:   passThrough(f),
		Unread:    &others[0],
	})
	if err != nil {
		done(fmt.Errorf("encode message: %w", err))
		return
	}
	start := time.Now()
	// Submitted here, on the session's read loop, so that a session's
	// messages reach the stream in the order it sent them. The committer
	// stores them with whatever else arrived meanwhile and calls back once
	// JetStream has acknowledged: the RECEIPT means stored, as durably as
	// --durability says. A message on its way is stored even if its sender
	// goes.
	s.commit.Submit(room, data, msgID, func(_ uint64, err error) {
		if err != nil {
			s.cfg.Metrics.PublishFailed()
			done(s.storeError(room, err))
			return
		}
		s.cfg.Metrics.MessageStored(time.Since(start))
		done(nil)
	})
}

// storeError is what the sender of a message JetStream did not store is
// told: why, if it is something the client can mend.
func (s *Service) storeError(room string, err error) error {
	if errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
		// JSON escapes some characters to six bytes: a frame within
		// --max-frame-size can still make too large a message.
		return stompws.Errorf("message too large to store: more than %d bytes once encoded", s.msgs.Config().MaxMsgSize)
	}
	return fmt.Errorf("store message in %s: %w", room, err)
}

// logRequest is the optional body of /app/chat.{room}.log.
type logRequest struct {
	Before uint64 `json:"before"`
	Limit  int    `json:"limit"`
}

func (s *Service) history(ctx context.Context, sess *stompws.Session, room string, raw []byte) error {
	req := logRequest{Limit: DefaultLogLimit}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &req); err != nil {
			return stompws.Errorf("invalid log request: want JSON {\"before\":<id>,\"limit\":<1-%d>}", MaxLogLimit)
		}
	}
	if req.Limit <= 0 {
		return stompws.Errorf("invalid log request: limit must be 1 to %d", MaxLogLimit)
	}
	msgs, err := s.History(ctx, room, sess.User(), req.Before, req.Limit)
	if err != nil {
		return err
	}
	body, err := json.Marshal(msgs)
	if err != nil {
		return fmt.Errorf("encode history: %w", err)
	}
	return s.PublishToUser(sess.User(), LogQueue, body)
}

// History is Messages for user, who must be allowed in the room; limit is
// held to MaxLogLimit.
func (s *Service) History(ctx context.Context, room, user string, before uint64, limit int) ([]Message, error) {
	if err := s.authorize(ctx, room, user); err != nil {
		return nil, err
	}
	return s.Messages(ctx, room, before, min(limit, MaxLogLimit))
}

// Messages returns up to limit of the room's messages before the id
// (0: the newest), oldest first, with their current unread counts.
func (s *Service) Messages(ctx context.Context, room string, before uint64, limit int) ([]Message, error) {
	stored, err := s.msgs.Page(ctx, room, before, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", room, err)
	}
	if len(stored) < limit && s.cfg.Archive != nil {
		if stored, err = s.withArchived(ctx, room, before, limit, stored); err != nil {
			return nil, err
		}
	}
	msgs, _, err := s.chatMessages(ctx, room, stored)
	return msgs, err
}

// chatMessages decodes stored messages and gives each its current unread
// count; it also returns each message's passed-through SEND headers.
func (s *Service) chatMessages(ctx context.Context, room string, stored []natsbus.StoredMsg) ([]Message, [][][2]string, error) {
	msgs := make([]Message, 0, len(stored))
	hdrs := make([][][2]string, 0, len(stored))
	refs := make([]storage.MessageRef, 0, len(stored))
	for _, sm := range stored {
		st, err := decodeStored(sm)
		if err != nil {
			s.log.Warn("skipping undecodable message", "err", err)
			continue
		}
		msgs = append(msgs, Message{ID: sm.Seq, RoomID: room, UserID: st.UserID, Message: st.Message, CreatedAt: st.CreatedAt})
		hdrs = append(hdrs, st.Headers)
		refs = append(refs, storage.MessageRef{ID: sm.Seq, Sender: st.UserID})
	}
	unread, err := s.store.Unread(ctx, room, refs)
	if err != nil {
		return nil, nil, fmt.Errorf("unread counts of %s: %w", room, err)
	}
	for i := range msgs {
		msgs[i].UnreadCount = unread[i]
	}
	return msgs, hdrs, nil
}

// PublishToUser sends body to every session of user subscribed to
// /user/queue/{queue}, on every node.
func (s *Service) PublishToUser(user, queue string, body []byte) error {
	m := &nats.Msg{Subject: natsbus.UserSubject(user, queue), Data: body, Header: nats.Header{}}
	m.Header.Set("Content-Type", "application/json")
	if err := s.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("publish to %s: %w", m.Subject, err)
	}
	return nil
}

func (s *Service) markRead(ctx context.Context, sess *stompws.Session, room string, raw []byte) error {
	var req struct {
		LastReadID *uint64 `json:"lastReadId"`
	}
	if err := json.Unmarshal(raw, &req); err != nil || req.LastReadID == nil || *req.LastReadID == 0 {
		return stompws.Errorf("invalid read receipt: want JSON {\"lastReadId\":<message id>}")
	}
	_, err := s.MarkRead(ctx, room, sess.User(), *req.LastReadID)
	return err
}

// MarkRead moves user's read position in room forward to id (held to the
// room's newest message), tells the room's read-receipt subscribers if it
// moved, and returns the position.
func (s *Service) MarkRead(ctx context.Context, room, user string, lastReadID uint64) (uint64, error) {
	if err := s.authorize(ctx, room, user); err != nil {
		return 0, err
	}
	// A position past the room's newest message would mark messages not yet
	// written as read; hold it to the newest.
	latest, err := s.msgs.Latest(ctx, room, 0)
	if err != nil {
		return 0, fmt.Errorf("newest message of %s: %w", room, err)
	}
	prev, err := s.store.ReadMark(ctx, room, user)
	if err != nil {
		return 0, fmt.Errorf("read position: %w", err)
	}
	if latest == nil {
		return prev, nil // nothing to read yet
	}
	id := min(lastReadID, latest.Seq)
	pos, err := s.store.MarkRead(ctx, room, user, id)
	if err != nil {
		return 0, fmt.Errorf("mark read: %w", err)
	}
	if pos <= prev {
		return pos, nil // positions only move forward; nothing new to tell
	}
	body, err := json.Marshal(ReadEvent{RoomID: room, UserID: user, LastReadID: pos})
	if err != nil {
		return 0, fmt.Errorf("encode read event: %w", err)
	}
	m := &nats.Msg{Subject: natsbus.ReadSubject(room), Data: body, Header: nats.Header{}}
	m.Header.Set("Content-Type", "application/json")
	if err := s.nc.PublishMsg(m); err != nil {
		return 0, fmt.Errorf("publish read event: %w", err)
	}
	return pos, nil
}

// Subscribe implements stompws.Handler.
func (s *Service) Subscribe(ctx context.Context, sub *stompws.Subscription) error {
	d, derr := parseDestination(sub.Destination)
	if derr != nil {
		return derr
	}
	user := sub.Session().User()
	var stop func()
	switch d.kind {
	case destRoom:
		since, replay, err := sinceID(sub.Frame)
		if err != nil {
			return err
		}
		if err := s.authorize(ctx, d.name, user); err != nil {
			return err
		}
		stop, err = s.joinFeed(ctx, d.name, sub, since, replay)
		if err != nil {
			return err
		}
	case destRoomReads:
		if err := s.authorize(ctx, d.name, user); err != nil {
			return err
		}
		stop = s.joinFanout(natsbus.ReadSubject(d.name), sub)
	case destUserQueue:
		stop = s.joinFanout(natsbus.UserSubject(user, d.name), sub)
	default:
		return stompws.Errorf("cannot SUBSCRIBE to %s: subscribe to /topic/... or /user/queue/...", sub.Destination)
	}
	s.mu.Lock()
	s.subs[sub] = stop
	s.mu.Unlock()
	if room := roomOf(sub.Destination); room != "" && !s.cfg.AutoJoin {
		// A removal that landed while the subscription was being set up
		// found nothing to end: check again now that it is listed.
		if ok, err := s.store.IsMember(ctx, room, user); err != nil || !ok {
			s.Unsubscribe(sub)
			if err != nil {
				return fmt.Errorf("membership of %s: %w", room, err)
			}
			return notMember(room)
		}
	}
	return nil
}

func sinceID(f *stompws.Frame) (uint64, bool, error) {
	v, ok := f.Get("since-id")
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, stompws.Errorf("invalid since-id %q: want a message id (a non-negative integer)", v)
	}
	return n, true, nil
}

// Unsubscribe implements stompws.Handler.
func (s *Service) Unsubscribe(sub *stompws.Subscription) {
	s.mu.Lock()
	stop := s.subs[sub]
	delete(s.subs, sub)
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Close waits for in-flight work and stops every feed. Sessions must be
// closed first.
func (s *Service) Close() {
	s.wg.Wait()
	s.mu.Lock()
	feeds := s.feeds
	fans := s.fanouts
	s.feeds, s.fanouts = map[string]*roomFeed{}, map[string]*fanout{}
	s.mu.Unlock()
	for _, f := range feeds {
		f.stop()
	}
	for _, f := range fans {
		_ = f.sub.Unsubscribe()
	}
}
