package stompapi

import (
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/stompapi/dest"
	"github.com/chatd/chatd/stompws"
)

// DefaultDestinations are chatd's own (docs/protocol.md): Spring's
// /app/chat.{room} -> /topic/chat.{room} convention.
func DefaultDestinations() dest.Set {
	p := func(s string) dest.Template {
		t, err := dest.Parse(s)
		if err != nil {
			panic(err) // constants
		}
		return t
	}
	q, _ := dest.Queue("/user")
	return dest.Set{
		Send: p("/app/chat.{room}"), History: p("/app/chat.{room}.log"), Read: p("/app/chat.{room}.read"),
		Room: p("/topic/chat.{room}"), ReadEvents: p("/topic/chat.{room}.read"), Queue: q,
		HistoryReply: chat.LogQueue,
	}
}

type destKind int

const (
	destRoom      destKind = iota + 1 // a room's messages
	destRoomReads                     // a room's read receipts
	destUserQueue                     // one of the user's queues
	destPost                          // post a message
	destLog                           // ask for history
	destMarkRead                      // mark read
)

type destination struct {
	kind destKind
	name string // room id, or queue name
}

// route matches d to the destinations served. Anything else (wildcards,
// extra tokens, unknown prefixes, names out of their rules) is refused,
// so a client can never name a NATS subject of its own choosing.
func (h *Handler) route(d string) (destination, *stompws.Error) {
	for _, r := range [...]struct {
		t    dest.Template
		kind destKind
	}{
		{h.dests.Send, destPost}, {h.dests.History, destLog}, {h.dests.Read, destMarkRead},
		{h.dests.Room, destRoom}, {h.dests.ReadEvents, destRoomReads},
	} {
		if name, ok := r.t.Match(d); ok && chat.ValidRoomID(name) {
			return destination{r.kind, name}, nil
		}
	}
	if name, ok := h.dests.Queue.Match(d); ok && chat.ValidQueueName(name) {
		return destination{destUserQueue, name}, nil
	}
	return destination{}, &stompws.Error{Kind: stompws.KindDestination, Message: "invalid destination", Detail: h.destDetail}
}

// describe is what an invalid destination's ERROR tells the client.
func describe(s dest.Set) string {
	return "SEND to " + s.Send.String() + ", " + s.History.String() + " or " + s.Read.String() +
		"; SUBSCRIBE to " + s.Room.String() + ", " + s.ReadEvents.String() + " or " + s.Queue.String() +
		"; room ids are 1-64 characters of [A-Za-z0-9_-], queue names dot-separated ones"
}
