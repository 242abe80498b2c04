package chat

import (
	"sync"

	"github.com/chatd/chatd/stompws"
	"github.com/nats-io/nats.go"
)

// fanout delivers one core NATS subject (a user queue, a room's read
// events) to this node's subscribers of it. The node holds one NATS
// subscription per subject while it has local subscribers, none otherwise.
type fanout struct {
	sub     *nats.Subscription
	metrics Metrics

	mu   sync.RWMutex
	dest string
	subs map[*stompws.Subscription]struct{}
}

func (s *Service) joinFanout(subject string, sub *stompws.Subscription) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fanouts[subject]
	if f == nil {
		f = &fanout{dest: sub.Destination, subs: map[*stompws.Subscription]struct{}{}, metrics: s.cfg.Metrics}
		ns, err := s.nc.Subscribe(subject, f.deliver)
		if err != nil {
			// Only a closed connection fails here; the session ends with it.
			s.log.Error("subscribe", "subject", subject, "err", err)
			return func() {}
		}
		f.sub = ns
		s.fanouts[subject] = f
	}
	f.mu.Lock()
	f.subs[sub] = struct{}{}
	f.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		f.mu.Lock()
		delete(f.subs, sub)
		empty := len(f.subs) == 0
		f.mu.Unlock()
		if empty && s.fanouts[subject] == f {
			delete(s.fanouts, subject)
			_ = f.sub.Unsubscribe()
		}
	}
}

// deliver encodes the NATS message once and queues it to every subscriber.
func (f *fanout) deliver(m *nats.Msg) {
	var hdr []stompws.Header
	if ct := m.Header.Get("Content-Type"); ct != "" {
		hdr = []stompws.Header{{Name: "content-type", Value: ct}}
	}
	msg := stompws.NewMessage(f.dest, hdr, m.Data)
	f.mu.RLock()
	defer f.mu.RUnlock()
	many := len(f.subs) > inlineFanout
	sent, dropped := 0, 0
	for sub := range f.subs {
		if deliverTo(sub, many, msg) {
			sent++
		} else {
			dropped++
		}
	}
	if sent > 0 {
		f.metrics.Delivered(DeliveryQueue, sent)
	}
	if dropped > 0 {
		f.metrics.Dropped(dropped)
	}
}
