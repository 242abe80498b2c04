package natsbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/chatd/chatd/storage"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// ConsumerConfig shapes a durable consumer of the messages streams.
type ConsumerConfig struct {
	// Name is the durable name; every node asking for the same name shares
	// the one consumer, and each message goes to one of them.
	Name        string
	Description string
	// AckWait is how long a delivered message may stay unacknowledged
	// before JetStream hands it out again.
	AckWait time.Duration
	// MaxAckPending bounds the messages delivered and not yet
	// acknowledged, across every node.
	MaxAckPending int
}

// Consumer is a durable consumer of every room message, from the first
// the streams hold, each acknowledged explicitly (at least once): one
// JetStream consumer of the same name on each partition's stream.
type Consumer struct {
	log  *MessageLog
	cfg  ConsumerConfig
	cons []jetstream.Consumer // by partition
}

// Delivery is one message handed to a Consumer: acknowledge it once it is
// dealt with.
type Delivery struct {
	storage.Message
	msg jetstream.Msg
}

// Ack says the message is dealt with. A lost acknowledgement means one
// redelivery, so it is not awaited.
func (d Delivery) Ack() { _ = d.msg.Ack() }

// Nak hands the message back for redelivery at once.
func (d Delivery) Nak() { _ = d.msg.Nak() }

// InProgress asks for another AckWait before the message is handed out
// again.
func (d Delivery) InProgress() { _ = d.msg.InProgress() }

