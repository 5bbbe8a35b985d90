package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// ServerOptions configure the server side: HTTP/3 in, HTTP/1.1 to the
// origin.
type ServerOptions struct {
	// Endpoints are the server's endpoints, the one named "" being the
	// default (requests without EndpointField). When none is named "",
	// Origin, if set, is the default endpoint's only origin (the original
	// single-origin setup).
	Endpoints    []*Endpoint
	Origin       *OriginPool
	AddForwarded bool
	// UpstreamTimeout bounds the wait for the origin's response head after
	// the request head was written (0 = no bound); exceeding it is a 504.
	UpstreamTimeout time.Duration
	Logger          *slog.Logger
	// Observer, when set, is told about every exchange.
	Observer Observer
}

// Handler serves requests arriving over the tunnel (server side).
type Handler struct{ cur atomic.Pointer[handlerState] }

// handlerState is what a stream is served with: the options, and the
// endpoints by name ("" the default one). A reload replaces it whole.
type handlerState struct {
	o         *ServerOptions
	endpoints map[string]*Endpoint
}

// NewHandler returns the handler the session runs for every request
// stream.
func NewHandler(o *ServerOptions) *Handler {
	h := &Handler{}
	h.SetOptions(o)
	return h
}

// SetOptions switches the options and endpoints of the streams that start
// afterwards (a configuration reload); streams already running keep
// theirs.
func (h *Handler) SetOptions(o *ServerOptions) {
	st := &handlerState{o: o, endpoints: make(map[string]*Endpoint, len(o.Endpoints)+1)}
	for _, e := range o.Endpoints {
		st.endpoints[e.Name] = e
	}
	if _, ok := st.endpoints[""]; !ok && o.Origin != nil {
		st.endpoints[""] = &Endpoint{Group: poolGroup("default", o.Origin)}
	}
	h.cur.Store(st)
}

// ServeStream serves one request stream: the origin exchange runs on the
// calling goroutine, which writes the response straight to the stream; a
// request body is uploaded to the origin by one other goroutine, joined
// before ServeStream returns. The stream always ends with a complete
// response, one synthetic response (502, 504, ...) or a reset (see
// streamSink), and its request body is read to its end or stopped.
func (h *Handler) ServeStream(s ServerStream) {
	ctx := s.Context()
	st := h.cur.Load()
	o := st.o
	peer := Peer{For: s.RemoteAddr(), By: s.LocalAddr(), Proto: "http3"}
	head, probeErr := streamRequestHead(s, peer)
	x := &serverExchange{o: o, s: s, h: head}
	x.k = streamSink{s: s, ctx: ctx, logger: o.Logger}
	head.ex = startExchange(o.Observer, ServerSide, head, peer.For)
	x.k.reqEx = head.ex
	defer head.ex.finish(0, Aborted, nil)
	defer x.finish()
	if probeErr != nil {
		// The request stream broke before its body: nobody to answer.
		x.k.reset(probeErr)
		return
	}
	// The endpoint field is ptproxy's own: it is taken out before
	// anything else looks at the request, and never reaches an origin.
	ep, rerr := st.route(head, s.PeerIdentity())
	if rerr != nil {
		x.k.fail(rerr)
		return
	}
	x.ep = ep
	if nerr := Normalize(head, Policy{Side: ServerSide, AddForwarded: o.AddForwarded}); nerr != nil {
		x.k.fail(nerr)
		return
	}
	if head.Upgrade != "" && head.Upgrade != upgradeWebSocket {
		e := NewError(KindBadRequest, ServerSide, MsgBadRequest, nil)
		e.Status, e.Public = http.StatusNotImplemented, "extended CONNECT for a protocol other than websocket"
		x.k.fail(e)
		return
	}
	x.forward(ctx)
}

// streamRequestHead builds the Head of the request on s (not normalized
// yet). HTTP/3 has no "no body" marker: a bodiless request is a stream
// that ends right after its HEADERS frame, which a first look at the body
// sees at once. Only then is the origin request sent without framing
// instead of as an empty chunked body. A caller waiting for 100 Continue
// sends nothing yet, so it is not asked. The DATA frame that look finds
// stays current for the upload. An error means the stream broke.
func streamRequestHead(s ServerStream, peer Peer) (*Head, error) {
	head := HeadFromH3Request(s.Request(), peer)
	if head.Body.Kind == httpio.ChunkedBody && !httpio.HasToken(head.Header.Get("Expect"), "100-continue") {
		if _, err := s.NextData(); err == io.EOF {
			head.Body = httpio.Framing{Kind: httpio.NoBody}
		} else if err != nil {
			return head, err
		}
	}
	return head, nil
}

