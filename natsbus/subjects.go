package natsbus

import (
	"encoding/base64"
	"strings"
)

// The NATS subjects behind chatd's destinations. They are part of chatd's
// contract (docs/protocol.md): backend services publish and subscribe to them
// with any NATS client.
const (
	// MessagesStream is the one JetStream stream holding every room's
	// messages, over per-room subjects. One stream rather than one per room:
	// in a cluster every stream is a Raft group.
	MessagesStream = "CHAT_MESSAGES"
	// RoomsBucket is a JetStream KV bucket keyed by room id.
	RoomsBucket = "CHAT_ROOMS"
	// MembersBucket and ReadsBucket are JetStream KV buckets keyed
	// "<room>.<user token>".
	MembersBucket = "CHAT_MEMBERS"
	ReadsBucket   = "CHAT_READS"

	roomPrefix = "chat.msg."
	livePrefix = "chat.live."
	readPrefix = "chat.read."
	userPrefix = "chat.user."
)

// MaxNameLen bounds room ids and queue-name segments.
const MaxNameLen = 64

// RoomSubject is where a room's messages are stored: chat.msg.<room>.
func RoomSubject(room string) string { return roomPrefix + room }

// RoomLiveSubject is where the stream republishes a room's messages once
// stored, with their sequence: chat.live.<room>. Nodes subscribe to it only
// while they have local subscribers to the room.
func RoomLiveSubject(room string) string { return livePrefix + room }

// ReadSubject carries a room's read-receipt events: chat.read.<room>.
func ReadSubject(room string) string { return readPrefix + room }

// UserSubject carries a user's queue: chat.user.<user token>.<queue>.
func UserSubject(user, queue string) string { return userPrefix + UserToken(user) + "." + queue }

// RoomFromSubject returns the room of a chat.msg.<room> or chat.live.<room> subject.
func RoomFromSubject(subject string) (string, bool) {
	for _, p := range []string{roomPrefix, livePrefix} {
		if r, ok := strings.CutPrefix(subject, p); ok && ValidName(r) {
			return r, true
		}
	}
	return "", false
}

// ValidName reports whether s is a valid room id or queue-name segment:
// 1 to 64 characters of [A-Za-z0-9_-]. Anything else could inject NATS
// wildcards or extra subject tokens.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			return false
		}
	}
	return true
}

// ValidQueueName reports whether s is a valid user-queue name: one or more
// ValidName segments joined by single dots (as in "chat.log"), 64
// characters at most.
func ValidQueueName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for _, seg := range strings.Split(s, ".") {
		if !ValidName(seg) {
			return false
		}
	}
	return true
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// UserToken maps a user id to one NATS subject token (and KV key part). Ids
// that are valid names stand as they are; any other id becomes "=" followed
// by its unpadded base64url form, which cannot collide with a plain name
// since "=" is not a name character.
func UserToken(user string) string {
	if ValidName(user) {
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
	return tok, ValidName(tok)
}
