package natsbus

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// DefaultPrefix begins chatd's subjects (chat.msg.<room>) and, in
// capitals, its stream's and buckets' names (CHAT_MESSAGES, CHAT_ROOMS).
const DefaultPrefix = "chat"

// maxPrefixLen bounds a prefix: names stay short, well within
// JetStream's limits.
const maxPrefixLen = 32

// Names are the NATS subjects, stream and buckets of one chatd deployment
// (Options.Prefix), part of chatd's contract (docs/protocol.md): backend
// services publish and subscribe to them with any NATS client. Each
// subject's first token is the prefix and each stream's and bucket's name
// starts with it in capitals, so deployments with different prefixes
// share a NATS without touching each other's data.
type Names struct {
	prefix string // "chat"
	upper  string // "CHAT"
	parts  int    // message streams; 0 stands for 1
}

// MaxPartitions bounds --partitions: each partition is a stream, a Raft
// group in a cluster, with its own leader election and store.
const MaxPartitions = 64

// NewNames returns the names of prefix: 1 to 32 characters of [a-z0-9_-],
// starting with a letter (lower case, so that its capitals name no other
// prefix's stream).
func NewNames(prefix string) (Names, error) {
	if prefix == "" || len(prefix) > maxPrefixLen || prefix[0] < 'a' || prefix[0] > 'z' {
		return Names{}, fmt.Errorf("prefix %q: 1 to %d characters, starting with a lower-case letter", prefix, maxPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; c >= 'A' && c <= 'Z' || !tokenByte(c) {
			return Names{}, fmt.Errorf("prefix %q: only a-z, 0-9, _ and -", prefix)
		}
	}
	return Names{prefix: prefix, upper: strings.ToUpper(prefix)}, nil
}

// DefaultNames are the names of DefaultPrefix.
func DefaultNames() Names { return Names{prefix: DefaultPrefix, upper: strings.ToUpper(DefaultPrefix)} }

// WithPartitions returns the names with the room messages spread over
// parts streams (--partitions).
func (n Names) WithPartitions(parts int) (Names, error) {
	if parts < 1 || parts > MaxPartitions {
		return Names{}, fmt.Errorf("partitions %d: 1 to %d", parts, MaxPartitions)
	}
	n.parts = parts
	return n, nil
}

// Prefix is the names' prefix.
func (n Names) Prefix() string { return n.prefix }

// Partitions is how many streams hold the room messages.
func (n Names) Partitions() int { return max(n.parts, 1) }

// Partition is the partition of a room's messages: FNV-1a (32 bits) of
// the room id, modulo the partition count, which is what a NATS subject
// mapping's partition(n,1) computes from the room's token, so that a
// server-side mapping (docs/operations.md, Partitions) and chatd agree.
// Written out rather than with hash/fnv: it runs several times per
// message, and hash/fnv would allocate the hasher and a copy of the id.
func (n Names) Partition(room string) int {
	if n.parts <= 1 {
		return 0
	}
	const offset32, prime32 = 2166136261, 16777619 // FNV-1a's, as hash/fnv has them
	h := uint32(offset32)
	for i := 0; i < len(room); i++ {
		h ^= uint32(room[i])
		h *= prime32
	}
	return int(h % uint32(n.parts))
}

// MessagesStream is the stream holding partition p's room messages, over
// per-room subjects: CHAT_MESSAGES with one partition, CHAT_MESSAGES_<p>
// with more. A few streams rather than one per room: in a cluster every
// stream is a Raft group; more than one so that writes spread over as
// many leaders.
func (n Names) MessagesStream(p int) string {
	if n.parts <= 1 {
		return n.messagesStream()
	}
	return n.messagesStream() + "_" + strconv.Itoa(p)
}

// messagesStream is the one stream of a deployment of one partition, and
// the start of the name of each partition's stream: CHAT_MESSAGES.
func (n Names) messagesStream() string { return n.upper + "_MESSAGES" }

// partitionMapping is the NATS subject mapping that sends chat.msg.<room>
// to the room's partition's subject: what Room computes, done by a NATS
// server.
func (n Names) partitionMapping() (src, dst string) {
	return n.prefix + ".msg.*", n.prefix + ".msg.{{partition(" + strconv.Itoa(n.Partitions()) + ",1)}}.{{wildcard(1)}}"
}

// MessagesStreams are the streams of every partition.
func (n Names) MessagesStreams() []string {
	out := make([]string, n.Partitions())
	for p := range out {
		out[p] = n.MessagesStream(p)
	}
	return out
}

// messagesSubjects is what partition p's stream captures, with one
// wildcard, the room.
func (n Names) messagesSubjects(p int) string {
	if n.parts <= 1 {
		return n.prefix + ".msg.*"
	}
	return n.prefix + ".msg." + strconv.Itoa(p) + ".*"
}

// PartitionBucket is the name (for Bucket) of partition p of a bucket
// spread over the partitions like the messages: name itself with one
// partition, name_<p> with more.
func (n Names) PartitionBucket(name string, p int) string {
	if n.parts <= 1 {
		return name
	}
	return name + "_" + strconv.Itoa(p)
}

// Bucket is the KV bucket of a backend's name: CHAT_<name>.
func (n Names) Bucket(name string) string { return n.upper + "_" + name }

// Room is where a room's messages are stored: chat.msg.<room>, or
// chat.msg.<partition>.<room> with more than one partition.
func (n Names) Room(room string) string {
	if n.parts <= 1 {
		return n.prefix + ".msg." + room
	}
	return n.prefix + ".msg." + strconv.Itoa(n.Partition(room)) + "." + room
}

// RoomLive is where the stream republishes a room's messages once stored,
// with their sequence: chat.live.<room>. Nodes subscribe to it only while
// they have local subscribers to the room.
func (n Names) RoomLive(room string) string { return n.prefix + ".live." + room }

// Read carries a room's read-receipt events: chat.read.<room>.
func (n Names) Read(room string) string { return n.prefix + ".read." + room }

// User carries a user's queue: chat.user.<user token>.<queue>.
func (n Names) User(user, queue string) string {
	return n.prefix + ".user." + UserToken(user) + "." + queue
}

// roomFromSubject returns the room of a chat.live.<room> subject or of a
// subject Room makes.
func (n Names) roomFromSubject(subject string) (string, bool) {
	if r, ok := strings.CutPrefix(subject, n.RoomLive("")); ok && validToken(r) {
		return r, true
	}
	r, ok := strings.CutPrefix(subject, n.prefix+".msg.")
	if !ok {
		return "", false
	}
	if n.parts > 1 {
		p, rest, ok := strings.Cut(r, ".")
		if !ok || !validToken(rest) || p != strconv.Itoa(n.Partition(rest)) {
			return "", false
		}
		r = rest
	}
	return r, validToken(r)
}

// maxTokenLen bounds the room ids and queue names natsbus builds subjects
// from.
const maxTokenLen = 64

// validToken reports whether s may stand as one subject token built from
// a room id or a queue-name segment: 1 to 64 characters of [A-Za-z0-9_-].
// The callers check their own rules first (chat's room ids are exactly
// these); this check keeps wildcards, dots and spaces out of subjects
// whatever a caller lets through.
func validToken(s string) bool {
	if len(s) == 0 || len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte(s[i]) {
			return false
		}
	}
	return true
}