// serverExchange is one request stream's exchange with the origin.
type serverExchange struct {
	o  *ServerOptions
	s  ServerStream
	h  *Head
	k  streamSink
	ep *Endpoint // the request's endpoint, once routed
	// bodyRead is set once the request body was read to its end (by the
	// upload, joined before it is looked at).
	bodyRead bool
}

// finish keeps the stream invariant (streamSink.done) and stops the
// request body if it was not read to its end.
func (x *serverExchange) finish() {
	x.k.done()
	if !x.bodyRead && x.h.Body.Kind != httpio.NoBody && !(x.h.Body.Kind == httpio.LengthBody && x.h.Body.Length == 0) {
		x.s.StopReading()
	}
}

// forward runs the exchange with the endpoint's origin group: an origin
// picked by the group's balancing, the next one when connecting to it
// fails (nothing was sent: each origin of the group is tried at most
// once), and a 502 naming the group when none could take the request.
func (x *serverExchange) forward(ctx context.Context) {
	g := x.ep.Group
	tried := make([]bool, len(g.origins))
	attempts := 0
	var last error
	for {
		og := g.pick(x.h, tried)
		if og == nil {
			break
		}
		tried[og.idx] = true
		attempts++
		err := x.forwardTo(ctx, g, og)
		if err == nil || ctx.Err() != nil {
			return
		}
		last = err
		if x.o.Logger != nil && len(g.origins) > 1 {
			x.o.Logger.Debug("connecting to an origin failed; trying the next one", "group", g.o.Name, "origin", og.addr, "error", err)
		}
	}
	if ctx.Err() != nil {
		return
	}
	if len(g.origins) == 1 && attempts == 1 {
		// The only origin: its own failure class, as without groups.
		x.failOrigin(ctx, last)
		return
	}
	x.k.fail(noOriginError(g, attempts, last))
}

// forwardTo runs the exchange with one origin of g: a pooled connection,
// one retry on a new one when a reused connection turns out stale (see
// roundTrip), the origin's answer or a synthetic one. It returns the
// error of a failed connect, which leaves the request unanswered for the
// next origin; nil when the exchange was answered (or abandoned).
func (x *serverExchange) forwardTo(ctx context.Context, g *OriginGroup, og *groupOrigin) error {
	h, o := x.h, x.o
	og.inflight.Add(1)
	defer og.inflight.Add(-1)
	// A body of length 0 is sent as "Content-Length: 0" with nothing to
	// upload, like a request without a body.
	bodiless := h.Body.Kind == httpio.NoBody || h.Body.Kind == httpio.LengthBody && h.Body.Length == 0
	replayable := bodiless && retryable(h)
	for attempt := 0; ; attempt++ {
		oc, err := og.pool.get(ctx, replayable)
		if err != nil {
			if isDialError(err) && ctx.Err() == nil {
				g.failed(og, err)
				return err
			}
			x.failOrigin(ctx, err)
			return nil
		}
		res := x.roundTrip(ctx, oc, bodiless)
		if res.failed == nil {
			g.succeeded(og)
			return nil
		}
		if res.dead && ctx.Err() == nil {
			g.failed(og, res.failed)
		}
		if attempt == 0 && res.stale && replayable && ctx.Err() == nil {
			// RFC 9110 9.2.2: only an idempotent request may be sent again
			// without asking; a POST that met a closed connection is answered
			// 502 even though the origin most likely never saw it (which get
			// makes unlikely).
			if o.Logger != nil {
				o.Logger.Debug("origin closed a reused connection; retrying on a new one", "method", h.Method, "error", res.failed)
			}
			continue
		}
		x.failOrigin(ctx, res.failed)
		return nil
	}
}

// retryable reports whether RFC 9110 9.2.2 lets a proxy resend h by itself:
// an idempotent method, or a request that carries an idempotency key (as
// net/http's Transport also accepts).
func retryable(h *Head) bool {
	switch h.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return h.Header.Has("Idempotency-Key") || h.Header.Has("X-Idempotency-Key")
}

