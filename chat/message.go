package chat

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
)

// Message is a chat message as clients see it: the MESSAGE body on
// /topic/chat.{room}, and each element of a history reply.
type Message struct {
	ID          uint64 `json:"id"`
	RoomID      string `json:"roomId"`
	UserID      string `json:"userId"`
	Message     string `json:"message"`
	UnreadCount int    `json:"unreadCount"`
	CreatedAt   string `json:"createdAt"`
}

// storedMessage is what the stream holds. The id is the stream sequence and
// unreadCount changes as members read, so neither is stored.
type storedMessage struct {
	RoomID    string      `json:"roomId"`
	UserID    string      `json:"userId"`
	Message   string      `json:"message"`
	CreatedAt string      `json:"createdAt"`
	Headers   [][2]string `json:"headers,omitempty"` // the SEND's own headers, passed through on MESSAGE
	// Unread is unreadCount when the message was sent (every member but the
	// sender), fixed by the sending node so that every node broadcasts the
	// same value. History computes current counts instead.
	Unread *int `json:"unread,omitempty"`
}

// ReadEvent is broadcast on /topic/chat.{room}.read.
type ReadEvent struct {
	RoomID     string `json:"roomId"`
	UserID     string `json:"userId"`
	LastReadID uint64 `json:"lastReadId"`
}

// timeLayout is RFC 3339 with milliseconds, in UTC.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// decodeStored reads a stored message. A message a backend posted straight
// to the subject may lack fields; the stream's own record fills them in.
func decodeStored(sm natsbus.StoredMsg) (storedMessage, error) {
	var st storedMessage
	if err := json.Unmarshal(sm.Data, &st); err != nil {
		return st, fmt.Errorf("message %d in room %s: %w", sm.Seq, sm.Room, err)
	}
	st.RoomID = sm.Room
	if st.CreatedAt == "" && !sm.Time.IsZero() {
		st.CreatedAt = formatTime(sm.Time)
	}
	return st, nil
}

// reserved reports STOMP's own headers and chatd's control headers: they
// are never passed through from a SEND to the MESSAGEs it becomes.
func reserved(name string) bool {
	switch name {
	case "destination", "receipt", "transaction", "content-length", "content-type", "client-msg-id",
		"subscription", "message-id", "ack", "id", "history", "history-first-id":
		return true
	}
	return false
}

func passThrough(f *stompws.Frame) [][2]string {
	var out [][2]string
	for _, h := range f.Headers {
		if !reserved(h.Name) {
			out = append(out, [2]string{h.Name, h.Value})
		}
	}
	return out
}

// stompMessage encodes a chat message once for every subscriber on this node.
func stompMessage(dest string, m Message, hdrs [][2]string) (*stompws.Message, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode message %d: %w", m.ID, err)
	}
	h := make([]stompws.Header, 0, 1+len(hdrs))
	h = append(h, stompws.Header{Name: "content-type", Value: "application/json"})
	for _, kv := range hdrs {
		h = append(h, stompws.Header{Name: kv[0], Value: kv[1]})
	}
	return stompws.NewMessage(dest, h, body), nil
}
