//go:build !unix

package pipeline

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// quietConn is the portable fallback: a read with a short deadline in the
// future (a deadline in the past would not touch the socket). It consumes
// a byte if one is there, which only happens on a connection that is
// unusable anyway.
func quietConn(conn net.Conn, _ *syscall.RawConn) bool {
	conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer conn.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := conn.Read(b[:])
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

// peekSupported says that peekHangup does not work here: the hang-up watch
// reads a byte ahead instead (pushbackConn).
const peekSupported = false

func peekHangup(syscall.RawConn) bool { return false }

// readableWait is unused where there is no peek (idleWait reads a byte
// ahead instead).
type readableWait struct{ polled bool }

func (r *readableWait) ready(uintptr) bool { return true }
