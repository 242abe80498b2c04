package chat

import (
	"context"
	"fmt"
)

// The subscriptions: a room's messages, a room's read events and a user's
// queues. Each returns a stop func that ends it; ctx must last as long as
// the subscription (the session's), for a replay runs under it.

// SubscribeRoom delivers room's messages to sub as they are stored. With
// since set it first delivers the room's stored messages after *since,
// then the live ones, with no gap and no duplicate (a replay); where the
// history after *since is no longer whole, the first message carries a
// Note. Only members may subscribe.
func (s *Service) SubscribeRoom(ctx context.Context, user, room string, since *uint64, sub Subscriber) (stop func(), err error) {
	if !ValidRoomID(room) {
		return nil, errInvalidRoom
	}
	if err := s.authorize(ctx, room, user); err != nil {
		return nil, err
	}
	var from uint64
	if since != nil {
		from = *since
	}
	leave, err := s.joinFeed(ctx, room, sub, from, since != nil)
	if err != nil {
		return nil, err
	}
	return s.asMember(ctx, room, user, sub, leave)
}

// SubscribeReads delivers room's read events (ReadEvent) to sub. Only
// members may subscribe.
func (s *Service) SubscribeReads(ctx context.Context, user, room string, sub Subscriber) (stop func(), err error) {
	if !ValidRoomID(room) {
		return nil, errInvalidRoom
	}
	if err := s.authorize(ctx, room, user); err != nil {
		return nil, err
	}
	leave, err := s.joinTopic(ctx, "read:"+room, sub, func(fn func([]byte, string)) (func(), error) {
		return s.bus.WatchReads(room, fn)
	})
	if err != nil {
		return nil, err
	}
	return s.asMember(ctx, room, user, sub, leave)
}

// SubscribeQueue delivers what is published to user's queue to sub:
// history replies (LogQueue) and whatever backend services send there.
func (s *Service) SubscribeQueue(ctx context.Context, user, queue string, sub Subscriber) (stop func(), err error) {
	if !ValidQueueName(queue) {
		return nil, errorf(Invalid, "invalid queue name: segments of [A-Za-z0-9_-] joined by dots, at most %d characters", MaxNameLen)
	}
	return s.joinTopic(ctx, "user:"+queue+":"+user, sub, func(fn func([]byte, string)) (func(), error) {
		return s.bus.WatchUser(user, queue, fn)
	})
}

var errInvalidRoom = errorf(Invalid, "invalid room id: 1 to %d characters of [A-Za-z0-9_-]", MaxNameLen)

// asMember lists a member's subscription to room, so that removing the
// member ends it, and checks the membership once more: a removal that
// landed while the subscription was being set up found nothing to end.
func (s *Service) asMember(ctx context.Context, room, user string, sub Subscriber, leave func()) (func(), error) {
	key := roomUser{room, user}
	s.mu.Lock()
	set := s.members[key]
	if set == nil {
		set = map[Subscriber]struct{}{}
		s.members[key] = set
	}
	set[sub] = struct{}{}
	s.mu.Unlock()
	stop := func() {
		s.mu.Lock()
		if set := s.members[key]; set != nil {
			delete(set, sub)
			if len(set) == 0 {
				delete(s.members, key)
			}
		}
		s.mu.Unlock()
		leave()
	}
	if !s.cfg.AutoJoin {
		if ok, err := s.store.IsMember(ctx, room, user); err != nil || !ok {
			stop()
			if err != nil {
				return nil, fmt.Errorf("membership of %s: %w", room, err)
			}
			return nil, notMember(room)
		}
	}
	return stop, nil
}

// memberLeft ends every local subscription of user to room or its read
// events, telling the client why: a removed member stops receiving at
// once.
func (s *Service) memberLeft(room, user string) {
	s.mu.Lock()
	subs := make([]Subscriber, 0, len(s.members[roomUser{room, user}]))
	for sub := range s.members[roomUser{room, user}] {
		subs = append(subs, sub)
	}
	s.mu.Unlock()
	for _, sub := range subs {
		sub.Logger().Info("member removed from room: ending session", "room", room)
		sub.End(errorf(Forbidden, "forbidden: no longer a member of room %s", room))
	}
}
