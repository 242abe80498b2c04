package chat

import (
	"errors"
	"fmt"

	"github.com/chatd/chatd/storage"
)

// Kind says what sort of failure an error is, for the adapters to map to
// their protocol: a STOMP ERROR frame, an HTTP status, a metric label.
type Kind uint8

// Error kinds.
const (
	// Internal is any error that is not an *Error: a fault of chatd's or of
	// a backend's, logged, never shown to clients in detail.
	Internal Kind = iota
	// Invalid: the request is malformed or breaks a rule.
	Invalid
	// Forbidden: the user may not do this (not a member, not an admin).
	Forbidden
	// NotFound: no such room, or no such member.
	NotFound
	// Conflict: the change clashes with what exists.
	Conflict
	// TooLarge: the message is larger than can be stored.
	TooLarge
	// Unavailable: the store cannot serve the request for the moment; the
	// client may try again.
	Unavailable
	// Unsupported: this deployment lacks what the request needs.
	Unsupported
)

var kindNames = [...]string{"internal", "invalid", "forbidden", "not found", "conflict", "too large", "unavailable", "unsupported"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Error is a failure the client is told about: Msg (and Detail, if any)
// are safe to show it.
type Error struct {
	Kind   Kind
	Msg    string
	Detail string
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return e.Msg + ": " + e.Detail
	}
	return e.Msg
}

// errorf makes a client-facing error of kind.
func errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// KindOf is err's kind: that of the *Error it wraps (AsError), else
// Internal.
func KindOf(err error) Kind {
	if e, ok := AsError(err); ok {
		return e.Kind
	}
	return Internal
}

// AsError is the client-facing error err is: the *Error it wraps, or, for
// a store that cannot serve the request for the moment (it wraps
// storage.ErrUnavailable, on any path: a write, a history read, the
// newest id a subscription starts from), Unavailable. Anything else is
// internal, and is not shown to clients.
func AsError(err error) (*Error, bool) {
	if e, ok := errors.AsType[*Error](err); ok {
		return e, true
	}
	if errors.Is(err, storage.ErrUnavailable) {
		return &Error{Kind: Unavailable, Msg: errUnavailableMsg, Detail: err.Error()}, true
	}
	return nil, false
}

// errUnavailableMsg is what a client is told when the store cannot take
// or serve a request for the moment: not a fault of its own or a bug, and
// worth retrying (docs/protocol.md, Errors).
const errUnavailableMsg = "unavailable: the message store cannot serve this now; retry"

func notMember(room string) *Error {
	return errorf(Forbidden, "forbidden: not a member of room %s", room)
}
