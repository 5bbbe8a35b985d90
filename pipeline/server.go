package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// ServerOptions configure the server side: HTTP/3 in, HTTP/1.1 to the
// origin.
type ServerOptions struct {
	Origin       *OriginPool
	AddForwarded bool
	// UpstreamTimeout bounds the wait for the origin's response head after
	// the request head was written (0 = no bound); exceeding it is a 504.
	UpstreamTimeout time.Duration
	Logger          *slog.Logger
	// Observer, when set, is told about every exchange.
	Observer Observer
}

// errAbortResponse tells the handler to reset the HTTP/3 stream: the
// response head is out and the body could not be completed.
var errAbortResponse = errors.New("response cut short after its head")

// Handler serves requests arriving over the tunnel (server side).
type Handler struct{ o *ServerOptions }

// NewHandler returns the http.Handler the HTTP/3 server runs per request.
func NewHandler(o *ServerOptions) *Handler { return &Handler{o: o} }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	peer := Peer{For: r.RemoteAddr, Proto: "http3"}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		peer.By = la.String()
	}
	var exs exchanges
	defer exs.abortAll()

	// The head is read and normalized here, on the handler goroutine, and
	// a bodiless request (most of them) goes to the forwarder through a
	// channel filled in advance: per request only the forwarder gets a
	// goroutine of its own, since each hand-off between goroutines costs a
	// wake-up on the latency path.
	head, first, firstErr := readHTTP3Head(r, peer)
	head.ex = startExchange(h.o.Observer, ServerSide, head, peer.For)
	exs.add(head.ex)
	var err error
	fwd, sink := forwardToOrigin(h.o), writeHTTP3Response(w, h.o.Logger, head.ex)
	if nerr := Normalize(head, Policy{Side: ServerSide, AddForwarded: h.o.AddForwarded}); nerr != nil {
		if first != nil {
			first.Release()
		}
		err = RunFrom(r.Context(), prefilled(&Fail{Err: nerr, ex: head.ex}), sink)
	} else if head.Body.Kind == httpio.NoBody {
		err = RunFrom(r.Context(), prefilled(head, &End{}), fwd, sink)
	} else {
		err = Run(r.Context(), readHTTP3Body(r, head, first, firstErr), fwd, sink)
	}
	if errors.Is(err, errAbortResponse) {
		// http3 resets the stream with H3_INTERNAL_ERROR on this panic.
		panic(http.ErrAbortHandler)
	}
}

// readHTTP3Head builds the Head of a request that arrived over the tunnel.
// HTTP/3 has no "no body" marker: a bodiless request is a stream that ends
// right after its HEADERS frame, which a first body read sees at once. Only
// then is the origin request sent without framing instead of as an empty
// chunked body. A caller waiting for 100 Continue sends nothing yet, so it
// is not asked. Data that first read returned is handed back in first.
func readHTTP3Head(r *http.Request, peer Peer) (head *Head, first *Chunk, firstErr error) {
	head = HeadFromHTTP3Request(r, peer)
	if head.Body.Kind != httpio.ChunkedBody || httpio.HasToken(head.Header.Get("Expect"), "100-continue") {
		return head, nil, nil
	}
	c := NewChunk()
	n, err := r.Body.Read(c.Buf())
	if n == 0 && err == io.EOF {
		c.Release()
		head.Body = httpio.Framing{Kind: httpio.NoBody}
		return head, nil, nil
	}
	c.Data = c.Buf()[:n]
	return head, c, err
}

// readHTTP3Body is the server's source for a request with a body: the
// Head, then Chunk... and End, starting with what the first read returned.
func readHTTP3Body(r *http.Request, head *Head, first *Chunk, firstErr error) Stage {
	return func(ctx context.Context, _ <-chan Msg, out chan<- Msg) error {
		ex := head.ex
		// Once the exchange is over (the origin answered early, or failed)
		// nobody wants the rest of the body: closing it stops the read
		// (STOP_SENDING) instead of holding the handler until a slow or
		// stalled caller finishes its upload.
		stop := context.AfterFunc(ctx, func() { r.Body.Close() })
		defer stop()
		if err := Send(ctx, out, head); err != nil {
			if first != nil {
				first.Release()
			}
			return nil
		}
		if first != nil {
			if n := len(first.Data); n > 0 {
				ex.addRequest(n)
				if err := Send(ctx, out, first); err != nil {
					return nil
				}
			} else {
				first.Release()
			}
			if firstErr != nil {
				return sendBodyEnd(ctx, out, r, firstErr)
			}
		}
		end := pumpBody(ctx, out, r.Body.Read, func() httpio.Header { return sortedFields(r.Trailer) }, ex.addRequest)
		return Send(ctx, out, end)
	}
}

