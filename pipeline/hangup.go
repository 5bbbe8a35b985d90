package pipeline

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// hangupDelay is how long an exchange runs before its caller's
// connection is watched for a hang-up. Most exchanges end sooner and cost
// no goroutine for it; a slow one (a session being established, a slow
// origin) gets one watcher.
var hangupDelay = 50 * time.Millisecond

// hangupWatch notices a caller that closes or resets its connection while
// an exchange is in flight and aborts the exchange (errCallerGone), as
// net/http's background read and nginx's client-abort check do. It reads
// the connection only to learn that: it peeks (MSG_PEEK) so that a
// pipelined request stays where it is, and stops at the first byte the
// caller sends (that caller is not gone). After a request with
// Connection: close it reads and discards instead: nothing the caller
// sends then is a request.
//
// The exchange's goroutine arms it (a timer) and stops it (a read deadline
// in the past, then a join) before it reads the connection again. A
// request body's goroutine runs the watch itself once the body is sent.
type hangupWatch struct {
	conn net.Conn
	// rc peeks at the socket; nil when the connection has none, and then
	// pb takes a byte and hands it back to the reader.
	rc syscall.RawConn
	pb *pushbackConn
	// idle is the state of idleWait's callback; ready is its method value,
	// made once per connection so that a wait allocates nothing.
	idle  readableWait
	ready func(fd uintptr) bool

	t       *time.Timer
	done    chan struct{} // a fired watch ended
	armed   bool
	x       atomic.Pointer[clientExchange]
	consume atomic.Bool
}

// init prepares the watch for conn and returns the reader the
// connection's requests are read from.
func (w *hangupWatch) init(conn net.Conn) io.Reader {
	w.conn = conn
	if sc, ok := conn.(syscall.Conn); ok && peekSupported {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc = rc
			w.ready = w.idle.ready
			return conn
		}
	}
	w.pb = &pushbackConn{Conn: conn}
	return w.pb
}

// arm starts the timer that watches x after hangupDelay.
func (w *hangupWatch) arm(x *clientExchange, consume bool) {
	w.x.Store(x)
	w.consume.Store(consume)
	w.armed = true
	if w.t == nil {
		w.done = make(chan struct{}, 1)
		w.t = time.AfterFunc(hangupDelay, w.fire)
		return
	}
	w.t.Reset(hangupDelay)
}

func (w *hangupWatch) fire() {
	w.watch(w.x.Load(), w.consume.Load())
	w.done <- struct{}{}
}

// stop disarms the timer, or ends the watch it started and waits for it.
// It reports whether a watch ran: the read deadline is then in the past,
// and the caller sets the one it needs.
func (w *hangupWatch) stop() bool {
	if !w.armed {
		return false
	}
	w.armed = false
	if w.t.Stop() {
		return false
	}
	w.conn.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	return true
}

// watch blocks until the caller hangs up (then x is aborted), sends
// something (with consume: until it hangs up), or the read deadline
// passes.
func (w *hangupWatch) watch(x *clientExchange, consume bool) {
	if consume {
		var buf [512]byte
		for {
			if _, err := w.conn.Read(buf[:]); err != nil {
				if callerGone(err) {
					x.abort(errCallerGone)
				}
				return
			}
		}
	}
	var gone bool
	if w.rc != nil {
		gone = peekHangup(w.rc)
	} else {
		gone = w.pb.readAhead()
	}
	if gone {
		x.abort(errCallerGone)
	}
}

// idleWait blocks, between two requests of a keep-alive connection and
// without consuming anything, until the caller sends something, closes or
// resets its connection, or the read deadline passes: the connection's
// reader then reads whatever it is. Not a watch (there is no exchange to
// abort), and never run while one is: both read the connection.
func (w *hangupWatch) idleWait() {
	if w.rc != nil {
		// The error is the deadline's or the connection's, and the read
		// that follows meets it too.
		w.idle.polled = false
		_ = w.rc.Read(w.ready)
		return
	}
	// A byte read ahead goes to the reader first; a failure is met
	// again by the reader's read.
	w.pb.readAhead()
}

// pushbackConn is the caller's connection where the watch cannot peek: the
// watch reads one byte ahead, and the next Read returns it first.
type pushbackConn struct {
	net.Conn
	mu    sync.Mutex
	ahead []byte
	buf   [1]byte
}

func (c *pushbackConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.ahead) > 0 && len(p) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// readAhead waits for a byte, keeps it for Read, and reports whether the
// caller is gone instead.
func (c *pushbackConn) readAhead() (gone bool) {
	n, err := c.Conn.Read(c.buf[:])
	if n > 0 {
		c.mu.Lock()
		c.ahead = c.buf[:n]
		c.mu.Unlock()
		return false
	}
	return err != nil && callerGone(err)
}