// Consumer creates the durable consumer, or updates it to cfg. Every node
// asks with the same settings, so whichever asks first makes it.
func (l *MessageLog) Consumer(ctx context.Context, cfg ConsumerConfig) (*Consumer, error) {
	c := &Consumer{log: l, cfg: cfg, cons: make([]jetstream.Consumer, len(l.parts))}
	if err := c.Ensure(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Ensure makes the consumer again if it is gone (a stream was rebuilt,
// or someone deleted it); harmless if it is not.
func (c *Consumer) Ensure(ctx context.Context) error {
	for i, p := range c.log.parts {
		if err := c.ensure(ctx, i, p); err != nil {
			return err
		}
	}
	return nil
}

func (c *Consumer) ensure(ctx context.Context, i int, p *logPart) error {
	return retry(ctx, c.log.log, "consumer "+c.cfg.Name+" of "+p.name, func(ctx context.Context) error {
		cons, err := c.log.js.CreateOrUpdateConsumer(ctx, p.name, jetstream.ConsumerConfig{
			Durable:       c.cfg.Name,
			Description:   c.cfg.Description,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       c.cfg.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: c.cfg.MaxAckPending,
		})
		if err == nil {
			c.cons[i] = cons
		}
		return err
	})
}

// Fetch takes up to max messages from each partition, waiting at most
// wait for them; none is not an error. Where some partitions fail, what
// the others fetched comes with the error, to be dealt with (unacknowledged,
// it would only come again after AckWait); Ensure mends a consumer that is
// gone. Only one goroutine may call Fetch and Ensure.
func (c *Consumer) Fetch(ctx context.Context, max int, wait time.Duration) ([]Delivery, error) {
	got := make([][]Delivery, len(c.cons))
	errs := make([]error, len(c.cons))
	var wg sync.WaitGroup
	for i, cons := range c.cons {
		wg.Go(func() {
			if got[i], errs[i] = c.fetch(ctx, cons, max, wait); errs[i] != nil {
				errs[i] = fmt.Errorf("%s: %w", c.log.parts[i].name, errs[i])
			}
		})
	}
	wg.Wait()
	return slices.Concat(got...), errors.Join(errs...)
}

func (c *Consumer) fetch(ctx context.Context, cons jetstream.Consumer, max int, wait time.Duration) ([]Delivery, error) {
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	batch, err := cons.Fetch(max, jetstream.FetchContext(fctx))
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	var out []Delivery
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to hand out, nothing to ack.
			c.log.log.Error("consumer: skipping message without metadata", "consumer", c.cfg.Name, "subject", m.Subject(), "err", err)
			continue
		}
		room, _ := c.log.names.roomFromSubject(m.Subject())
		out = append(out, Delivery{
			Message: storage.Message{ID: md.Sequence.Stream, Room: room, Data: m.Data(), Time: md.Timestamp},
			msg:     m,
		})
	}
	if err := batch.Error(); err != nil && len(out) == 0 && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, jetstream.ErrNoMessages) {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return out, nil
}

// ConsumerState is where one partition's consumer stands.
type ConsumerState struct {
	// Stream is the partition's stream.
	Stream string
	// AckFloor is the id up to which every message of the partition was
	// acknowledged, by whichever node (JetStream's ack floor).
	AckFloor uint64
	// Acked reports whether any message was acknowledged yet: a consumer
	// just made starts with its floor below the stream's first message.
	Acked bool
}

// ConsumerStates are a consumer's states, partition by partition.
type ConsumerStates struct {
	names Names
	parts []ConsumerState
}

// Of returns the state of the consumer of the room's partition.
func (s ConsumerStates) Of(room string) ConsumerState {
	if len(s.parts) == 0 {
		return ConsumerState{}
	}
	return s.parts[s.names.Partition(room)]
}

// All returns every partition's.
func (s ConsumerStates) All() []ConsumerState { return s.parts }

// States asks each partition's consumer where it stands. An ack floor only
// rises during a consumer's life.
func (c *Consumer) States(ctx context.Context) (ConsumerStates, error) {
	parts := make([]ConsumerState, len(c.log.parts))
	g, gctx := errgroup.WithContext(ctx)
	for i, p := range c.log.parts {
		g.Go(func() error {
			// A fresh handle: the ones Fetch uses belong to its goroutine.
			cons, err := c.log.js.Consumer(gctx, p.name, c.cfg.Name)
			if err != nil {
				return fmt.Errorf("consumer info of %s: %w", p.name, readErr(err))
			}
			info := cons.CachedInfo()
			parts[i] = ConsumerState{
				Stream:   p.name,
				AckFloor: info.AckFloor.Stream,
				Acked:    info.AckFloor.Consumer > 0,
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return ConsumerStates{}, err
	}
	return ConsumerStates{names: c.log.names, parts: parts}, nil
}

// FloorMessage returns the message at the state's ack floor, nil if none
// was acknowledged or the stream no longer holds it.
func (c *Consumer) FloorMessage(ctx context.Context, st ConsumerState) (*storage.Message, error) {
	if !st.Acked {
		return nil, nil
	}
	for _, p := range c.log.parts {
		if p.name == st.Stream {
			msgs, err := c.log.direct(ctx, p, directReq{Seq: st.AckFloor})
			if err != nil || len(msgs) == 0 || msgs[0].ID != st.AckFloor {
				return nil, err
			}
			return &msgs[0], nil
		}
	}
	return nil, fmt.Errorf("consumer %s: no stream %s", c.cfg.Name, st.Stream)
}

// Remake deletes the consumer of stream and makes it again, to deliver
// every message the stream holds from its first. Only the goroutine that
// calls Fetch may call it.
func (c *Consumer) Remake(ctx context.Context, stream string) error {
	for i, p := range c.log.parts {
		if p.name != stream {
			continue
		}
		err := c.log.js.DeleteConsumer(ctx, p.name, c.cfg.Name)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s of %s: %w", c.cfg.Name, p.name, readErr(err))
		}
		return c.ensure(ctx, i, p)
	}
	return fmt.Errorf("consumer %s: no stream %s", c.cfg.Name, stream)
}

// Backlog is how many messages the consumer has not had acknowledged, by
// any node, in every partition, and when the oldest of them was stored
// (zero if none).
func (c *Consumer) Backlog(ctx context.Context) (pending uint64, oldest time.Time, err error) {
	for _, p := range c.log.parts {
		n, at, err := c.backlog(ctx, p)
		if err != nil {
			return 0, time.Time{}, err
		}
		pending += n
		if !at.IsZero() && (oldest.IsZero() || at.Before(oldest)) {
			oldest = at
		}
	}
	return pending, oldest, nil
}

func (c *Consumer) backlog(ctx context.Context, p *logPart) (pending uint64, oldest time.Time, err error) {
	// A fresh handle: the ones Fetch uses belong to its goroutine.
	cons, err := c.log.js.Consumer(ctx, p.name, c.cfg.Name)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("consumer info of %s: %w", p.name, err)
	}
	info := cons.CachedInfo()
	pending = info.NumPending + uint64(info.NumAckPending)
	if pending == 0 {
		return 0, time.Time{}, nil
	}
	m, err := p.stream.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(p.subjects))
	if err != nil {
		return pending, time.Time{}, fmt.Errorf("oldest unacknowledged message of %s: %w", p.name, err)
	}
	return pending, m.Time, nil
}
