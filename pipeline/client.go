package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// ClientOptions configure the client side: HTTP/1.1 in, HTTP/3 out.
type ClientOptions struct {
	Tunnel       Tunnel
	AddForwarded bool
	Limits       httpio.Limits
	// HeaderReadTimeout bounds the wait for a complete request head,
	// including the idle time before it on a keep-alive connection
	// (0 = no bound).
	HeaderReadTimeout time.Duration
	Names             httpio.NameCase
	Logger            *slog.Logger
	// Now is the clock for Date fields; nil means time.Now.
	Now func() time.Time
	// Observer, when set, is told about every exchange.
	Observer Observer
	// Draining, once closed, makes every connection stop at its next
	// request boundary: in-flight exchanges finish, idle keep-alive
	// connections close.
	Draining context.Context
	// Router sends requests to named endpoints of the server; nil sends
	// them all to the default endpoint.
	Router *Router
	// DefaultHost is the authority given to an HTTP/1.0 request that has no
	// Host (RFC 9112 3.2 requires Host only from HTTP/1.1 clients). Empty
	// means the address the caller connected to, which is what it would
	// have sent as Host had it sent one.
	DefaultHost string
}

// errCallerGone ends an exchange when the caller closed or reset its
// side: the exchange in flight is cancelled (the tunnel stream is reset
// and the server stops the origin exchange) instead of running on for
// nobody, as net/http's background read and nginx's client-abort check do.
var errCallerGone = errors.New("caller closed the connection")

// clientConn is one caller connection. Everything happens on the
// goroutine that runs ServeClientConn: requests are read, carried through
// the tunnel and answered one after the other (pipelined requests wait,
// parsed, in the reader's buffer). The only other goroutines are the
// request body's (clientUpload: while a request body is sent, and after it
// to watch for a hang-up), and two timers' when they fire: the hang-up
// watch of an exchange that takes longer than hangupDelay, and the flush
// of a response whose rest does not come within flushDelay.
type clientConn struct {
	ctx  context.Context
	conn net.Conn
	o    *ClientOptions
	peer Peer
	r    *httpio.Reader
	sink callerSink
	// watch notices the caller hanging up while an exchange is in flight.
	watch hangupWatch
	// x is the exchange in flight; one is reused for all of them.
	x   clientExchange
	req httpio.Request
	// gone is set when the caller closed or reset its connection: it is
	// closed at once instead of lingering.
	gone bool
}

// ServeClientConn serves the client side on one accepted HTTP/1.1
// connection until the caller closes it, an exchange requires closing it, or
// ctx ends. It closes conn before returning.
func ServeClientConn(ctx context.Context, conn net.Conn, o *ClientOptions) error {
	c := &clientConn{
		ctx:  ctx,
		conn: conn,
		o:    o,
		peer: Peer{For: conn.RemoteAddr().String(), By: conn.LocalAddr().String(), Proto: "http"},
	}
	if _, ok := conn.(*tls.Conn); ok {
		c.peer.Proto = "https"
	}
	src := c.watch.init(conn)
	c.r = httpio.NewReader(src, o.Limits)
	c.sink.init(conn, o)
	c.x.c = c
	err := c.serve()
	c.sink.w.Flush()
	c.sink.release()
	c.r.Release()
	// Whatever ended the connection (a closing exchange, a refused
	// request, a body cut by the cancellation), the caller may still be
	// sending and not have read its answer yet; unless it is gone.
	if c.gone {
		conn.Close()
	} else {
		lingerClose(conn)
	}
	return err
}

// serve reads requests and runs their exchanges until one of them, or the
// caller, ends the connection.
func (c *clientConn) serve() error {
	// The end of ctx interrupts whatever waits on the caller or the
	// tunnel.
	stop := context.AfterFunc(c.ctx, func() {
		c.conn.SetDeadline(time.Unix(1, 0))
		c.x.abort(context.Cause(c.ctx))
	})
	defer stop()
	// idle is set while waiting for the first byte of the next request,
	// the only point where a draining connection may be closed.
	var idle atomic.Bool
	draining := c.o.Draining
	if draining != nil {
		stopDrain := context.AfterFunc(draining, func() {
			if idle.Load() {
				c.conn.SetReadDeadline(time.Unix(1, 0))
			}
		})
		defer stopDrain()
	}
	headerTimeout := c.o.HeaderReadTimeout
	for {
		if headerTimeout > 0 {
			c.setReadDeadline(time.Now().Add(headerTimeout))
		}
		if c.r.Buffered() == 0 {
			// Nothing more is coming at once: what is written goes out.
			if err := c.sink.w.Flush(); err != nil {
				return nil
			}
			c.sink.park() // an idle caller holds no write or copy buffer
			idle.Store(true)
			if draining != nil && draining.Err() != nil {
				return nil
			}
			// Nor a read buffer: it waits for its next request without
			// one, and the reader takes one once there is something to
			// read (the end of the stream included). A deadline (the
			// header timeout, a drain, the end of ctx) ends the wait
			// too, and ReadRequest then reports it.
			c.r.Park()
			c.watch.idleWait()
		}
		err := c.r.ReadRequest(&c.req)
		idle.Store(false)
		if err != nil {
			if perr, ok := errors.AsType[*httpio.Error](err); ok && perr.Kind != httpio.ErrUnexpectedEOF {
				ex := startExchange(c.o.Observer, ClientSide, nil, c.peer.For)
				c.sink.fail(NewError(KindBadRequest, ClientSide, MsgBadRequest, err), ex)
				return nil
			}
			// Nothing to answer, and nobody left to answer it when the
			// caller is gone. A timeout (header_read_timeout, drain,
			// cancellation) ends the connection too.
			c.gone = callerGone(err)
			return nil
		}
		if headerTimeout > 0 {
			c.setReadDeadline(time.Time{})
		}
		keep, err := c.exchange()
		if !keep {
			return err
		}
	}
}

