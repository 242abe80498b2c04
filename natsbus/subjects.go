package natsbus

import (
	"encoding/base64"
	"strings"
)

// The NATS subjects, stream and key formats behind chatd's destinations.
// They are part of chatd's contract (docs/protocol.md): backend services
// publish and subscribe to them with any NATS client.
const (
	// MessagesStream is the one JetStream stream holding every room's
	// messages, over per-room subjects. One stream rather than one per room:
	// in a cluster every stream is a Raft group.
	MessagesStream = "CHAT_MESSAGES"

	roomPrefix = "chat.msg."
	livePrefix = "chat.live."
	readPrefix = "chat.read."
	userPrefix = "chat.user."
)

// maxTokenLen bounds the room ids and queue names natsbus builds subjects
// from.
const maxTokenLen = 64

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

// roomFromSubject returns the room of a chat.msg.<room> or chat.live.<room> subject.
func roomFromSubject(subject string) (string, bool) {
	for _, p := range []string{roomPrefix, livePrefix} {
		if r, ok := strings.CutPrefix(subject, p); ok && validToken(r) {
			return r, true
		}
	}
	return "", false
}

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

// SplitRoomUserKey reverses RoomUserKey.
func SplitRoomUserKey(key string) (room, user string, ok bool) {
	room, tok, ok := strings.Cut(key, ".")
	if !ok || !validToken(room) {
		return "", "", false
	}
	user, ok = UserFromToken(tok)
	return room, user, ok
}
