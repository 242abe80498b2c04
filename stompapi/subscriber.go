package stompapi

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
)

// History headers on a subscription's first MESSAGE (docs/protocol.md).
const (
	historyHeader        = "history"
	historyFirstIDHeader = "history-first-id"
)

// subscriber is a STOMP subscription as the domain's chat.Subscriber.
type subscriber struct {
	h  *Handler
	ss *stompws.Subscription
}

var _ chat.Subscriber = (*subscriber)(nil)

// encoded is a publication's MESSAGE, kept on the publication for every
// subscription to the same destination.
type encoded struct {
	dest string
	msg  *stompws.Message
}

// message is p as a MESSAGE to this subscription's destination, encoded
// once for all the subscriptions p goes to.
func (s *subscriber) message(p *chat.Publication) *stompws.Message {
	dest := s.ss.Destination
	if e, ok := p.Encoding(s.h).(*encoded); ok && e.dest == dest {
		return e.msg
	}
	hdr := make([]frame.Header, 0, 1+len(p.Headers))
	if p.ContentType != "" {
		hdr = append(hdr, frame.Header{Name: "content-type", Value: p.ContentType})
	}
	for _, kv := range p.Headers {
		hdr = append(hdr, frame.Header{Name: kv[0], Value: kv[1]})
	}
	m := stompws.NewMessage(dest, hdr, p.Body)
	p.SetEncoding(s.h, &encoded{dest: dest, msg: m})
	return m
}

func noteHeaders(n chat.Note) []frame.Header {
	var kind string
	switch n.Kind {
	case chat.NoteGap:
		kind = "gap"
	case chat.NoteReset:
		kind = "reset"
	default:
		return nil
	}
	return []frame.Header{{Name: historyHeader, Value: kind}, {Name: historyFirstIDHeader, Value: strconv.FormatUint(n.FirstID, 10)}}
}

// Deliver implements chat.Subscriber.
func (s *subscriber) Deliver(p *chat.Publication, note chat.Note) bool {
	return s.ss.Queue(s.message(p), noteHeaders(note)...)
}

// Flush implements chat.Subscriber.
func (s *subscriber) Flush() { s.ss.Session().Flush() }

// DeliverWait implements chat.Subscriber.
func (s *subscriber) DeliverWait(ctx context.Context, p *chat.Publication, note chat.Note) error {
	return s.ss.DeliverWait(ctx, s.message(p), noteHeaders(note)...)
}

// End implements chat.Subscriber.
func (s *subscriber) End(err error) {
	se, ok := clientError(err).(*stompws.Error)
	if !ok {
		se = &stompws.Error{Kind: stompws.KindInternal, Message: "internal error"}
	}
	s.ss.Session().Close(se)
}

// Logger implements chat.Subscriber.
func (s *subscriber) Logger() *slog.Logger { return s.ss.Session().Logger() }
