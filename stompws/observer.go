// The Observer: what the server reports for metrics.

package stompws

// Observer is told what the server does, for metrics. Its methods run on
// hot paths, some under a session's lock: they must be quick, must not
// block, and must not call back into the server. Config.Observer nil means
// nothing observes.
type Observer interface {
	// ConnectionOpened and ConnectionClosed bracket every accepted WebSocket.
	ConnectionOpened()
	ConnectionClosed()
	// SessionConnected follows a successful CONNECT; SessionEnded closes
	// exactly those sessions.
	SessionConnected()
	SessionEnded()
	// FrameIn is called for every client frame (heart-beats excluded) with
	// its command as the client spelt it: bound the cardinality yourself.
	FrameIn(command string)
	// FramesOut counts n frames of one command written to a client:
	// CONNECTED, MESSAGE, RECEIPT or ERROR.
	FramesOut(command string, n int)
	// Subscribed and Unsubscribed bracket every subscription in place.
	Subscribed()
	Unsubscribed()
	// ErrorSent is called once for each ERROR frame queued to a client, with
	// its kind (KindConnect...; KindOther for an Error without one).
	ErrorSent(kind string)
	// SlowConsumer is called when a client is cut off for not keeping up.
	SlowConsumer()
	// SessionCut is called when the server cuts a connection without its
	// close handshake, with why: one of the Cut constants.
	SessionCut(reason string)
}

// Why the server cut a connection (Observer.SessionCut), a small fixed set
// for metrics.
const (
	// CutWriteTimeout: a write waited WriteTimeout, and the client had sent
	// nothing (no frame, no heart-beat) for as long.
	CutWriteTimeout = "write_timeout"
	// CutWriteStall: a write waited WriteStallMax, although the client kept
	// sending.
	CutWriteStall = "write_stall"
	// CutShutdown: the connection had not closed when Shutdown's context
	// ended.
	CutShutdown = "shutdown"
)

type nopObserver struct{}

func (nopObserver) ConnectionOpened()     {}
func (nopObserver) ConnectionClosed()     {}
func (nopObserver) SessionConnected()     {}
func (nopObserver) SessionEnded()         {}
func (nopObserver) FrameIn(string)        {}
func (nopObserver) FramesOut(string, int) {}
func (nopObserver) Subscribed()           {}
func (nopObserver) Unsubscribed()         {}
func (nopObserver) ErrorSent(string)      {}
func (nopObserver) SlowConsumer()         {}
func (nopObserver) SessionCut(string)     {}

// Commands of the frames the server writes, as passed to FramesOut.
const (
	CmdConnected = "CONNECTED"
	CmdMessage   = "MESSAGE"
	CmdReceipt   = "RECEIPT"
	CmdError     = "ERROR"
)

// rawCommand names a pre-encoded server frame (CONNECTED, RECEIPT or
// ERROR; MESSAGEs are encoded as they are written) by its first byte.
func rawCommand(raw []byte) string {
	switch {
	case len(raw) == 0:
	case raw[0] == 'R':
		return CmdReceipt
	case raw[0] == 'E':
		return CmdError
	case raw[0] == 'C':
		return CmdConnected
	}
	return ""
}
