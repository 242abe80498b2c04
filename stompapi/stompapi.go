// Package stompapi is chat over STOMP: it implements stompws.Handler,
// turning destinations, headers and bodies into calls of the chat domain
// (chat.Service) and the domain's errors into ERROR frames, and delivers
// the domain's publications as MESSAGE frames.
package stompapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/stompapi/dest"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
)

// Authenticator checks a STOMP CONNECT (auth.JWT, or auth.Dev in dev mode).
type Authenticator interface {
	Authenticate(ctx context.Context, req *stompws.ConnectRequest) (stompws.Principal, error)
}

// Handler serves chat's destinations.
type Handler struct {
	svc        *chat.Service
	auth       Authenticator
	log        *slog.Logger
	dests      dest.Set
	destDetail string

	mu   sync.Mutex
	subs map[*stompws.Subscription]func() // stops the domain's side
	// seqs holds each session's *chat.Sequence: read on every SEND, from
	// every session, so a sync.Map rather than mu.
	seqs sync.Map
	wg   sync.WaitGroup
}

// ownWrites waits until the session's SENDs so far are stored or have
// failed: a history request or a replay that follows a SEND sees it.
func (h *Handler) ownWrites(ctx context.Context, s *stompws.Session) error {
	q, ok := h.seqs.Load(s)
	if !ok {
		return nil
	}
	return q.(*chat.Sequence).Settled(ctx)
}

// sequence is the session's chat.Sequence, made at its first SEND and
// forgotten when it ends: a SEND that is not stored keeps the session's
// later ones from being stored.
func (h *Handler) sequence(s *stompws.Session) *chat.Sequence {
	if q, ok := h.seqs.Load(s); ok {
		return q.(*chat.Sequence)
	}
	// Only the session's read loop sends: no other first SEND races this.
	q := chat.NewSequence()
	h.seqs.Store(s, q)
	context.AfterFunc(s.Context(), func() { h.seqs.Delete(s) })
	return q
}

var _ stompws.Handler = (*Handler)(nil)

// New returns a handler that serves svc at dests to sessions auth lets
// in.
func New(svc *chat.Service, auth Authenticator, dests dest.Set, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	return &Handler{svc: svc, auth: auth, log: log, dests: dests, destDetail: describe(dests),
		subs: map[*stompws.Subscription]func(){}}
}

// Authenticate implements stompws.Handler.
func (h *Handler) Authenticate(ctx context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	return h.auth.Authenticate(ctx, req)
}

// Send implements stompws.Handler: the /app destinations.
func (h *Handler) Send(ctx context.Context, s *stompws.Session, f *frame.Frame, done func(error)) {
	d, derr := h.route(f.Value("destination"))
	if derr != nil {
		done(derr)
		return
	}
	user := s.User()
	switch d.kind {
	case destPost:
		cid, ok := f.Get("client-msg-id")
		if ok && cid == "" {
			done(stompws.Errorf(stompws.KindRequest, "invalid client-msg-id: 1 to %d characters", chat.MaxClientMsgID))
			return
		}
		// Posted here, on the session's read loop, so that a session's
		// messages are stored in the order it sent them.
		h.svc.Post(ctx, h.sequence(s), user, d.name, f.Body, passThrough(f), cid, func(err error) { done(clientError(err)) })
	case destLog:
		h.async(func() {
			if err := h.ownWrites(ctx, s); err != nil {
				done(err)
				return
			}
			done(clientError(h.history(ctx, user, d.name, f.Body)))
		})
	case destMarkRead:
		h.async(func() { done(clientError(h.markRead(ctx, user, d.name, f.Body))) })
	default:
		done(stompws.Errorf(stompws.KindDestination, "cannot SEND to %s: clients send to %s", f.Value("destination"), h.dests.Send))
	}
}

func (h *Handler) async(fn func()) { h.wg.Go(fn) }

// logRequest is the optional body of a history request.
type logRequest struct {
	Before uint64 `json:"before"`
	Limit  int    `json:"limit"`
}

// history answers a history request on the user's history reply queue.
func (h *Handler) history(ctx context.Context, user, room string, raw []byte) error {
	req := logRequest{Limit: chat.DefaultLogLimit}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &req); err != nil {
			return stompws.Errorf(stompws.KindRequest, "invalid log request: want JSON {\"before\":<id>,\"limit\":<1-%d>}", chat.MaxLogLimit)
		}
	}
	if req.Limit <= 0 {
		return stompws.Errorf(stompws.KindRequest, "invalid log request: limit must be 1 to %d", chat.MaxLogLimit)
	}
	return h.svc.SendHistory(ctx, user, room, req.Before, req.Limit, h.dests.HistoryReply)
}

