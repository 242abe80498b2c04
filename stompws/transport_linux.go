// The Linux system calls of the transport: the peek that waits for input
// without taking it, the non-blocking reads of a ping, and non-blocking
// writes.

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

// recvNonblock is one recv(2) of up to len(b) bytes without waiting; with
// peek the bytes stay in the socket. 0: nothing there, or an error (which
// the next read reports).
func recvNonblock(fd uintptr, b []byte, peek bool) int {
	flags := syscall.MSG_DONTWAIT
	if peek {
		flags |= syscall.MSG_PEEK
	}
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		uintptr(flags), 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

// canWriteNow: writeNonblock works here.
const canWriteNow = true

// writeNonblock is one write(2) on a non-blocking socket: 0 written, no
// error, when its buffer is full.
func writeNonblock(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return 0, nil
		case err != nil:
			return 0, err
		}
		return n, nil
	}
}