// setReadDeadline sets the read deadline of the caller's connection,
// unless the connection's context has ended: its deadline in the past
// stays.
func (c *clientConn) setReadDeadline(t time.Time) {
	c.conn.SetReadDeadline(t)
	if c.ctx.Err() != nil {
		c.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// exchange handles the request just read and reports whether the
// connection can carry another one.
func (c *clientConn) exchange() (keep bool, err error) {
	req := &c.req
	head, herr := RequestHead(req, c.peer)
	if herr != nil {
		ex := startExchange(c.o.Observer, ClientSide, &Head{Method: req.Method, Authority: req.Host, Path: req.Path}, c.peer.For)
		c.sink.fail(herr, ex)
		return false, nil
	}
	if req.Host == "" && c.o.DefaultHost != "" {
		head.Authority = c.o.DefaultHost
	}
	head.ex = startExchange(c.o.Observer, ClientSide, head, c.peer.For)
	// Whatever path ends the exchange without reporting it (the caller
	// went away before a response), it is reported once.
	defer head.ex.finish(0, Aborted, nil)
	if nerr := Normalize(head, Policy{Side: ClientSide, AddForwarded: c.o.AddForwarded}); nerr != nil {
		c.sink.fail(nerr, head.ex)
		return false, nil
	}
	c.o.Router.route(head)
	return c.x.run(head)
}

// Bounds of lingerClose: how long the caller may pause, and how long the
// whole linger may take. There is no byte bound: a caller that writes its
// whole body before reading (ab, many HTTP/1.0 clients) reads the answer
// only once the proxy took all of it, and a byte bound below the rest of
// its upload would reset the connection under that answer. Time bounds
// the work instead, as nginx's lingering_timeout and lingering_time do.
const (
	lingerTime    = time.Second
	lingerMaxTime = 10 * time.Second
)

// lingerClose closes a connection the caller may still be sending on (an
// upload cut short by an early answer, requests pipelined after a close)
// without destroying the response it has not read yet: closing a socket
// with unread input sends a reset, which can overtake the response's last
// bytes (RFC 9112 9.6). So the write side is shut first (the caller sees
// the end of the response), and what the caller still sends is read and
// discarded until it closes too, or pauses for lingerTime, for at most
// lingerMaxTime.
func lingerClose(conn net.Conn) {
	defer conn.Close()
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	io.Copy(io.Discard, lingerReader{conn: conn, end: time.Now().Add(lingerMaxTime)})
}

// lingerReader reads conn with a deadline lingerTime ahead of each read,
// never past end.
type lingerReader struct {
	conn net.Conn
	end  time.Time
}

func (l lingerReader) Read(p []byte) (int, error) {
	d := time.Now().Add(lingerTime)
	if d.After(l.end) {
		d = l.end
	}
	l.conn.SetReadDeadline(d)
	return l.conn.Read(p)
}

// callerGone reports whether a read error means the caller closed or
// reset its connection (as opposed to a deadline).
func callerGone(err error) bool {
	if herr, ok := errors.AsType[*httpio.Error](err); ok {
		return herr.Kind == httpio.ErrUnexpectedEOF
	}
	return errors.Is(err, io.EOF) || isConnReset(err)
}

// publicClasser is a tunnel error that knows what of it a caller may learn
// (the session's NotReadyError does).
type publicClasser interface {
	error
	PublicClass() string
}

// tunnelError classifies a failure to get a response head through the
// tunnel. bodyDone reports whether the whole request body went out.
func tunnelError(err error, bodyDone bool) *Error {
	switch {
	case errors.Is(err, h3.ErrFieldSectionTooLarge):
		// Nothing was sent: the server side announced a smaller
		// SETTINGS_MAX_FIELD_SECTION_SIZE than this head needs.
		e := NewError(KindBadRequest, ClientSide, MsgBadRequest, err)
		e.Status, e.Public = http.StatusRequestHeaderFieldsTooLarge, "request header section larger than the server side accepts"
		return e
	case errors.Is(err, ErrTunnelDown):
		e := NewError(KindUnavailable, ClientSide, MsgTunnelDown, err)
		if pc, ok := errors.AsType[publicClasser](err); ok {
			e.Public = pc.PublicClass()
		}
		return e
	case errors.Is(err, ErrDraining):
		return NewError(KindDraining, ClientSide, MsgDraining, err)
	case !bodyDone:
		return NewError(KindUpstream, ClientSide, MsgStreamingBody, err)
	default:
		return NewError(KindUpstream, ClientSide, MsgSendingRequest, err)
	}
}

func logFailure(l *slog.Logger, e *Error) {
	if l == nil {
		return
	}
	switch e.Kind {
	case KindBadRequest, KindMethodNotAllowed, KindNotFound, KindForbidden:
		// (The last two were logged at WARN with the endpoint by route.)
		l.Debug("request rejected", "status", e.Status, "side", e.Side.String(), "error", e.Error())
	default:
		l.Warn("request failed", "status", e.Status, "side", e.Side.String(), "error", e.Error())
	}
}
