package chat

import "time"

// Metrics is told what the service does, for monitoring. Its methods run
// on delivery paths, some under a room's lock: they must be quick and must
// not block. Config.Metrics nil means nothing is told.
type Metrics interface {
	// MessageStored is called when a posted message is stored, with how
	// long that took.
	MessageStored(took time.Duration)
	// PublishFailed is called when storing a posted message failed.
	PublishFailed()
	// LiveReceived is called for each room message the bus brings this
	// node for its own subscribers: with interest-based fan-out, only
	// rooms with local subscribers add to it.
	LiveReceived()
	// Delivered counts n messages handed to subscriptions.
	Delivered(path DeliveryPath, n int)
	// Dropped counts n deliveries that subscriptions refused: the
	// subscription had just ended, or its client was cut off as a slow
	// consumer.
	Dropped(n int)
	// Replayed is called once for every room subscription with a since
	// id, with how the replay began.
	Replayed(outcome ReplayOutcome)
	// HistoryPage is called for each history page read, with where it
	// was read from.
	HistoryPage(from HistorySource)
	// ReplayRead is called for each batch a replay reads, with where it
	// came from; ReplayShareChanged with how much what the rooms'
	// replays hold for each other on this node grew (or, negative, shrank).
	ReplayRead(from ReplaySource)
	ReplayShareChanged(delta int64)
}

// ReplaySource says where a replay's batch came from.
type ReplaySource int

// Replay sources.
const (
	// ReplayFromStore: the log or the archive.
	ReplayFromStore ReplaySource = iota
	// ReplayShared: what another replay of the room on this node read.
	ReplayShared
)

// HistorySource says where a history page was read from.
type HistorySource int

// History sources.
const (
	// HistoryFromLog: the log, and the archive only past what the log
	// holds.
	HistoryFromLog HistorySource = iota
	// HistoryFromArchive: the archive up to its reach, the log only above.
	HistoryFromArchive
)

// DeliveryPath says how a delivered message reached a subscription.
type DeliveryPath int

// Delivery paths.
const (
	DeliveryLive   DeliveryPath = iota // a room message as it was stored
	DeliveryReplay                     // a room message replayed after since-id
	DeliveryQueue                      // a user queue or read-receipt event
)

// ReplayOutcome is how a since-id replay began.
type ReplayOutcome int

// Replay outcomes (docs/protocol.md: the history header).
const (
	ReplayComplete ReplayOutcome = iota // everything after since-id follows
	ReplayGap                           // history:gap
	ReplayReset                         // history:reset
	ReplayFailed                        // history unavailable: the session was closed
)

type nopMetrics struct{}

func (nopMetrics) MessageStored(time.Duration) {}
func (nopMetrics) PublishFailed()              {}
func (nopMetrics) LiveReceived()               {}
func (nopMetrics) Delivered(DeliveryPath, int) {}
func (nopMetrics) Dropped(int)                 {}
func (nopMetrics) Replayed(ReplayOutcome)      {}
func (nopMetrics) HistoryPage(HistorySource)   {}
func (nopMetrics) ReplayRead(ReplaySource)     {}
func (nopMetrics) ReplayShareChanged(int64)    {}