// validQueue reports whether s may end a user subject: validToken
// segments joined by single dots (as in "chat.log"), 64 characters at most.
func validQueue(s string) bool {
	if len(s) == 0 || len(s) > maxTokenLen {
		return false
	}
	for _, seg := range strings.Split(s, ".") {
		if !validToken(seg) {
			return false
		}
	}
	return true
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// UserToken maps a user id to one NATS subject token (and KV key part). Ids
// that are valid tokens stand as they are; any other id becomes "="
// followed by its unpadded base64url form, which cannot collide with a
// plain token since "=" is not a token character.
func UserToken(user string) string {
	if validToken(user) {
		return user
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(user))
}

// UserFromToken reverses UserToken.
func UserFromToken(tok string) (string, bool) {
	if enc, ok := strings.CutPrefix(tok, "="); ok {
		b, err := base64.RawURLEncoding.DecodeString(enc)
		if err != nil || len(b) == 0 {
			return "", false
		}
		return string(b), true
	}
	return tok, validToken(tok)
}

// RoomUserKey is the KV key of a user's record in a room (a membership, a
// read position): "<room>.<user token>".
func RoomUserKey(room, user string) string { return room + "." + UserToken(user) }

// UserRoomKey is the key of a membership in an index by user: RoomUserKey
// with its tokens swapped, "<user token>.<room>".
func UserRoomKey(user, room string) string { return UserToken(user) + "." + room }

// SplitRoomUserKey reverses RoomUserKey.
func SplitRoomUserKey(key string) (room, user string, ok bool) {
	room, tok, ok := strings.Cut(key, ".")
	if !ok || !validToken(room) {
		return "", "", false
	}
	user, ok = UserFromToken(tok)
	return room, user, ok
}
