package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// Tunnel carries one request over the HTTP/3 session. The session package's
// client satisfies it through an adapter in the composition root, which maps
// "no session" to ErrTunnelDown and "shutting down" to ErrDraining.
type Tunnel interface {
	RoundTrip(*http.Request) (*http.Response, error)
}

// Errors a Tunnel returns that are answered with 503 instead of 502.
var (
	ErrTunnelDown = errors.New("tunnel not established")
	ErrDraining   = errors.New("shutting down")
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
	// DefaultHost is the authority given to an HTTP/1.0 request that has no
	// Host (RFC 9112 3.2 requires Host only from HTTP/1.1 clients). Empty
	// means the address the caller connected to, which is what it would
	// have sent as Host had it sent one.
	DefaultHost string
}

// errCallerGone ends a connection's pipeline when the caller closed or
// reset its side: the exchange in flight is cancelled (the tunnel stream
// is reset and the server stops the origin exchange) instead of running on
// for nobody, as net/http's background read and nginx's client-abort check
// do.
var errCallerGone = errors.New("caller closed the connection")

// ServeClientConn runs the client pipeline on one accepted HTTP/1.1
// connection until the caller closes it, an exchange requires closing it, or
// ctx ends. It closes conn before returning.
func ServeClientConn(ctx context.Context, conn net.Conn, o *ClientOptions) (err error) {
	gone := false
	defer func() {
		// Whatever ended the connection (a closing exchange, a refused
		// request, a body cut by the cancellation), the caller may still be
		// sending and not have read its answer yet; unless it is gone.
		if gone {
			conn.Close()
		} else {
			lingerClose(conn)
		}
	}()
	peer := Peer{For: conn.RemoteAddr().String(), By: conn.LocalAddr().String(), Proto: "http"}
	r := httpio.NewReader(conn, o.Limits)
	defer r.Release()
	w := httpio.NewWriter(conn, o.Names)
	defer w.Release()
	var exs exchanges
	defer exs.abortAll()
	// Normalize runs inside the source (as on the server side) rather than
	// as a stage of its own: it is a pure function of the head, and every
	// goroutine hand-off on the way costs a wake-up on the latency path.
	err = Run(ctx,
		readRequests(conn, r, peer, o, &exs),
		forwardToTunnel(o),
		writeResponses(conn, w, o),
	)
	if errors.Is(err, errCallerGone) {
		gone = true
		return nil
	}
	return err
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

// readRequests is the client source: it parses requests off the caller's
// connection and emits Head, Chunk..., End for each, or a Fail for a request
// it rejects, after which it stops reading (the connection closes).
func readRequests(conn net.Conn, r *httpio.Reader, peer Peer, o *ClientOptions, exs *exchanges) Stage {
	headerTimeout, draining := o.HeaderReadTimeout, o.Draining
	return func(ctx context.Context, _ <-chan Msg, out chan<- Msg) error {
		stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
		// idle is set while waiting for the first byte of the next request,
		// the only point where a draining connection may be closed.
		var idle atomic.Bool
		if draining != nil {
			stopDrain := context.AfterFunc(draining, func() {
				if idle.Load() {
					conn.SetReadDeadline(time.Unix(1, 0))
				}
			})
			defer stopDrain()
		}
		var req httpio.Request
		for {
			if headerTimeout > 0 {
				conn.SetReadDeadline(time.Now().Add(headerTimeout))
			}
			idle.Store(r.Buffered() == 0)
			if draining != nil && draining.Err() != nil && r.Buffered() == 0 {
				return nil
			}
			err := r.ReadRequest(&req)
			idle.Store(false)
			if err != nil {
				var perr *httpio.Error
				if errors.As(err, &perr) && perr.Kind != httpio.ErrUnexpectedEOF {
					ex := startExchange(o.Observer, ClientSide, nil, peer.For)
					exs.add(ex)
					return Send(ctx, out, &Fail{Err: NewError(KindBadRequest, ClientSide, MsgBadRequest, err), ex: ex})
				}
				if callerGone(err) {
					// Nothing to answer, and nobody left to answer what is
					// in flight.
					return errCallerGone
				}
				// A timeout (header_read_timeout, drain, cancellation) ends
				// reading, not the exchange in flight.
				return nil
			}
			if headerTimeout > 0 {
				conn.SetReadDeadline(time.Time{})
			}
			head, herr := RequestHead(&req, peer)
			if herr == nil && req.Host == "" && o.DefaultHost != "" {
				head.Authority = o.DefaultHost
			}
			if herr != nil {
				ex := startExchange(o.Observer, ClientSide, &Head{Method: req.Method, Authority: req.Host, Path: req.Path}, peer.For)
				exs.add(ex)
				return Send(ctx, out, &Fail{Err: herr, ex: ex})
			}
			head.ex = startExchange(o.Observer, ClientSide, head, peer.For)
			exs.add(head.ex)
			ex := head.ex
			if nerr := Normalize(head, Policy{Side: ClientSide, AddForwarded: o.AddForwarded}); nerr != nil {
				return Send(ctx, out, &Fail{Err: nerr, ex: ex})
			}
			if err := Send(ctx, out, head); err != nil {
				return nil
			}
			if err := readBody(ctx, r, out, ex); err != nil {
				if malformed(err) != nil {
					// A malformed body: the exchange cancels its stream and
					// answers 400 (see tunnelExchange); nothing more is read
					// and the connection closes after that answer.
					return nil
				}
				// The caller went away mid-request: nothing of this
				// connection can complete, so every stage stops now rather
				// than wait on the tunnel.
				return fmt.Errorf("reading request body from %s: %w", peer.For, err)
			}
			if head.Close {
				return awaitHangup(conn, r)
			}
		}
	}
}

// callerGone reports whether a read error means the caller closed or
// reset its connection (as opposed to a deadline).
func callerGone(err error) bool {
	if herr, ok := errors.AsType[*httpio.Error](err); ok {
		return herr.Kind == httpio.ErrUnexpectedEOF
	}
	return errors.Is(err, io.EOF) || isConnReset(err)
}

// awaitHangup runs after the caller's last request (it asked to close): it
// reads only to notice the caller going away, discarding anything it sends,
// so an exchange still in flight is cancelled when the caller hangs up. It
// returns when the pipeline is cancelled (the deadline set by
// readRequests' AfterFunc), or errCallerGone.
func awaitHangup(conn net.Conn, r *httpio.Reader) error {
	if r.Buffered() > 0 {
		// Bytes after a request that closes the connection are not read as
		// requests; they prove nothing about a hang-up either.
		r.Reset(conn)
	}
	// No deadline is set here: readRequests cleared the head's after
	// reading it, and only the cancellation sets one again.
	var buf [512]byte
	for {
		if _, err := conn.Read(buf[:]); err != nil {
			if callerGone(err) {
				return errCallerGone
			}
			return nil
		}
	}
}

// readBody emits the body of the message r last read as Chunks and an End.
// A read error is reported downstream in End.Err and returned.
func readBody(ctx context.Context, r *httpio.Reader, out chan<- Msg, ex *exchange) error {
	end := pumpBody(ctx, out, func(p []byte) (int, error) {
		n, _, err := r.ReadBody(p)
		return n, err
	}, func() httpio.Header { return r.Trailers().Clone() }, ex.addRequest)
	if err := Send(ctx, out, end); err != nil {
		return err
	}
	return end.Err
}

// forwardToTunnel is the client forwarder: one HTTP/3 request per Head,
// its response (interim ones included) sent on as Head, Chunk..., End.
func forwardToTunnel(o *ClientOptions) Stage {
	return func(ctx context.Context, in <-chan Msg, out chan<- Msg) error {
		closing := false
		for {
			m, ok := Recv(ctx, in)
			if !ok {
				return nil
			}
			if closing {
				// The connection closes after the response in flight; what the
				// caller still sends is not read on.
				Release(m)
				continue
			}
			switch m := m.(type) {
			case *Head:
				keep, err := tunnelExchange(ctx, m, in, out, o)
				if err != nil {
					return nil
				}
				closing = !keep
			case *Fail:
				if err := Send(ctx, out, m); err != nil {
					return nil
				}
				closing = true
			default:
				Release(m)
			}
		}
	}
}

// tunnelExchange carries one request through the tunnel. keep reports whether the
// caller's connection can carry another request afterwards; err means the
// downstream sink is gone.
func tunnelExchange(ctx context.Context, h *Head, in <-chan Msg, out chan<- Msg, o *ClientOptions) (keep bool, err error) {
	exCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	method := h.Method
	req := HTTP3Request(exCtx, h)
	var body *msgBody
	if h.Body.Kind == httpio.ChunkedBody || h.Body.Kind == httpio.LengthBody && h.Body.Length > 0 {
		if req.Trailer == nil {
			req.Trailer = http.Header{}
		}
		body = newMsgBody(exCtx, in, req.Trailer)
		body.onBad = cancel
		req.Body = body
	} else {
		// The source sends an End right after a bodiless head. quic-go
		// treats a Body with length 0 as unknown length, so none is set.
		if !drainExchange(ctx, in) {
			return false, nil
		}
	}
	var continued atomic.Bool // a 100 (Continue) was relayed to the caller
	interim := func(code int, hdr textproto.MIMEHeader) error {
		if code == http.StatusContinue {
			continued.Store(true)
		}
		ih := &Head{Status: code, Header: sortedFields(http.Header(hdr)), Major: h.Major, Minor: h.Minor}
		return Send(ctx, out, ih)
	}
	req = req.WithContext(httptrace.WithClientTrace(exCtx, &httptrace.ClientTrace{Got1xxResponse: interim}))

	resp, rtErr := o.Tunnel.RoundTrip(req)
	if rtErr != nil {
		bodyDone := finishBody(body)
		if herr := body.malformedBody(); herr != nil {
			// The caller's body was malformed (a bad chunk, a forbidden
			// trailer): its request is refused like a bad head, 4xx and
			// close; the stream was cancelled, so the origin never got a
			// complete request.
			return false, Send(ctx, out, &Fail{Err: NewError(KindBadRequest, ClientSide, MsgBadRequest, herr), ex: h.ex})
		}
		return false, Send(ctx, out, &Fail{Err: tunnelError(rtErr, bodyDone), ex: h.ex})
	}
	if herr := body.malformedBody(); herr != nil {
		// The answer raced the cancellation: it is the server's reaction
		// to the reset stream (a 502), not the origin's to the request.
		resp.Body.Close()
		finishBody(body)
		return false, Send(ctx, out, &Fail{Err: NewError(KindBadRequest, ClientSide, MsgBadRequest, herr), ex: h.ex})
	}
	rh := HeadFromHTTP3Response(resp, method)
	rh.Major, rh.Minor, rh.Close, rh.ex = h.Major, h.Minor, h.Close, h.ex
	drainRest := false
	if body != nil && !body.ended.Load() && !rh.Close {
		// An early response: the answer came before the whole request
		// body. The head must say now whether the connection survives.
		drainRest = canDrainRest(h, rh.Status, body.taken.Load(), continued.Load())
		rh.Close = !drainRest
	}
	if err := Send(ctx, out, rh); err != nil {
		resp.Body.Close()
		finishBody(body)
		return false, err
	}
	end := copyResponseBody(ctx, resp, out)
	resp.Body.Close()
	complete := finishBody(body)
	if !complete && drainRest && end.Err == nil {
		complete = drainRequestBody(ctx, in)
	}
	end.Close = !complete
	if err := Send(ctx, out, end); err != nil {
		return false, err
	}
	return complete && end.Err == nil && !rh.Close, nil
}

// maxDrainBytes bounds the rest of a request body read and discarded after
// an early response to keep the caller's connection (net/http's server
// reads up to the same 256 KiB).
const maxDrainBytes = 256 << 10

// maxDrainWait bounds the wait for that rest: a caller that promised a body
// and stops sending it loses the connection after its complete response.
const maxDrainWait = 10 * time.Second

// canDrainRest reports, when a response head comes before the whole request
// body, whether the connection can be expected to stay usable, so the head
// need not announce Connection: close. Not when the caller waits for a 100
// (Continue) it never got (RFC 9110 10.1.1: it may never send the body).
// A refusal (4xx/5xx) means the origin has stopped taking the body: the rest
// is read and discarded here only if its length is known and within
// maxDrainBytes. Any other status is taken for a full-duplex exchange (an
// echo, a streaming transform) whose body still flows to the origin and is
// normally complete when the response ends. Whatever is left at the end is
// drained within the same bounds (drainRequestBody); if that fails the
// connection closes without notice, which a caller still sending its
// body cannot mistake for a reusable connection.
func canDrainRest(h *Head, status int, taken int64, continued bool) bool {
	if httpio.HasToken(h.Header.Get("Expect"), "100-continue") && !continued {
		return false
	}
	if status < 400 {
		return true
	}
	return h.Body.Kind == httpio.LengthBody && h.Body.Length-taken <= maxDrainBytes
}

// drainRequestBody discards the rest of a request body (up to its *End),
// bounded by maxDrainWait and maxDrainBytes, and reports whether the end
// was reached.
func drainRequestBody(ctx context.Context, in <-chan Msg) bool {
	dctx, cancel := context.WithTimeout(ctx, maxDrainWait)
	defer cancel()
	var n int
	for {
		m, ok := Recv(dctx, in)
		if !ok {
			return false
		}
		switch m := m.(type) {
		case *End:
			return m.Err == nil
		case *Chunk:
			n += len(m.Data)
		}
		Release(m)
		if n > maxDrainBytes {
			return false
		}
	}
}

// finishBody takes the input channel back from the http3 body goroutine and
// reports whether the request body was consumed to its End. A body still
// arriving is abandoned: the connection will close.
func finishBody(body *msgBody) bool {
	if body == nil {
		return true
	}
	return body.abort()
}

// copyResponseBody streams resp.Body as Chunks and returns the End to send.
func copyResponseBody(ctx context.Context, resp *http.Response, out chan<- Msg) *End {
	return pumpBody(ctx, out, resp.Body.Read, func() httpio.Header { return sortedFields(resp.Trailer) }, nil)
}

// publicClasser is a tunnel error that knows what of it a caller may learn
// (the session's NotReadyError does).
type publicClasser interface {
	error
	PublicClass() string
}

// tunnelError classifies a RoundTrip failure.
func tunnelError(err error, bodyDone bool) *Error {
	switch {
	case errors.Is(err, ErrTunnelDown):
		e := NewError(KindUnavailable, ClientSide, MsgTunnelDown, err)
		if pc, ok := errors.AsType[publicClasser](err); ok {
			e.Public = pc.PublicClass()
		}
		return e
	case errors.Is(err, ErrDraining):
		return NewError(KindDraining, ClientSide, MsgDraining, err)
	case errors.Is(err, errBodyAborted) || !bodyDone:
		return NewError(KindUpstream, ClientSide, MsgStreamingBody, err)
	default:
		return NewError(KindUpstream, ClientSide, MsgSendingRequest, err)
	}
}

// writeResponses is the client sink: it writes each response to the caller
// as HTTP/1.1, and synthesises one for a Fail.
func writeResponses(conn net.Conn, w *httpio.Writer, o *ClientOptions) Stage {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return func(ctx context.Context, in <-chan Msg, _ chan<- Msg) error {
		stop := context.AfterFunc(ctx, func() { conn.SetWriteDeadline(time.Unix(1, 0)) })
		defer stop()
		var (
			cur       *Head // response being written
			frame     Frame // how cur's body is framed (CallerFraming)
			remain    int64 // FrameLength: body bytes still due
			closeConn bool
		)
		flushIfIdle := func() error {
			if len(in) == 0 {
				return w.Flush()
			}
			return nil
		}
		for {
			m, ok := Recv(ctx, in)
			if !ok {
				if cur != nil {
					// The head is out and the body will not complete:
					// closing without the rest of the framing is the only
					// signal left.
					cur.ex.finish(cur.Status, Cut, nil)
				}
				w.Flush()
				return nil
			}
			var err error
			switch m := m.(type) {
			case *Fail:
				if cur != nil {
					// A head is out: the only honest signal left is closing.
					cur.ex.finish(cur.Status, Cut, nil)
					return w.Flush()
				}
				sh, sb := Synthesize(m.Err)
				logFailure(o.Logger, m.Err)
				m.ex.addResponse(len(sb.Data))
				m.ex.finish(sh.Status, Synthetic, m.Err)
				if err = w.WriteResponseHead(sh.Status, http.StatusText(sh.Status), CallerResponseFields(sh, now(), true)); err == nil {
					_, err = w.Write(sb.Data)
				}
				sb.Release()
				if err == nil {
					err = w.Flush()
				}
				return err
			case *Head:
				if m.Status < 200 {
					// RFC 9110 15.2: no 1xx to an HTTP/1.0 caller.
					if m.Major == 1 && m.Minor >= 1 {
						err = w.WriteResponseHead(m.Status, http.StatusText(m.Status), m.Header)
						if err == nil {
							err = w.Flush()
						}
					}
					break
				}
				cur = m
				frame = CallerFraming(m)
				remain = m.Body.Length
				closeConn = m.Close || frame == FrameClose
				err = w.WriteResponseHead(m.Status, http.StatusText(m.Status), CallerResponseFields(m, now(), closeConn))
				if err == nil {
					err = flushIfIdle()
				}
			case *Chunk:
				switch frame {
				case FrameChunked:
					err = w.WriteChunk(m.Data)
				case FrameNone:
					// Nothing may follow the head; an upstream that sent
					// bytes anyway does not get them onto the connection.
				case FrameLength:
					if int64(len(m.Data)) > remain {
						// More than the head announced: what fits goes out,
						// then the connection closes (the caller has a
						// complete message; the excess is not framed).
						w.Write(m.Data[:remain])
						err = errLengthMismatch
					} else {
						_, err = w.Write(m.Data)
					}
					remain -= int64(len(m.Data))
				default:
					_, err = w.Write(m.Data)
				}
				if err == nil && cur != nil {
					cur.ex.addResponse(len(m.Data))
				}
				m.Release()
				if err == nil {
					err = flushIfIdle()
				}
			case *End:
				if m.Err == nil && cur != nil && frame == FrameLength && remain > 0 {
					// Fewer bytes than announced: a cut body, whatever the
					// upstream said.
					m.Err = errLengthMismatch
				}
				if cur != nil {
					outcome := Completed
					if m.Err != nil {
						outcome = Cut
					}
					cur.ex.finish(cur.Status, outcome, nil)
				}
				if m.Err != nil {
					// Cut short after the head: close without completing the
					// framing, so the caller cannot mistake it for complete.
					if o.Logger != nil {
						o.Logger.Warn("error when proxying response", "error", m.Err)
					}
					w.Flush()
					return nil
				}
				if frame == FrameChunked {
					err = w.WriteLastChunk(m.Trailers)
				}
				if err == nil {
					err = flushIfIdle()
				}
				if closeConn || m.Close {
					w.Flush()
					return nil
				}
				cur = nil
			}
			if err != nil {
				if cur != nil {
					cur.ex.finish(cur.Status, Cut, nil)
				}
				w.Flush()
				return nil
			}
		}
	}
}

// errLengthMismatch is a response body that did not match its
// Content-Length.
var errLengthMismatch = errors.New("response body length differs from its Content-Length")

func logFailure(l *slog.Logger, e *Error) {
	if l == nil {
		return
	}
	switch e.Kind {
	case KindBadRequest, KindMethodNotAllowed:
		l.Debug("request rejected", "status", e.Status, "side", e.Side.String(), "error", e.Error())
	default:
		l.Warn("request failed", "status", e.Status, "side", e.Side.String(), "error", e.Error())
	}
}
