package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/chatd/chatd/storage"
)

// MaxClientMsgID bounds a sender's own id for a message.
const MaxClientMsgID = 128

// Post stores a message that user sends to room. body is the message as
// the client wrote it (a JSON object with a non-empty text field, named
// by Config.Fields); headers are
// passed through to every client that receives it; clientID, if set, is
// the sender's own id for it, so that a resend stores nothing twice. done
// is called once: nil when the message is stored (as durably as the
// deployment says), else why not.
//
// Post hands the message to the committer before it returns, so that a
// sender who posts from one goroutine has its messages stored in the
// order it sent them; with seq (nil: none), a message that is not stored
// keeps every later one of seq's from being stored (Sequence). A message
// on its way is stored even if its sender goes.
func (s *Service) Post(ctx context.Context, seq *Sequence, user, room string, body []byte, headers [][2]string, clientID string, done func(error)) {
	if !ValidRoomID(room) {
		done(errInvalidRoom)
		return
	}
	d, err := s.cfg.Fields.parseDraft(body, s.cfg.KeepClientFields)
	if err != nil {
		done(err)
		return
	}
	if len(clientID) > MaxClientMsgID {
		done(errorf(Invalid, "invalid client-msg-id: 1 to %d characters", MaxClientMsgID))
		return
	}
	if err := s.authorize(ctx, room, user); err != nil {
		done(err)
		return
	}
	others, err := s.store.Others(ctx, room, user)
	if err != nil {
		done(fmt.Errorf("members of %s: %w", room, err))
		return
	}
	data, err := json.Marshal(storedMessage{
		RoomID:    room,
		UserID:    user,
		Message:   d.text,
		Extra:     d.extra,
		CreatedAt: formatTime(time.Now()),
		Headers:   headers,
		Unread:    &others,
	})
	if err != nil {
		done(fmt.Errorf("encode message: %w", err))
		return
	}
	if limit := s.msgs.MaxMessageSize(); limit > 0 && len(data) > limit {
		// Refused here rather than by the log, which would refuse it
		// only after later messages of the sender's were written.
		done(errorf(TooLarge, "message too large to store: more than %d bytes once encoded", limit))
		return
	}
	var n uint64
	var abandon func() error
	if seq != nil {
		if n, err = seq.take(); err != nil {
			done(err)
			return
		}
		abandon = func() error { return seq.blocked(n) }
	}
	start := time.Now()
	s.commit.Submit(room, data, user, clientID, abandon, func(_ uint64, err error) {
		if seq != nil {
			defer seq.finish(n)
		}
		if err != nil {
			err = s.storeError(room, err)
			if seq != nil {
				seq.fail(n, err)
			}
			s.cfg.Metrics.PublishFailed()
			done(err)
			return
		}
		s.cfg.Metrics.MessageStored(time.Since(start))
		done(nil)
	})
}

// storeError is what the sender of a message the log did not store is
// told: why, if it is something the client can mend.
func (s *Service) storeError(room string, err error) error {
	if errors.Is(err, storage.ErrTooLarge) {
		// JSON escapes some characters to six bytes: a frame within the
		// frame limit can still make too large a message.
		return errorf(TooLarge, "message too large to store: more than %d bytes once encoded", s.msgs.MaxMessageSize())
	}
	if e, ok := AsError(err); ok {
		return e // unavailable, or an earlier message's for the rest of its Sequence
	}
	return fmt.Errorf("store message in %s: %w", room, err)
}
