package chat

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Names: room ids, user-queue names and user ids, checked wherever they
// enter (a destination, an API path, a token), so that nothing a client
// writes reaches a subject, key or log line unchecked.

// MaxNameLen bounds room ids and queue names.
const MaxNameLen = 64

// MaxUserIDLen bounds user ids.
const MaxUserIDLen = 128

// ValidRoomID reports whether s can be a room id: 1 to 64 characters of
// [A-Za-z0-9_-].
func ValidRoomID(s string) bool {
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

// ValidQueueName reports whether s can name a user queue: segments of
// [A-Za-z0-9_-] joined by single dots (as in "chat.log"), 64 characters
// at most.
func ValidQueueName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for _, seg := range strings.Split(s, ".") {
		if !ValidRoomID(seg) {
			return false
		}
	}
	return true
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// UserIDRule says what ValidUserID accepts, for clients: the one rule for
// a user id wherever one enters (a CONNECT login, a token's claim, the
// rooms API, a membership added by the domain), so that every member can
// log in and every user who logs in can be made a member.
const UserIDRule = "1 to 128 bytes of printable UTF-8, no spaces"

// ValidUserID reports whether id can be a user id: 1 to 128 bytes of
// UTF-8, each character printable (unicode.IsPrint: no control or format
// characters) and none a space.
func ValidUserID(id string) bool {
	if id == "" || len(id) > MaxUserIDLen || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// checkUserID is nil if id can be a user id, else the Invalid error that
// states the rule.
func checkUserID(id string) error {
	if ValidUserID(id) {
		return nil
	}
	return errorf(Invalid, "invalid user id: %s", UserIDRule)
}
