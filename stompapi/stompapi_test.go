package stompapi

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
)

// TestClientError: a domain error becomes an ERROR frame's message, with
// the kind metrics count it by; any other error stays as it is, for
// stompws to log and to call "internal error".
func TestClientError(t *testing.T) {
	for kind, want := range map[chat.Kind]string{
		chat.Invalid:     stompws.KindRequest,
		chat.Forbidden:   stompws.KindForbidden,
		chat.NotFound:    stompws.KindRequest,
		chat.Conflict:    stompws.KindRequest,
		chat.TooLarge:    stompws.KindLimit,
		chat.Unavailable: stompws.KindUnavailable,
		chat.Unsupported: stompws.KindRequest,
	} {
		err := fmt.Errorf("wrapped: %w", &chat.Error{Kind: kind, Msg: "the message", Detail: "the detail"})
		se, ok := clientError(err).(*stompws.Error)
		if !ok || se.Kind != want || se.Message != "the message" || se.Detail != "the detail" {
			t.Errorf("%s: %#v, want kind %s", kind, clientError(err), want)
		}
	}
	plain := errors.New("disk on fire")
	if got := clientError(plain); got != plain {
		t.Errorf("a plain error became %v", got)
	}
	if clientError(nil) != nil {
		t.Error("nil became an error")
	}
}

// TestPassThrough: a SEND's own headers go on to the MESSAGEs, STOMP's
// and chatd's control headers never do.
func TestPassThrough(t *testing.T) {
	f := &frame.Frame{Command: "SEND", Headers: []frame.Header{
		{Name: "destination", Value: "/app/chat.r"}, {Name: "receipt", Value: "1"}, {Name: "x-trace", Value: "abc"},
		{Name: "content-type", Value: "application/json"}, {Name: "client-msg-id", Value: "c"}, {Name: "history", Value: "gap"},
		{Name: "message-id", Value: "forged"}, {Name: "priority", Value: "9"},
	}}
	if got, want := passThrough(f), [][2]string{{"x-trace", "abc"}, {"priority", "9"}}; !slices.Equal(got, want) {
		t.Fatalf("passed through %v, want %v", got, want)
	}
}

// TestMessageEncodedOnce: the subscriptions of a node to one destination
// share one MESSAGE per publication.
func TestMessageEncodedOnce(t *testing.T) {
	h := &Handler{}
	a := &subscriber{h: h, ss: &stompws.Subscription{Destination: "/topic/chat.r"}}
	b := &subscriber{h: h, ss: &stompws.Subscription{Destination: "/topic/chat.r"}}
	other := &subscriber{h: h, ss: &stompws.Subscription{Destination: "/topic/chat.s"}}
	p := &chat.Publication{ID: 7, Body: []byte(`{}`), ContentType: "application/json", Headers: [][2]string{{"x-trace", "abc"}}}
	m := a.message(p)
	if b.message(p) != m {
		t.Fatal("two subscriptions to one destination encoded one publication twice")
	}
	if other.message(p) == m {
		t.Fatal("another destination got this destination's MESSAGE")
	}
	allocs := testing.AllocsPerRun(100, func() { _ = a.message(p); _ = b.message(p) })
	if allocs != 0 {
		t.Fatalf("%v allocations per delivery of an encoded publication", allocs)
	}
}

// TestNoteHeaders: a subscription's first MESSAGE tells of a gap or a
// reset (docs/protocol.md); a whole history adds nothing.
func TestNoteHeaders(t *testing.T) {
	if h := noteHeaders(chat.Note{}); h != nil {
		t.Fatalf("no note gave %v", h)
	}
	want := []frame.Header{{Name: "history", Value: "gap"}, {Name: "history-first-id", Value: "42"}}
	if h := noteHeaders(chat.Note{Kind: chat.NoteGap, FirstID: 42}); !slices.Equal(h, want) {
		t.Fatalf("gap note gave %v", h)
	}
	if h := noteHeaders(chat.Note{Kind: chat.NoteReset, FirstID: 1}); h[0].Value != "reset" {
		t.Fatalf("reset note gave %v", h)
	}
}
