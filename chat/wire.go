package chat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Fields names the JSON fields of messages and read events, so that
// clients written for another chat server read and write their own
// (--message-fields). The zero value is chatd's own names.
type Fields struct {
	Text    string // what a SEND body and a message hold the text in
	ID      string
	Room    string
	User    string
	Unread  string
	Created string
}

// DefaultFields are chatd's own names (docs/protocol.md).
func DefaultFields() Fields {
	return Fields{Text: "message", ID: "id", Room: "roomId", User: "userId", Unread: "unreadCount", Created: "createdAt"}
}

func (f *Fields) orDefault() *Fields {
	if f == nil || f.Text == "" {
		d := DefaultFields()
		return &d
	}
	return f
}

// serverField reports whether name is one chatd sets: a client's field
// of that name is never kept.
func (f *Fields) serverField(name string) bool {
	return name == f.ID || name == f.Room || name == f.User || name == f.Unread || name == f.Created || name == f.Text
}

// draft is a SEND body as chat reads it: the text, and the client's other
// top-level fields as they came.
type draft struct {
	text  string
	extra json.RawMessage // a JSON object, or nil
}

// parseDraft reads a SEND body: a JSON object with a non-empty string in
// the text field. With keep, its other fields (but those chatd sets) are
// kept, in their order and as they were written.
func (f *Fields) parseDraft(body []byte, keep bool) (draft, error) {
	want := func() error {
		return errorf(Invalid, "invalid message body: want a JSON object with %q, a non-empty string", f.Text)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return draft{}, want()
	}
	var d draft
	var extra bytes.Buffer
	found := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return draft{}, want()
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return draft{}, want()
		}
		switch {
		case key == f.Text:
			if err := json.Unmarshal(raw, &d.text); err != nil || d.text == "" {
				return draft{}, errorf(Invalid, "invalid message body: %q must be a non-empty string", f.Text)
			}
			found = true
		case keep && !f.serverField(key):
			if extra.Len() == 0 {
				extra.WriteByte('{')
			} else {
				extra.WriteByte(',')
			}
			k, _ := json.Marshal(key)
			extra.Write(k)
			extra.WriteByte(':')
			extra.Write(raw)
		}
	}
	if _, err := dec.Token(); err != nil {
		return draft{}, want()
	}
	if dec.More() {
		return draft{}, want()
	}
	if !found {
		return draft{}, errorf(Invalid, "invalid message body: %q must be a non-empty string", f.Text)
	}
	if extra.Len() > 0 {
		extra.WriteByte('}')
		d.extra = extra.Bytes()
	}
	return d, nil
}

// MarshalJSON writes the message with its deployment's field names:
// chatd's fields first, then the sender's kept fields, but any that
// would stand for one of chatd's.
func (m Message) MarshalJSON() ([]byte, error) {
	f := m.fields.orDefault()
	b := make([]byte, 0, 96+len(m.Message)+len(m.Extra))
	b = append(b, '{')
	b = appendKey(b, f.ID)
	b = strconv.AppendUint(b, m.ID, 10)
	b = append(b, ',')
	b = appendKey(b, f.Room)
	b = appendString(b, m.RoomID)
	b = append(b, ',')
	b = appendKey(b, f.User)
	b = appendString(b, m.UserID)
	b = append(b, ',')
	b = appendKey(b, f.Text)
	b = appendString(b, m.Message)
	b = append(b, ',')
	b = appendKey(b, f.Unread)
	b = strconv.AppendInt(b, int64(m.UnreadCount), 10)
	b = append(b, ',')
	b = appendKey(b, f.Created)
	b = appendString(b, m.CreatedAt)
	if len(m.Extra) > 0 {
		var err error
		if b, err = appendExtra(b, m.Extra, f); err != nil {
			return nil, fmt.Errorf("message %d: client fields: %w", m.ID, err)
		}
	}
	return append(b, '}'), nil
}

// appendExtra appends an object's members, but those chatd sets.
func appendExtra(b []byte, obj json.RawMessage, f *Fields) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return b, err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return b, err
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return b, err
		}
		if f.serverField(key) {
			continue
		}
		b = append(b, ',')
		b = appendKey(b, key)
		b = append(b, raw...)
	}
	return b, nil
}

// MarshalJSON writes the event with its deployment's field names.
func (e ReadEvent) MarshalJSON() ([]byte, error) {
	f := e.fields.orDefault()
	b := make([]byte, 0, 64)
	b = append(b, '{')
	b = appendKey(b, f.Room)
	b = appendString(b, e.RoomID)
	b = append(b, ',')
	b = appendKey(b, f.User)
	b = appendString(b, e.UserID)
	b = append(b, `,"lastReadId":`...)
	b = strconv.AppendUint(b, e.LastReadID, 10)
	return append(b, '}'), nil
}

func appendKey(b []byte, k string) []byte {
	b = appendString(b, k)
	return append(b, ':')
}

// appendString appends s as a JSON string, escaped as encoding/json does.
// Most strings need no escape and are copied as they are; any other goes
// through encoding/json.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return appendQuoted(b, s)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || r == '\u2028' || r == '\u2029' {
			return appendQuoted(b, s)
		}
		i += n
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendQuoted(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
