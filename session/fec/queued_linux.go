//go:build linux

package fec

import (
	"net"
	"syscall"
	"unsafe"
)

// queued reports whether datagrams wait in pc's socket receive queue
// (FIONREAD). A receiver that fell behind must read them before giving up
// a gap: the repair may be among them.
func queued(pc net.PacketConn) bool {
	sc, ok := pc.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	}); err != nil || errno != 0 {
		return false
	}
	return n > 0
}
