//go:build !unix

package pipeline

import (
	"errors"
	"net"
	"time"
)

// peekConn is the portable fallback: a read with a short deadline in the
// future (a deadline in the past would not touch the socket). It consumes
// a byte if one is there, which only happens on a connection that is
// unusable anyway.
func peekConn(conn net.Conn) error {
	conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer conn.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := conn.Read(b[:])
	if n > 0 {
		return errors.New("origin sent data on an idle connection")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}
