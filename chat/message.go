package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/storage"
)

// Message is a chat message as clients see it: a room message's body,
// each element of a history reply, and an HTTP API answer. It is written
// with its deployment's field names (wire.go); the tags are chatd's own.
type Message struct {
	ID          uint64 `json:"id"`
	RoomID      string `json:"roomId"`
	UserID      string `json:"userId"`
	Message     string `json:"message"`
	UnreadCount int    `json:"unreadCount"`
	CreatedAt   string `json:"createdAt"`
	// Extra is the sender's other fields, a JSON object, given back as
	// they were sent (Config.KeepClientFields).
	Extra json.RawMessage `json:"-"`

	fields *Fields
}

// ReadEvent tells a room's read-receipt subscribers that a member read up
// to a message.
type ReadEvent struct {
	RoomID     string `json:"roomId"`
	UserID     string `json:"userId"`
	LastReadID uint64 `json:"lastReadId"`

	fields *Fields
}

// jsonType is the media type of every body chat makes.
const jsonType = "application/json"

// storedMessage is what the message log holds. The id is the log's
// position and unreadCount changes as members read, so neither is stored.
type storedMessage struct {
	RoomID    string      `json:"roomId"`
	UserID    string      `json:"userId"`
	Message   string      `json:"message"`
	CreatedAt string      `json:"createdAt"`
	Headers   [][2]string `json:"headers,omitempty"` // the SEND's own headers, passed through on MESSAGE
	// Extra is the SEND body's other fields, a JSON object, kept as sent.
	Extra json.RawMessage `json:"extra,omitempty"`
	// Unread is unreadCount when the message was sent (every member but the
	// sender), fixed by the sending node so that every node broadcasts the
	// same value. History computes current counts instead.
	Unread *int `json:"unread,omitempty"`
}

// timeLayout is RFC 3339 with milliseconds, in UTC.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// decodeStored reads a stored message. A message a backend stored by hand
// may lack fields; the log's own record fills them in.
func decodeStored(sm storage.Message) (storedMessage, error) {
	var st storedMessage
	if err := json.Unmarshal(sm.Data, &st); err != nil {
		return st, fmt.Errorf("message %d in room %s: %w", sm.ID, sm.Room, err)
	}
	st.RoomID = sm.Room
	if e := bytes.TrimSpace(st.Extra); len(e) > 0 && e[0] != '{' {
		// A backend publishing to the stream may write any extra; only an
		// object's fields can be kept beside chatd's.
		st.Extra = nil
	}
	if st.CreatedAt == "" && !sm.Time.IsZero() {
		st.CreatedAt = formatTime(sm.Time)
	}
	return st, nil
}

// Archived is what the archive keeps of a stored message beside its
// bytes, for search and for reading the table by hand.
type Archived struct {
	UserID    string
	Text      string
	CreatedAt time.Time
}

// DecodeArchived reads what the archive indexes from a stored message's
// bytes. Bytes that are not chat's JSON give empty fields.
func DecodeArchived(data []byte) Archived {
	var st storedMessage
	_ = json.Unmarshal(data, &st)
	created, _ := time.Parse(time.RFC3339Nano, st.CreatedAt)
	return Archived{UserID: st.UserID, Text: st.Message, CreatedAt: created}
}

// Publication is one message or event on its way to this node's
// subscribers: made once, handed to each. Nothing in it may change once
// it is handed out.
type Publication struct {
	// ID is a room message's id; 0 for an event.
	ID uint64
	// Body is what the client receives, ContentType its media type.
	Body        []byte
	ContentType string
	// Headers are a room message's SEND headers, passed through to the
	// client.
	Headers [][2]string

	memo atomic.Pointer[memo]
}

type memo struct {
	key any
	val any
}

// Encoding returns what an adapter stored with SetEncoding under key (a
// pointer of its own), or nil: its wire form of p, made once however many
// subscribers p goes to. One key is kept at a time.
func (p *Publication) Encoding(key any) any {
	if m := p.memo.Load(); m != nil && m.key == key {
		return m.val
	}
	return nil
}

// SetEncoding keeps v as the adapter's encoding of p under key.
func (p *Publication) SetEncoding(key, v any) { p.memo.Store(&memo{key: key, val: v}) }

// NoteKind says why the history a subscriber asked for is incomplete.
type NoteKind uint8

// Note kinds (docs/protocol.md: the history header).
const (
	NoteNone NoteKind = iota
	// NoteGap: messages after the client's since-id are no longer held.
	NoteGap
	// NoteReset: the since-id is from an earlier life of the log: what
	// follows is all the room holds.
	NoteReset
)

// Note goes with a subscriber's first message when the history it asked
// for is incomplete. FirstID is the oldest id held of the room.
type Note struct {
	Kind    NoteKind
	FirstID uint64
}

// publication makes a room message's publication.
func publication(m Message, hdrs [][2]string) (*Publication, error) {
	// MarshalJSON's own output is valid JSON: json.Marshal would scan and
	// copy it again to check.
	body, err := m.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode message %d: %w", m.ID, err)
	}
	return &Publication{ID: m.ID, Body: body, ContentType: jsonType, Headers: hdrs}, nil
}
