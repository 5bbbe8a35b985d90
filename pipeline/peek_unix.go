//go:build unix

package pipeline

import (
	"net"
	"syscall"
)

// quietConn reports, without blocking and without consuming anything,
// whether an idle connection is open with nothing to read: not closed by
// the peer (a zero-byte peek), not carrying bytes nobody asked for, not in
// error. A read with a deadline in the past cannot tell: Go reports the
// timeout without reading the socket, so a closed connection would look
// alive. *rc caches the connection's RawConn between calls.
func quietConn(conn net.Conn, rc *syscall.RawConn) bool {
	if *rc == nil {
		sc, ok := conn.(syscall.Conn)
		if !ok {
			return true
		}
		r, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		*rc = r
	}
	var p peek
	cerr := (*rc).Read(p.once)
	return cerr == nil && p.quiet
}

// peek holds a non-blocking MSG_PEEK of one byte; once is its RawConn.Read
// callback (a method value of a local, so nothing escapes per call).
type peek struct {
	b     [1]byte
	quiet bool
}

func (p *peek) once(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), p.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	p.quiet = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	return true // never wait for readiness
}

// peekSupported says that peekHangup works here.
const peekSupported = true

// peekHangup waits until the socket is readable, without consuming
// anything, and reports whether the peer closed or reset it (as opposed to
// sending bytes, or the read deadline passing). The wait parks in the
// runtime's poller like any read; a deadline in the past ends it.
func peekHangup(rc syscall.RawConn) (gone bool) {
	var b [1]byte
	var (
		n   int
		err error
	)
	cerr := rc.Read(func(fd uintptr) bool {
		n, _, err = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Not ready yet: wait for readiness and try again.
		return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
	})
	if cerr != nil {
		return false // the deadline, or the connection closed here
	}
	return err != nil || n == 0
}

// readableWait is the RawConn.Read callback of idleWait: done once the
// socket is readable (bytes, the end of the stream or an error are there)
// without consuming anything, and otherwise waiting for readiness in the
// runtime's poller, like any read; the read deadline ends the wait.
//
// Only the first call peeks: the poller's readiness was reset when the
// Read began, so bytes that came before would never wake it. When the
// poller calls again it has seen the socket become readable, and a second
// peek would only repeat what the reader's read is about to learn: the
// wait then costs no more syscalls than the blocking read it replaces.
type readableWait struct {
	b      [1]byte
	polled bool
}

func (r *readableWait) ready(fd uintptr) bool {
	if r.polled {
		return true
	}
	r.polled = true
	for {
		_, _, err := syscall.Recvfrom(int(fd), r.b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err != syscall.EINTR {
			return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
		}
	}
}
