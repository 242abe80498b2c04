// Package dest is the STOMP destination templates chatd serves, as Spring
// apps name theirs: "/app/chat.{room}", "/pub/chat/send/{room}". A
// template is a prefix, one name, and a suffix; the name is a room id, or
// a user queue's name (docs/configuration.md, Destinations).
package dest

import (
	"fmt"
	"strings"
)

// Set is the destinations chatd serves.
type Set struct {
	// SEND here: post a message, ask for history, mark read.
	Send, History, Read Template
	// SUBSCRIBE here: a room's messages, its read receipts, a user queue.
	Room, ReadEvents, Queue Template
	// HistoryReply is the user queue history pages are answered on.
	HistoryReply string
}

// Placeholder marks where a room id stands in a template.
const Placeholder = "{room}"

// Class is the characters a template's name may take.
type Class int

// Name classes.
const (
	// RoomID: 1 to 64 characters of [A-Za-z0-9_-] (chat.ValidRoomID).
	RoomID Class = iota
	// QueueName: RoomID's characters and dots (chat.ValidQueueName).
	QueueName
)

func (c Class) has(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '_', b == '-':
		return true
	case b == '.':
		return c == QueueName
	}
	return false
}

// Template is a destination with one name in it.
type Template struct {
	Prefix, Suffix string
	Class          Class
}

// Parse reads a room template: a destination starting with "/" with
// {room} exactly once.
func Parse(s string) (Template, error) {
	if !strings.HasPrefix(s, "/") {
		return Template{}, fmt.Errorf("%q does not start with /", s)
	}
	if strings.Count(s, Placeholder) != 1 {
		return Template{}, fmt.Errorf("%q must hold %s exactly once", s, Placeholder)
	}
	if strings.ContainsAny(s, " \t\r\n\x00*>") {
		return Template{}, fmt.Errorf("%q holds a space, a control character or a wildcard", s)
	}
	p, sfx, _ := strings.Cut(s, Placeholder)
	if strings.ContainsAny(p+sfx, "{}") {
		return Template{}, fmt.Errorf("%q holds a brace besides %s", s, Placeholder)
	}
	return Template{Prefix: p, Suffix: sfx, Class: RoomID}, nil
}

// Queue is the template of a user's queues under prefix ("/user"):
// prefix + "/queue/" + a queue name.
func Queue(prefix string) (Template, error) {
	switch {
	case !strings.HasPrefix(prefix, "/") || len(prefix) < 2:
		return Template{}, fmt.Errorf("%q does not start with / and a name", prefix)
	case strings.HasSuffix(prefix, "/"):
		return Template{}, fmt.Errorf("%q ends with /", prefix)
	case strings.ContainsAny(prefix, " \t\r\n\x00*>{}"):
		return Template{}, fmt.Errorf("%q holds a space, a control character, a wildcard or a brace", prefix)
	}
	return Template{Prefix: prefix + "/queue/", Class: QueueName}, nil
}

func (t Template) String() string {
	if t.Class == QueueName {
		return t.Prefix + "{name}" + t.Suffix
	}
	return t.Prefix + Placeholder + t.Suffix
}

// Match returns the name in d if d is this template's, or false. The
// name's length and characters are the caller's to check; only what
// could never be a name of the class fails the match.
func (t Template) Match(d string) (string, bool) {
	if len(d) <= len(t.Prefix)+len(t.Suffix) || !strings.HasPrefix(d, t.Prefix) || !strings.HasSuffix(d, t.Suffix) {
		return "", false
	}
	name := d[len(t.Prefix) : len(d)-len(t.Suffix)]
	for i := 0; i < len(name); i++ {
		if !t.Class.has(name[i]) {
			return "", false
		}
	}
	return name, true
}

// Expand is the template's destination for name.
func (t Template) Expand(name string) string { return t.Prefix + name + t.Suffix }

// Overlap reports whether some destination matches both templates, with
// one example. It walks both templates at once, a character at a time
// (the product of their automata): literals must agree, and a name's run
// takes any of its class's characters.
func Overlap(a, b Template) (string, bool) {
	type state struct{ i, j int } // positions in a's and b's sequences (stepSeq)
	sa, sb := a.seq(), b.seq()
	// The characters that can tell the templates apart: every literal
	// one, and one name character that is no literal.
	alphabet := map[byte]bool{}
	for _, s := range []string{a.Prefix, a.Suffix, b.Prefix, b.Suffix} {
		for i := 0; i < len(s); i++ {
			alphabet[s[i]] = true
		}
	}
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") {
		if !alphabet[c] {
			alphabet[c] = true
			break
		}
	}
	start := state{}
	prev := map[state]state{start: {-1, -1}}
	via := map[state]byte{}
	queue := []state{start}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if accepts(sa, cur.i) && accepts(sb, cur.j) {
			var out []byte
			for s := cur; s != start; s = prev[s] {
				out = append(out, via[s])
			}
			for l, r := 0, len(out)-1; l < r; l, r = l+1, r-1 {
				out[l], out[r] = out[r], out[l]
			}
			return string(out), true
		}
		for c := range alphabet {
			for _, ni := range stepSeq(sa, cur.i, c) {
				for _, nj := range stepSeq(sb, cur.j, c) {
					next := state{ni, nj}
					if _, seen := prev[next]; !seen {
						prev[next], via[next] = cur, c
						queue = append(queue, next)
					}
				}
			}
		}
	}
	return "", false
}

// elem is one element of a template's sequence: a literal byte, or a run
// of one or more name characters.
type elem struct {
	lit   byte
	run   bool
	class Class
}

func (t Template) seq() []elem {
	var out []elem
	for i := 0; i < len(t.Prefix); i++ {
		out = append(out, elem{lit: t.Prefix[i]})
	}
	out = append(out, elem{run: true, class: t.Class})
	for i := 0; i < len(t.Suffix); i++ {
		out = append(out, elem{lit: t.Suffix[i]})
	}
	return out
}

// stepSeq returns where a sequence at position i may be after reading c.
// Positions count twice: an even i is before element i/2, an odd i inside
// the run element (i-1)/2, having read one or more of its characters.
func stepSeq(s []elem, i int, c byte) []int {
	pos, inRun := i/2, i%2 == 1
	var out []int
	if inRun {
		e := s[pos]
		if e.class.has(c) {
			out = append(out, i) // the run goes on
		}
		pos++ // the run ends: c belongs to what follows
	}
	if pos < len(s) {
		e := s[pos]
		switch {
		case e.run && e.class.has(c):
			out = append(out, 2*pos+1)
		case !e.run && e.lit == c:
			out = append(out, 2*(pos+1))
		}
	}
	return out
}

// accepts reports whether position i is the end of the sequence.
func accepts(s []elem, i int) bool {
	pos, inRun := i/2, i%2 == 1
	return !inRun && pos == len(s) || inRun && pos == len(s)-1
}
