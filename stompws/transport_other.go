//go:build !linux

// Elsewhere than Linux the transport has no non-blocking system calls:
// pings and writes go through coder/websocket and the session's writer.

package stompws

// peekReady has no portable form; elsewhere the read loop waits in the
// WebSocket reader itself.
func peekReady(uintptr, []byte) bool { return true }

// recvNonblock has no portable form: pings are left to the WebSocket
// reader (Session.answerPing).
func recvNonblock(uintptr, []byte, bool) int { return 0 }

// canWriteNow: elsewhere every frame goes through the session's writer.
const canWriteNow = false

func writeNonblock(uintptr, []byte) (int, error) { return 0, nil }
