package pipeline

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	fwd, sink := forwardToOrigin(h.o), writeHTTP3Response(w, h.o.Logger)
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
	fail := func(kind Kind, msg string, err error) error {
		return Send(ctx, out, &Fail{Err: NewError(kind, ServerSide, msg, err), ex: h.ex})
	}
	if h.Body.Kind == httpio.NoBody && !drainExchange(ctx, in) {
		return nil
	}
	for attempt := 0; ; attempt++ {
		oc, err := o.Origin.get(ctx)
		if err != nil {
			drainExchange(ctx, in)
			return fail(KindUpstream, MsgCouldNotProxy, err)
		}
		retry, err := originRoundTrip(ctx, oc, h, in, out, o)
		if retry && attempt == 0 {
			continue
		}
		return err
	}
}

// originRoundTrip runs one exchange on oc. retry is set when a reused
// connection turned out dead before the origin answered and the request,
// having no body, can be sent again unchanged.
func originRoundTrip(ctx context.Context, oc *originConn, h *Head, in <-chan Msg, out chan<- Msg, o *ServerOptions) (retry bool, _ error) {
	exCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(exCtx, func() { oc.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	err := oc.w.WriteRequestHead(h.Method, h.Path, OriginRequestFields(h))
	var up *uploader
	if err == nil {
		if h.Body.Kind == httpio.NoBody {
			err = oc.w.Flush()
		} else {
			up = startUpload(exCtx, oc.w, h.Body.Kind == httpio.ChunkedBody, in, func() { oc.conn.Close() })
		}
	}
	reusable := err == nil
	headSent := false
	var resp httpio.Response
	for err == nil {
		if o.UpstreamTimeout > 0 {
			oc.conn.SetReadDeadline(time.Now().Add(o.UpstreamTimeout))
		}
		err = oc.r.ReadResponse(&resp, h.Method)
		if err != nil {
			break
		}
		if resp.Status >= 200 {
			break
		}
		if resp.Status == http.StatusSwitchingProtocols {
			err = errors.New("origin switched protocols, which is not supported")
			break
		}
		if serr := Send(ctx, out, &Head{Status: resp.Status, Header: RemoveHopByHop(resp.Header.Clone())}); serr != nil {
			err = serr
		}
	}
	if o.UpstreamTimeout > 0 {
		oc.conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		stale := oc.reused && h.Body.Kind == httpio.NoBody && isStale(err)
		if up != nil {
			// The uploader writes through oc.w: stop it before close
			// returns the writer to its pool.
			cancel()
			up.wait()
			drainExchange(ctx, in)
		}
		oc.close()
		if stale {
			return true, nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return false, Send(ctx, out, &Fail{Err: NewError(KindUpstreamTimeout, ServerSide, MsgCouldNotProxy, err), ex: h.ex})
		}
		return false, Send(ctx, out, &Fail{Err: NewError(KindUpstream, ServerSide, MsgCouldNotProxy, err), ex: h.ex})
	}

	rh := ResponseHead(&resp)
	rh.ex = h.ex
	if err := Send(ctx, out, rh); err != nil {
		reusable = false
	} else {
		headSent = true
	}
	var end *End
	if headSent {
		end = streamOriginBody(ctx, oc.r, out)
		if end.Err != nil {
			reusable = false
		}
	}
	if up != nil {
		if !up.finished() {
			// The origin answered before taking the whole body: the
			// connection is out of step and cannot be reused.
			reusable = false
			cancel()
		}
		if up.wait() != nil {
			reusable = false
		}
	}
	if resp.Body.Kind == httpio.UntilCloseBody || httpio.HasToken(resp.Header.Get("Connection"), "close") ||
		(resp.Major == 1 && resp.Minor == 0 && !httpio.HasToken(resp.Header.Get("Connection"), "keep-alive")) {
		reusable = false
	}
	if reusable {
		stop()
		o.Origin.put(oc)
	} else {
		oc.close()
	}
	if headSent {
		return false, Send(ctx, out, end)
	}
	return false, nil
}

// streamOriginBody sends the origin's response body on as Chunks.
func streamOriginBody(ctx context.Context, r *httpio.Reader, out chan<- Msg) *End {
	return pumpBody(ctx, out, func(p []byte) (int, error) {
		n, _, err := r.ReadBody(p)
		return n, err
	}, func() httpio.Header { return r.Trailers().Clone() }, nil)
}

// isStale reports whether err is what a keep-alive connection the origin
// closed while idle produces on first use.
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
// tunnel; a Fail before the head becomes a synthetic 502/504.
func writeHTTP3Response(w http.ResponseWriter, logger *slog.Logger) Stage {
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
				return nil
			}
			switch m := m.(type) {
			case *Fail:
				if cur != nil {
					cur.ex.finish(cur.Status, Cut, nil)
					return errAbortResponse
				}
				logFailure(logger, m.Err)
				sh, sb := Synthesize(m.Err)
				WriteHTTP3ResponseHead(w, sh)
				w.Write(sb.Data)
				m.ex.addResponse(len(sb.Data))
				m.ex.finish(sh.Status, Synthetic, m.Err)
				sb.Release()
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
