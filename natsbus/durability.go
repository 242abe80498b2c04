package natsbus

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Durability is what JetStream's acknowledgement of a room message, and so
// chatd's RECEIPT, means (docs/operations.md, Durability).
type Durability string

const (
	// DurabilityFsync: the message is on disk on every replica that
	// acknowledged it, a quorum of the stream's replicas. An embedded
	// cluster node syncs every write before acknowledging it (nats-server's
	// sync_interval: always), group commit making that one Raft log sync
	// per batch; one embedded server leaves its writes unsynced and chatd
	// syncs the batch's block file before the RECEIPTs (Bus.Sync).
	DurabilityFsync Durability = "fsync"
	// DurabilityReplicated: the message is in the memory of a quorum of
	// replicas (written to the operating system on each); it reaches disk
	// within nats-server's sync_interval, 2 minutes by default.
	DurabilityReplicated Durability = "replicated"
	// DurabilityFast: one replica, which acknowledges a message still in
	// its own memory and writes it to the operating system within
	// milliseconds (JetStream's async persist mode).
	DurabilityFast Durability = "fast"
)

// persistMode is the stream's persist mode for d. JetStream cannot change
// it once the stream exists.
func (d Durability) persistMode() jetstream.PersistModeType {
	if d == DurabilityFast {
		return jetstream.AsyncPersistMode
	}
	return jetstream.DefaultPersistMode
}

// streamDiff lists, as "field: has → wants", how the stream's settings that
// chatd chooses differ between have and want.
func streamDiff(have, want jetstream.StreamConfig) []string {
	var out []string
	add := func(field string, h, w any) {
		if fmt.Sprint(h) != fmt.Sprint(w) {
			out = append(out, fmt.Sprintf("%s: %v → %v", field, h, w))
		}
	}
	add("subjects", strings.Join(have.Subjects, ","), strings.Join(want.Subjects, ","))
	add("storage", have.Storage, want.Storage)
	add("replicas", have.Replicas, want.Replicas)
	add("max_age", have.MaxAge, want.MaxAge)
	add("max_msgs_per_subject", have.MaxMsgsPerSubject, want.MaxMsgsPerSubject)
	add("max_msg_size", have.MaxMsgSize, want.MaxMsgSize)
	if want.Duplicates != 0 { // 0 takes the server's default
		add("duplicate_window", have.Duplicates, want.Duplicates)
	}
	add("persist_mode", persistName(have.PersistMode), persistName(want.PersistMode))
	add("allow_atomic", have.AllowAtomicPublish, want.AllowAtomicPublish)
	return out
}

func persistName(m jetstream.PersistModeType) string {
	if m == jetstream.AsyncPersistMode {
		return "async"
	}
	return "default"
}
