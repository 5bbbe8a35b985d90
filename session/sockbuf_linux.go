//go:build linux

package session

import (
	"net"
	"syscall"
)

// readBuffer returns the buffer size the kernel granted, halved because
// Linux reports (and allocates) double the value set with setsockopt to
// account for bookkeeping overhead (socket(7)). When the plain setsockopt
// was capped by net.core.{r,w}mem_max it retries with the *BUFFORCE option,
// which succeeds with CAP_NET_ADMIN (quic-go does the same).
func readBuffer(udp *net.UDPConn, which string, requested int) (int, bool) {
	rc, err := udp.SyscallConn()
	if err != nil {
		return 0, false
	}
	opt, force := syscall.SO_RCVBUF, syscall.SO_RCVBUFFORCE
	if which == "send" {
		opt, force = syscall.SO_SNDBUF, syscall.SO_SNDBUFFORCE
	}
	get := func() (int, bool) {
		var v int
		var serr error
		if err := rc.Control(func(fd uintptr) { v, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, opt) }); err != nil || serr != nil {
			return 0, false
		}
		return v / 2, true
	}
	v, ok := get()
	if !ok || v >= requested {
		return v, ok
	}
	_ = rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, force, requested) })
	return get()
}