func sendBodyEnd(ctx context.Context, out chan<- Msg, r *http.Request, err error) error {
	if err == io.EOF {
		return Send(ctx, out, &End{Trailers: sortedFields(r.Trailer)})
	}
	return Send(ctx, out, &End{Err: err})
}

// forwardToOrigin is the server forwarder: it writes the request to a pooled
// origin connection while reading the response off it.
func forwardToOrigin(o *ServerOptions) Stage {
	return func(ctx context.Context, in <-chan Msg, out chan<- Msg) error {
		m, ok := Recv(ctx, in)
		if !ok {
			return nil
		}
		switch m := m.(type) {
		case *Fail:
			Send(ctx, out, m)
			drainExchange(ctx, in)
			return nil
		case *Head:
			return originExchange(ctx, m, in, out, o)
		default:
			Release(m)
			return nil
		}
	}
}

func originExchange(ctx context.Context, h *Head, in <-chan Msg, out chan<- Msg, o *ServerOptions) error {
	// A body of length 0 is sent as "Content-Length: 0" with nothing to
	// upload, like a request without a body.
	bodiless := h.Body.Kind == httpio.NoBody || h.Body.Kind == httpio.LengthBody && h.Body.Length == 0
	if bodiless && !drainExchange(ctx, in) {
		return nil
	}
	for attempt := 0; ; attempt++ {
		oc, err := o.Origin.get(ctx)
		if err != nil {
			if !bodiless {
				drainExchange(ctx, in)
			}
			return failOrigin(ctx, out, h, err)
		}
		res := originRoundTrip(ctx, oc, h, bodiless, in, out, o)
		if res.failed == nil {
			return res.sendErr
		}
		if attempt == 0 && res.stale && bodiless && retryable(h) && ctx.Err() == nil {
			// RFC 9110 9.2.2: only an idempotent request may be sent again
			// without asking; a POST that met a closed connection is answered
			// 502 even though the origin most likely never saw it.
			if o.Logger != nil {
				o.Logger.Debug("origin closed a reused connection; retrying on a new one", "method", h.Method, "error", res.failed)
			}
			continue
		}
		return failOrigin(ctx, out, h, res.failed)
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

// failOrigin answers h with the synthetic response for err, unless the
// exchange was cancelled (the tunnel side went away: nobody to answer).
func failOrigin(ctx context.Context, out chan<- Msg, h *Head, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return Send(ctx, out, &Fail{Err: originError(err), ex: h.ex})
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
	// sendErr is the downstream stage's failure after the head was relayed.
	sendErr error
}

// originRoundTrip runs one exchange on oc and always disposes of oc
// (returned to the pool only after a clean, complete exchange).
func originRoundTrip(ctx context.Context, oc *originConn, h *Head, bodiless bool, in <-chan Msg, out chan<- Msg, o *ServerOptions) roundTripResult {
	exCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Cancellation (the tunnel side went away) interrupts any blocked read
	// or write on the connection.
	stop := context.AfterFunc(exCtx, func() { oc.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	err := writeOriginHead(oc.w, h)
	var up *uploader
	if err == nil {
		if bodiless {
			err = oc.w.Flush()
		} else {
			up = startUpload(exCtx, oc.w, h.Body.Kind == httpio.ChunkedBody, in, func() { oc.conn.Close() })
		}
	}
	interim := false
	var resp httpio.Response
	for err == nil {
		if o.UpstreamTimeout > 0 {
			oc.conn.SetReadDeadline(time.Now().Add(o.UpstreamTimeout))
		}
		err = oc.r.ReadResponse(&resp, h.Method)
		if err != nil || resp.Status >= 200 {
			break
		}
		if resp.Status == http.StatusSwitchingProtocols {
			err = errSwitchedProtocols
			break
		}
		interim = true
		if serr := Send(ctx, out, &Head{Status: resp.Status, Header: RemoveHopByHop(resp.Header.Clone())}); serr != nil {
			err = serr
		}
	}
	if err != nil {
		if up != nil {
			// The uploader writes through oc.w: stop it before close
			// returns the writer to its pool.
			cancel()
			up.wait()
			drainExchange(ctx, in)
		}
		oc.close()
		// io.EOF (not ErrUnexpectedEOF) means the connection ended before
		// the first byte of a response.
		stale := oc.reused && !interim && (errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err))
		return roundTripResult{failed: err, stale: stale}
	}
	if o.UpstreamTimeout > 0 {
		oc.conn.SetReadDeadline(time.Time{})
	}

	// An answer that comes before the origin has taken the whole body
	// leaves it free to discard the rest or to close: whether the two ends
	// stay in step is unknowable, so the connection is not reused (as in
	// Go's and nginx's clients).
	reusable := up == nil || up.finished()
	rh := ResponseHead(&resp)
	rh.ex = h.ex
	if serr := Send(ctx, out, rh); serr != nil {
		// The sink is gone: nobody to answer, the connection is mid-message.
		if up != nil {
			cancel()
			up.wait()
		}
		oc.close()
		return roundTripResult{sendErr: serr}
	}
	end := streamOriginBody(ctx, oc.r, out)
	if end.Err != nil {
		reusable = false
	}
	if up != nil {
		if !up.finished() {
			cancel()
		}
		if up.wait() != nil {
			reusable = false
		}
	}
	if rh.Close {
		reusable = false
	}
	if !stop() {
		// The cancellation fired: its deadline is on the connection.
		reusable = false
	}
	if reusable {
		o.Origin.put(oc, resp.Header.Get("Keep-Alive"))
	} else {
		oc.close()
	}
	return roundTripResult{sendErr: Send(ctx, out, end)}
}

// writeOriginHead writes the request head for h to the origin (buffered).
func writeOriginHead(w *httpio.Writer, h *Head) error {
	return w.WriteRequestHead(h.Method, h.Path, OriginRequestFields(h))
}

// streamOriginBody sends the origin's response body on as Chunks.
func streamOriginBody(ctx context.Context, r *httpio.Reader, out chan<- Msg) *End {
	return pumpBody(ctx, out, func(p []byte) (int, error) {
		n, _, err := r.ReadBody(p)
		return n, err
	}, func() httpio.Header { return r.Trailers().Clone() }, nil)
}

// isStale reports whether err is what a connection the origin closed
// produces.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		isConnReset(err)
}

// uploader streams a request body to the origin. It is owned by
// originRoundTrip, which always waits for it.
type uploader struct {
	done chan struct{} // closed when the upload ended
	err  error         // written before done is closed, read after
}

// bodyCutError is an upload that failed on the tunnel side: the request
// body arriving over HTTP/3 was cut short.
type bodyCutError struct{ err error }

func (e *bodyCutError) Error() string { return "request body cut short: " + e.err.Error() }
func (e *bodyCutError) Unwrap() error { return e.err }

// startUpload streams the request body in its own goroutine. When the body
// is cut short on the tunnel side (the caller went away), abort closes the
// origin connection, so the response read ends too instead of waiting for a
// body that will never come. A write error towards the origin does not
// abort: the origin may have answered early and closed, and that answer is
// still to be read.
func startUpload(ctx context.Context, w *httpio.Writer, chunked bool, in <-chan Msg, abort func()) *uploader {
	u := &uploader{done: make(chan struct{})}
	go func() {
		defer close(u.done)
		err := upload(ctx, w, chunked, in)
		if _, cut := errors.AsType[*bodyCutError](err); cut && ctx.Err() == nil {
			abort()
		}
		u.err = err
	}()
	return u
}

func (u *uploader) finished() bool {
	select {
	case <-u.done:
		return true
	default:
		return false
	}
}

func (u *uploader) wait() error {
	<-u.done
	return u.err
}

func upload(ctx context.Context, w *httpio.Writer, chunked bool, in <-chan Msg) error {
	if err := w.Flush(); err != nil {
		return err
	}
	for {
		m, ok := Recv(ctx, in)
		if !ok {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return &bodyCutError{io.ErrUnexpectedEOF}
		}
		var err error
		switch m := m.(type) {
		case *Chunk:
			if chunked {
				err = w.WriteChunk(m.Data)
			} else {
				_, err = w.Write(m.Data)
			}
			m.Release()
			if err == nil && len(in) == 0 {
				err = w.Flush()
			}
		case *End:
			if m.Err != nil {
				return &bodyCutError{m.Err}
			}
			if chunked {
				err = w.WriteLastChunk(m.Trailers)
			}
			if err == nil {
				err = w.Flush()
			}
			return err
		default:
			Release(m)
		}
		if err != nil {
			return err
		}
	}
}

// writeHTTP3Response is the server sink: the response goes back over the
// tunnel; a Fail before the head becomes a synthetic 502/504. It keeps the
// exchange invariant: the stream ends with one complete response, one
// synthetic response, or a reset (errAbortResponse), never with nothing
// written (quic-go would send an implicit empty 200). reqEx is the
// request's exchange, finished here if no head carries it.
func writeHTTP3Response(w http.ResponseWriter, logger *slog.Logger, reqEx *exchange) Stage {
	return func(ctx context.Context, in <-chan Msg, _ chan<- Msg) error {
		flusher, _ := w.(http.Flusher)
		headFlushed := false
		flush := func() {
			if flusher != nil {
				flusher.Flush()
			}
			headFlushed = true
		}
		var cur *Head // the response head sent, once it is
		for {
			m, ok := Recv(ctx, in)
			if !ok {
				if cur != nil {
					cur.ex.finish(cur.Status, Cut, nil)
					return errAbortResponse
				}
				if ctx.Err() != nil {
					// The stream is gone or the exchange was cancelled:
					// reset rather than let the handler's return look like
					// an (empty, implicit 200) response.
					return errAbortResponse
				}
				// Every forwarder path ends in a head or a Fail; reaching this
				// is a bug, and the answer is still never an invented 200.
				e := NewError(KindUpstream, ServerSide, MsgCouldNotProxy, errNoAnswer)
				if logger != nil {
					logger.Error("exchange ended without an answer", "error", e)
				}
				writeSyntheticHTTP3(w, e, reqEx)
				return nil
			}
			switch m := m.(type) {
			case *Fail:
				if cur != nil {
					cur.ex.finish(cur.Status, Cut, nil)
					return errAbortResponse
				}
				logFailure(logger, m.Err)
				writeSyntheticHTTP3(w, m.Err, m.ex)
				return nil
			case *Head:
				if m.Status < 200 {
					hdr := w.Header()
					for _, f := range m.Header {
						hdr.Add(f.Name, f.Value)
					}
					w.WriteHeader(m.Status)
					clear(hdr)
					continue
				}
				WriteHTTP3ResponseHead(w, m)
				cur = m
				// A body already queued goes out with the head, in the same
				// packet; otherwise the head goes now.
				if len(in) == 0 {
					flush()
				}
			case *Chunk:
				_, err := w.Write(m.Data)
				if cur != nil {
					cur.ex.addResponse(len(m.Data))
				}
				m.Release()
				if err != nil {
					return errAbortResponse
				}
				// Until the head is flushed quic-go buffers small writes and
				// would merge chunks into one DATA frame: flush after the
				// first, so every chunk stays its own frame.
				if !headFlushed {
					flush()
				}
			case *End:
				if !headFlushed {
					// Flushed before the handler returns, or quic-go would
					// turn a chunked response into a Content-Length one.
					flush()
				}
				if cur != nil {
					outcome := Completed
					if m.Err != nil {
						outcome = Cut
					}
					cur.ex.finish(cur.Status, outcome, nil)
				}
				if m.Err != nil {
					if logger != nil {
						logger.Warn("error when proxying response", "error", m.Err)
					}
					return errAbortResponse
				}
				hdr := w.Header()
				for _, f := range m.Trailers {
					hdr.Add(http.TrailerPrefix+f.Name, f.Value)
				}
				return nil
			}
		}
	}
}

// errNoAnswer is the cause of the 502 a server sink sends when its input
// ended without a response head or a Fail.
var errNoAnswer = errors.New("forwarder ended without a response")

// writeSyntheticHTTP3 answers the stream with the synthetic response for e.
func writeSyntheticHTTP3(w http.ResponseWriter, e *Error, ex *exchange) {
	sh, sb := Synthesize(e)
	WriteHTTP3ResponseHead(w, sh)
	w.Write(sb.Data)
	ex.addResponse(len(sb.Data))
	ex.finish(sh.Status, Synthetic, e)
	sb.Release()
}
