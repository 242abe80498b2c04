package stompws

import (
	"syscall"
	"unsafe"
)

// peekReady reports whether the socket has input (or an error or EOF to
// report), without taking any: recv(MSG_PEEK|MSG_DONTWAIT) of one byte.
// EAGAIN means nothing yet, and the runtime's poller waits for more.
func peekReady(fd uintptr, b []byte) bool {
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN
}
