package stompapi

import (
	"strings"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/stompws"
)

// The STOMP destinations chatd serves (docs/protocol.md).
const (
	topicPrefix = "/topic/chat."
	appPrefix   = "/app/chat."
	queuePrefix = "/user/queue/"
)

type destKind int

const (
	destRoom      destKind = iota + 1 // /topic/chat.{room}
	destRoomReads                     // /topic/chat.{room}.read
	destUserQueue                     // /user/queue/{name}
	destPost                          // /app/chat.{room}
	destLog                           // /app/chat.{room}.log
	destMarkRead                      // /app/chat.{room}.read
)

type destination struct {
	kind destKind
	name string // room id, or queue name
}

// parseDestination accepts exactly the documented destinations. Anything
// else (wildcards, extra dots, unknown prefixes) is refused, so a client can
// never name a NATS subject of its own choosing.
func parseDestination(d string) (destination, *stompws.Error) {
	switch {
	case strings.HasPrefix(d, topicPrefix):
		room, suffix, _ := strings.Cut(d[len(topicPrefix):], ".")
		if !chat.ValidRoomID(room) {
			break
		}
		switch suffix {
		case "":
			if !strings.HasSuffix(d, ".") {
				return destination{destRoom, room}, nil
			}
		case "read":
			return destination{destRoomReads, room}, nil
		}
	case strings.HasPrefix(d, appPrefix):
		room, suffix, _ := strings.Cut(d[len(appPrefix):], ".")
		if !chat.ValidRoomID(room) {
			break
		}
		switch suffix {
		case "":
			if !strings.HasSuffix(d, ".") {
				return destination{destPost, room}, nil
			}
		case "log":
			return destination{destLog, room}, nil
		case "read":
			return destination{destMarkRead, room}, nil
		}
	case strings.HasPrefix(d, queuePrefix):
		if q := d[len(queuePrefix):]; chat.ValidQueueName(q) {
			return destination{destUserQueue, q}, nil
		}
	}
	return destination{}, &stompws.Error{
		Kind:    stompws.KindDestination,
		Message: "invalid destination",
		Detail: "destinations are /app/chat.{room}[.log|.read], /topic/chat.{room}[.read] and /user/queue/{name}; " +
			"room ids and queue names are 1-64 characters of [A-Za-z0-9_-]",
	}
}
