// Heart-beats: their negotiation at CONNECT, the watchdog that closes a
// silent client (and one that never sends CONNECT), and the server's own
// beats.

package stompws

import (
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/stompws/frame"
)

// agreeHeartBeats settles the session's heart-beats from the client's
// heart-beat header (cx,cy; present: the CONNECT had one) and the server's
// Config.HeartBeat (def) and HeartBeatMin (floor). out is how often the
// server sends heart-beats, in how often it expects them; 0 switches a
// direction off. The client gets what it asks for, held to the floor:
// STOMP 1.1 has each side send no more often than the other asked, and
// the server here asks nothing slower than the client. STOMP 1.0 knows no
// heart-beats; a 1.1+ client that sends no header leaves the server free,
// and gets EOLs every def, which 1.1+ clients take between frames.
func agreeHeartBeats(v frame.Version, present bool, cx, cy, def, floor time.Duration) (out, in time.Duration) {
	switch {
	case def < 0:
		return 0, 0
	case !present:
		if v >= frame.V11 {
			out = def
		}
		return out, 0
	}
	if cy > 0 {
		out = max(cy, floor)
	}
	if cx > 0 {
		in = max(cx, floor)
	}
	return out, in
}

// parseHeartBeat reads a CONNECT's heart-beat header: what the client
// offers to send (cx) and asks for (cy).
func parseHeartBeat(h string) (cx, cy time.Duration, ok bool) {
	if h == "" {
		return 0, 0, true
	}
	a, b, found := strings.Cut(h, ",")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 31)
	y, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 31)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return time.Duration(x) * time.Millisecond, time.Duration(y) * time.Millisecond, true
}

// checkSilence closes a session whose client said nothing in time: no
// CONNECT within ConnectTimeout, or no frame or heart-beat within the agreed
// interval plus the grace.
func (s *Session) checkSilence() {
	if !s.connected.Load() {
		s.fail(&Error{Kind: KindConnect, Message: "no CONNECT frame within " + s.cfg.ConnectTimeout.String()}, "", closePolicy, false)
		return
	}
	limit := time.Duration(s.recvLimit.Load())
	if limit <= 0 {
		return // the client sends no heart-beats; TCP tells us when it goes
	}
	if s.heldBack.Load() {
		s.watchdog.Reset(limit)
		return
	}
	idle := time.Since(time.Unix(0, s.lastRead.Load()))
	if idle >= limit {
		s.fail(&Error{Kind: KindHeartbeat, Message: "heart-beat timeout: nothing received for " + idle.Round(time.Millisecond).String()},
			"", closePolicy, false)
		return
	}
	s.watchdog.Reset(limit - idle)
}

// beat is the heart-beat timer's: a heart-beat goes out unless other
// frames do, written on the timer's goroutine when it can be
// (writeInline), else by the writer.
func (s *Session) beat() {
	s.beatDue.Store(true)
	s.flush()
}
