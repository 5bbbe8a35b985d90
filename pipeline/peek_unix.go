//go:build unix

package pipeline

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// errUnsolicited is an idle connection that has bytes to read although no
// request is outstanding.
var errUnsolicited = errors.New("origin sent data on an idle connection")

// peekConn checks an idle connection without blocking and without
// consuming anything: nil when nothing is pending (the connection is open
// and quiet), io.EOF when the peer closed it, errUnsolicited when bytes
// are waiting, or the socket's error. A read with a deadline in the past
// cannot do this: Go reports the timeout without reading the socket, so a
// closed connection would look alive.
func peekConn(conn net.Conn) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var result error
	var b [1]byte
	cerr := rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			result = nil
		case err != nil:
			result = err
		case n == 0:
			result = io.EOF
		default:
			result = errUnsolicited
		}
		return true // never wait for readiness
	})
	if cerr != nil {
		return cerr
	}
	return result
}