// failOrigin answers with the synthetic response for err, unless the
// exchange was cancelled (the tunnel side went away: nobody to answer; the
// sink resets the stream).
func (x *serverExchange) failOrigin(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	x.k.fail(originError(err))
}

// originError classifies a failure to get a response head from the origin.
// The caller is told the class; the log gets err with its details.
func originError(err error) *Error {
	kind, class := KindUpstream, ""
	var ne net.Error
	switch {
	case errors.Is(err, errPoolClosed):
		return NewError(KindDraining, ServerSide, MsgDraining, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		class = "origin refused the connection"
	case isDialError(err):
		class = "origin unreachable"
	case errors.As(err, &ne) && ne.Timeout():
		kind, class = KindUpstreamTimeout, "origin did not answer in time"
	case errors.Is(err, h3.ErrFieldSectionTooLarge):
		class = "origin's response head is larger than the client side accepts"
	case errors.Is(err, errSwitchedProtocols):
		class = "origin switched protocols, which is not supported"
	case isTruncated(err):
		class = "origin closed the connection in the middle of its response head"
	case isStale(err):
		class = "origin closed the connection without answering"
	case isParseError(err):
		class = "invalid response from origin"
	}
	e := NewError(kind, ServerSide, MsgCouldNotProxy, err)
	e.Public = class
	return e
}

func isDialError(err error) bool {
	_, ok := errors.AsType[*originDialError](err)
	return ok
}

// isTruncated reports a response head cut by the end of the connection,
// which is the origin going away rather than a malformed answer.
func isTruncated(err error) bool {
	herr, ok := errors.AsType[*httpio.Error](err)
	return ok && herr.Kind == httpio.ErrUnexpectedEOF
}

func isParseError(err error) bool {
	_, ok := errors.AsType[*httpio.Error](err)
	return ok
}

var errSwitchedProtocols = errors.New("origin switched protocols")

// roundTripResult is how one attempt on one origin connection ended.
type roundTripResult struct {
	// failed is set when no final response head was relayed: the exchange
	// still needs an answer (a synthetic one, or a retry when stale).
	failed error
	// stale is set with failed when a reused connection turned out to be
	// closed before the origin sent any byte of a response and before any
	// interim response was relayed: the origin did not process the request.
	stale bool
	// dead is the same on a new connection: the origin accepted it and
	// closed or reset it without a byte, a failure of the origin (passive
	// health check).
	dead bool
}

// roundTrip runs one exchange on oc and always disposes of oc (returned to
// the pool only after a clean, complete exchange). Once a final head was
// relayed, the response ends here (complete, or the stream reset).
func (x *serverExchange) roundTrip(ctx context.Context, oc *originConn, bodiless bool) roundTripResult {
	h, o, k := x.h, x.o, &x.k
	// The stream going away interrupts any blocked read or write on the
	// connection.
	stop := context.AfterFunc(ctx, func() { oc.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	err := writeOriginHead(oc.w, h)
	var up *serverUpload
	if err == nil {
		if bodiless {
			err = oc.w.Flush()
		} else {
			up = x.startUpload(ctx, oc)
		}
	}
	interim := false
	var resp httpio.Response
	for err == nil {
		if o.UpstreamTimeout > 0 {
			oc.conn.SetReadDeadline(time.Now().Add(o.UpstreamTimeout))
		}
		if h.Upgrade != "" {
			err = oc.r.ReadUpgradeResponse(&resp, h.Upgrade)
		} else {
			err = oc.r.ReadResponse(&resp, h.Method)
		}
		if err != nil || resp.Status >= 200 {
			break
		}
		if resp.Status == http.StatusSwitchingProtocols {
			if h.Upgrade == "" {
				err = errSwitchedProtocols
				break
			}
			// The stream going away still interrupts the origin side
			// (stop runs when the splice is over).
			x.switched(oc, &resp)
			return roundTripResult{}
		}
		interim = true
		if werr := k.interim(&Head{Status: resp.Status, Header: RemoveHopByHop(resp.Header.Clone())}); werr != nil {
			// The stream is gone: nobody to answer.
			x.stopUpload(up, oc)
			oc.close()
			k.reset(werr)
			return roundTripResult{}
		}
	}
	if err != nil {
		// The upload writes through oc.w: stop it before close returns the
		// writer to its pool.
		x.stopUpload(up, oc)
		oc.close()
		// io.EOF (not ErrUnexpectedEOF) means the connection ended before
		// the first byte of a response.
		unanswered := !interim && (errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err))
		return roundTripResult{failed: err, stale: oc.reused && unanswered, dead: !oc.reused && unanswered}
	}
	if o.UpstreamTimeout > 0 {
		oc.conn.SetReadDeadline(time.Time{})
	}

	// An answer that comes before the origin has taken the whole body
	// leaves it free to discard the rest or to close: whether the two ends
	// stay in step is unknowable, so the connection is not reused (as in
	// Go's and nginx's clients).
	if up != nil && up.atEOF.Load() {
		// The upload took the whole body and may be writing its last
		// chunk: the answer is not early.
		waitBriefly(up.done, finishGrace)
	}
	reusable := up == nil || up.finished()
	rh := ResponseHead(&resp)
	rh.ex = h.ex
	if werr := k.head(rh); errors.Is(werr, h3.ErrFieldSectionTooLarge) {
		// Nothing was written: the caller gets a 502 instead.
		x.stopUpload(up, oc)
		oc.close()
		return roundTripResult{failed: werr}
	} else if werr != nil {
		// The stream is gone: nobody to answer, the connection is
		// mid-message.
		x.stopUpload(up, oc)
		oc.close()
		k.reset(werr)
		return roundTripResult{}
	}
	trailers, rerr := relayOriginBody(oc.r, k, resp.Body.Kind == httpio.ChunkedBody)
	if rerr != nil {
		reusable = false
	}
	// The response body is over (read whole, or the stream reset): the
	// rest of a request body still arriving is not wanted.
	if up != nil && x.stopUpload(up, oc) != nil {
		reusable = false
	}
	if rh.Close {
		reusable = false
	}
	if !stop() {
		// The cancellation fired: its deadline is on the connection.
		reusable = false
	}
	keepAlive := resp.Header.Get("Keep-Alive")
	// The connection goes back to the pool before the response ends on
	// the stream: the caller's next request, sent as soon as it has this
	// response, must find it there rather than open another.
	if reusable {
		oc.pool.put(oc, keepAlive)
	} else {
		oc.close()
	}
	if rerr == nil {
		k.end(trailers)
	}
	return roundTripResult{}
}

// writeOriginHead writes the request head for h to the origin (buffered).
func writeOriginHead(w *httpio.Writer, h *Head) error {
	return w.WriteRequestHead(h.Method, h.Path, OriginRequestFields(h))
}

// relayOriginBody sends the body of the response r last read to the
// stream: one DATA frame per chunk of a chunked body (see maxFrameChunk),
// one per read otherwise. At the end of the body it returns the trailers
// (a copy: r may serve another exchange before they are sent) for the
// caller to end the response with (streamSink.end); a body cut short
// resets the stream and returns why.
func relayOriginBody(r *httpio.Reader, k *streamSink, chunked bool) (httpio.Header, error) {
	pr := newPieceReader(r, chunked)
	defer pr.release()
	for {
		p, err := pr.next()
		if err == io.EOF {
			return r.Trailers().Clone(), nil
		}
		if err != nil {
			k.reset(err)
			return nil, err
		}
		if len(p) > 0 {
			if werr := k.data(p); werr != nil {
				k.reset(werr)
				return nil, werr
			}
		}
	}
}

// isStale reports whether err is what a connection the origin closed
// produces.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		isConnReset(err)
}

// serverUpload streams a request body to the origin on its own goroutine.
// It is owned by roundTrip, which always joins it.
type serverUpload struct {
	done chan struct{} // closed when the upload ended
	err  error         // written before done is closed, read after
	eof  bool          // the body was read to its end; idem
	// atEOF is set as soon as the end of the body was read, before the
	// last chunk goes to the origin.
	atEOF atomic.Bool
	// stopped is set when roundTrip stops the upload (its errors are then
	// expected).
	stopped atomic.Bool
}

// bodyCutError is an upload that failed on the tunnel side: the request
// body arriving over HTTP/3 was cut short.
type bodyCutError struct{ err error }

func (e *bodyCutError) Error() string { return "request body cut short: " + e.err.Error() }
func (e *bodyCutError) Unwrap() error { return e.err }

// startUpload starts the upload of the request body to oc. When the body
// is cut short on the tunnel side (the caller went away), the origin
// connection is closed, so the response read ends too instead of waiting
// for a body that will never come. A write error towards the origin does
// not abort: the origin may have answered early and closed, and that
// answer is still to be read.
func (x *serverExchange) startUpload(ctx context.Context, oc *originConn) *serverUpload {
	u := &serverUpload{done: make(chan struct{})}
	chunked := x.h.Body.Kind == httpio.ChunkedBody
	s, ex := x.s, x.h.ex
	go func() {
		defer close(u.done)
		err := uploadBody(s, oc.w, chunked, ex, &u.atEOF)
		if _, cut := errors.AsType[*bodyCutError](err); cut && !u.stopped.Load() && ctx.Err() == nil {
			oc.conn.Close()
		}
		u.eof = err == nil
		u.err = err
	}()
	return u
}

func (u *serverUpload) finished() bool {
	select {
	case <-u.done:
		return true
	default:
		return false
	}
}

// stopUpload ends an upload that is still running (the rest of the body
// is not wanted: STOP_SENDING, and the origin connection's deadline passes,
// so it is not reused) and joins it. It returns the upload's error, or
// errUploadStopped when it had to be stopped.
func (x *serverExchange) stopUpload(u *serverUpload, oc *originConn) error {
	if u == nil {
		return nil
	}
	if u.atEOF.Load() {
		// The whole body was read: the upload is only writing its end to
		// the origin, which must not be cut (the connection could not be
		// reused).
		waitBriefly(u.done, finishGrace)
	}
	stopped := false
	if !u.finished() {
		stopped = true
		u.stopped.Store(true)
		x.s.StopReading()
		oc.conn.SetDeadline(time.Unix(1, 0))
	}
	<-u.done
	x.bodyRead = u.eof
	if stopped && u.err == nil {
		return errUploadStopped
	}
	return u.err
}

// errUploadStopped: the upload was stopped before the end of the body.
var errUploadStopped = errors.New("request body upload stopped")

// uploadBody writes the request body arriving on s to the origin: one
// HTTP/1.1 chunk per DATA frame, of the frame's size whatever it is, for a
// chunked body (the chunk's bytes stream through), the bytes as they come
// for a Content-Length body; then the last chunk with the trailers.
// Each frame is flushed to the origin when it is complete.
func uploadBody(s ServerStream, w *httpio.Writer, chunked bool, ex *exchange, atEOF *atomic.Bool) error {
	// The head goes out at once (the origin may answer it before the
	// body: 100 Continue, an early refusal), unless the first DATA frame is
	// at hand already (ServeStream's look at the body found it): then
	// they leave together.
	if s.FrameLeft() == 0 {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		// The probe in ServeStream may have made a frame current already.
		n := s.FrameLeft()
		if n == 0 {
			var err error
			n, err = s.NextData()
			if err == io.EOF {
				if atEOF != nil {
					atEOF.Store(true)
				}
				if chunked {
					if err := w.WriteLastChunk(forwardTrailers(s.Trailers())); err != nil {
						if _, refused := errors.AsType[*httpio.Error](err); !refused {
							return err
						}
						w.WriteLastChunk(nil) // a trailer not valid in HTTP/1.1 is dropped
					}
				}
				return w.Flush()
			}
			if err != nil {
				return &bodyCutError{err}
			}
			if n == 0 {
				continue // an empty chunk would be the last-chunk
			}
		}
		if chunked {
			if err := w.WriteChunkHeader(n); err != nil {
				return err
			}
		}
		for n > 0 {
			m, err := s.ReadData(buf[:min(n, int64(len(buf)))])
			if m > 0 {
				ex.addRequest(m)
				if _, werr := w.Write(buf[:m]); werr != nil {
					return werr
				}
			}
			n -= int64(m)
			if err != nil && n > 0 {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return &bodyCutError{err}
			}
		}
		if chunked {
			if err := w.WriteChunkEnd(); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}

// errNoAnswer is the cause of the 502 a server sink sends when the
// exchange ended without a response head or a failure.
var errNoAnswer = errors.New("forwarder ended without a response")

// errAbortResponse is the cause logged when an exchange ends with a head
// out and its body unfinished: the stream is reset.
var errAbortResponse = errors.New("response cut short after its head")

// streamSink writes the response to the request stream (the server sink).
// It keeps the exchange invariant: the stream ends with one complete
// response (Close), one synthetic response (502, 504, ...), or a reset,
// never with nothing written; done enforces it whatever path the exchange
// took. reqEx is the request's exchange, finished here if no head carries
// it.
type streamSink struct {
	s      ServerStream
	ctx    context.Context
	logger *slog.Logger
	reqEx  *exchange
	cur    *Head // the final head, once written
	ended  bool  // the stream was ended (Close or Reset)
}

// interim writes a 1xx head.
func (k *streamSink) interim(h *Head) error { return streamWrite(k.s.WriteHead(ResponseH3Head(h))) }

// errStreamWrite marks a failure to write to the request stream: the
// client cancelled it (its caller went away) or the connection is gone.
var errStreamWrite = errors.New("writing to the stream")

func streamWrite(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", errStreamWrite, err)
}

// head writes the final response head. A head over the peer's field
// section limit is not written, and the stream still needs an answer.
func (k *streamSink) head(h *Head) error {
	err := k.s.WriteHead(ResponseH3Head(h))
	if !errors.Is(err, h3.ErrFieldSectionTooLarge) {
		k.cur = h
		return streamWrite(err)
	}
	return err
}

// data writes one DATA frame of the body.
func (k *streamSink) data(p []byte) error {
	if err := k.s.WriteData(p); err != nil {
		return streamWrite(err)
	}
	k.cur.ex.addResponse(len(p))
	return nil
}

// end completes the response: the trailers that may be forwarded, then
// FIN.
func (k *streamSink) end(trailers httpio.Header) error {
	var err error
	if t := forwardTrailers(trailers); len(t) > 0 {
		err = k.s.WriteTrailers(t)
	}
	if err == nil {
		err = k.s.Close()
	}
	if err != nil {
		err = streamWrite(err)
		k.reset(err)
		return err
	}
	k.ended = true
	k.cur.ex.finish(k.cur.Status, Completed, nil)
	return nil
}

// reset ends the stream with RESET_STREAM: a response whose head is out
// is cut, an exchange without one is abandoned (nobody to answer).
func (k *streamSink) reset(err error) {
	if k.ended {
		return
	}
	k.ended = true
	k.s.Reset()
	if k.cur != nil {
		k.cur.ex.finish(k.cur.Status, Cut, nil)
		if k.logger == nil {
			return
		}
		// A stream the client cancelled (its caller went away) or a
		// connection that closed fails the next write, or interrupts the
		// origin read with a deadline (then the error reads as an origin
		// timeout): no fault of ours or the origin's, and the client side
		// logs what its caller got.
		if k.ctx != nil && k.ctx.Err() != nil {
			k.logger.Debug("response cut: the stream ended", "cause", context.Cause(k.ctx))
			return
		}
		if errors.Is(err, errStreamWrite) {
			k.logger.Debug("response cut: the stream ended", "error", err)
			return
		}
		k.logger.Warn("error when proxying response", "error", err)
	}
}

// fail answers with the synthetic response for e, or, when a head is out
// already, resets the stream.
func (k *streamSink) fail(e *Error) {
	if k.ended {
		return
	}
	if k.cur != nil {
		k.reset(e)
		return
	}
	logFailure(k.logger, e)
	sh, sb := Synthesize(e)
	defer sb.Release()
	err := k.s.WriteHead(ResponseH3Head(sh))
	if err == nil {
		err = k.s.WriteData(sb.Data)
	}
	if err == nil {
		err = k.s.Close()
	}
	if err != nil {
		k.reset(err)
		return
	}
	k.ended = true
	k.reqEx.addResponse(len(sb.Data))
	k.reqEx.finish(sh.Status, Synthetic, e)
}

// done ends a stream the exchange left open: reset when a head is out (the
// body will not complete) or when the exchange was cancelled (the stream
// is gone); otherwise every path should have answered, and a 502 says so.
func (k *streamSink) done() {
	switch {
	case k.ended:
	case k.cur != nil:
		k.reset(errAbortResponse)
	case k.ctx.Err() != nil:
		k.reset(context.Cause(k.ctx))
	default:
		e := NewError(KindUpstream, ServerSide, MsgCouldNotProxy, errNoAnswer)
		if k.logger != nil {
			k.logger.Error("exchange ended without an answer", "error", e)
		}
		k.fail(e)
	}
}