// markRead is a read receipt: {"lastReadId":N}.
func (h *Handler) markRead(ctx context.Context, user, room string, raw []byte) error {
	var req struct {
		LastReadID *uint64 `json:"lastReadId"`
	}
	if err := json.Unmarshal(raw, &req); err != nil || req.LastReadID == nil || *req.LastReadID == 0 {
		return stompws.Errorf(stompws.KindRequest, "invalid read receipt: want JSON {\"lastReadId\":<message id>}")
	}
	_, err := h.svc.MarkRead(ctx, user, room, *req.LastReadID)
	return err
}

// Subscribe implements stompws.Handler.
func (h *Handler) Subscribe(ctx context.Context, sub *stompws.Subscription) error {
	d, derr := h.route(sub.Destination)
	if derr != nil {
		return derr
	}
	user := sub.Session().User()
	recv := &subscriber{h: h, ss: sub}
	var stop func()
	var err error
	switch d.kind {
	case destRoom:
		since, serr := sinceID(sub.Frame)
		if serr != nil {
			return serr
		}
		if since != nil {
			if err := h.ownWrites(ctx, sub.Session()); err != nil {
				return err
			}
		}
		stop, err = h.svc.SubscribeRoom(ctx, user, d.name, since, recv)
	case destRoomReads:
		stop, err = h.svc.SubscribeReads(ctx, user, d.name, recv)
	case destUserQueue:
		stop, err = h.svc.SubscribeQueue(ctx, user, d.name, recv)
	default:
		return stompws.Errorf(stompws.KindDestination, "cannot SUBSCRIBE to %s: subscribe to %s, %s or %s", sub.Destination, h.dests.Room, h.dests.ReadEvents, h.dests.Queue)
	}
	if err != nil {
		return clientError(err)
	}
	h.mu.Lock()
	h.subs[sub] = stop
	h.mu.Unlock()
	return nil
}

// sinceID reads a SUBSCRIBE's since-id header: nil if it has none.
func sinceID(f *frame.Frame) (*uint64, error) {
	v, ok := f.Get("since-id")
	if !ok {
		return nil, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, stompws.Errorf(stompws.KindRequest, "invalid since-id %q: want a message id (a non-negative integer)", v)
	}
	return &n, nil
}

// Unsubscribe implements stompws.Handler.
func (h *Handler) Unsubscribe(sub *stompws.Subscription) {
	h.mu.Lock()
	stop := h.subs[sub]
	delete(h.subs, sub)
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Close waits for the requests in flight. Sessions must be ended first.
func (h *Handler) Close() { h.wg.Wait() }

// clientError makes a domain error an ERROR frame's: its message and the
// kind metrics count it by. Any other error stays as it is, and reaches
// the client as "internal error" (stompws logs it).
func clientError(err error) error {
	ce, ok := chat.AsError(err)
	if !ok {
		return err
	}
	return &stompws.Error{Kind: errorKind(ce.Kind), Message: ce.Msg, Detail: ce.Detail}
}

func errorKind(k chat.Kind) string {
	switch k {
	case chat.Forbidden:
		return stompws.KindForbidden
	case chat.TooLarge:
		return stompws.KindLimit
	case chat.Unavailable:
		return stompws.KindUnavailable
	case chat.Internal:
		return stompws.KindInternal
	}
	return stompws.KindRequest
}

// reserved reports STOMP's own headers and chatd's control headers: they
// are never passed through from a SEND to the MESSAGEs it becomes.
func reserved(name string) bool {
	switch name {
	case "destination", "receipt", "transaction", "content-length", "content-type", "client-msg-id",
		"subscription", "message-id", "ack", "id", historyHeader, historyFirstIDHeader:
		return true
	}
	return false
}

// passThrough is the SEND's headers that go on to every MESSAGE.
func passThrough(f *frame.Frame) [][2]string {
	var out [][2]string
	for _, h := range f.Headers {
		if !reserved(h.Name) {
			out = append(out, [2]string{h.Name, h.Value})
		}
	}
	return out
}
