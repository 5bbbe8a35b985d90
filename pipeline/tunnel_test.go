package pipeline

// In-memory implementations of the tunnel interfaces (tunnel.go) for the
// tests, running the HTTP/3 codec (httpio/h3) for real on both ends:
//
//   - memStream is one request stream: request frames flow client → server,
//     response frames server → client, each direction over an io.Pipe (or,
//     for the synchronous cases, a bytes.Buffer). Its client end is a
//     TunnelStream, its server end a ServerStream.
//   - tunnelFunc serves each request to a func(*http.Request)
//     (*http.Response, error): the request head and body are decoded into
//     an http.Request (one body Read per DATA frame, trailers in
//     Request.Trailer at EOF), and the http.Response is encoded back (one
//     DATA frame per body Read, Response.Trailer as trailers). A handler
//     error is what ReadHead returns; a body Read error resets the stream.
//   - h3Link is a Tunnel that serves each stream with a real Handler, as the
//     session does (one goroutine per stream running ServeStream).
//   - serveH3 runs Handler.ServeStream on the server end of a stream whose
//     client end it drives, and collects what came back.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// The one place that builds the codec.
func newH3Writer(s h3.Stream) *h3.Writer               { return h3.NewWriter(s) }
func newH3Reader(s h3.Stream, role h3.Role) *h3.Reader { return h3.NewReader(s, role, h3.Limits{}) }

var (
	// errStreamReset is what the other end reads after RESET_STREAM or a
	// cancellation.
	errStreamReset = errors.New("stream reset")
	// errStopSending is what a writer gets once the reader stopped.
	errStopSending = errors.New("stop sending")
	// errNothingWritten ends the response direction of a stream whose
	// handler returned without closing or resetting it.
	errNothingWritten = errors.New("handler returned without ending the stream")
)

// pipeEnd is one end of a stream over two pipes, as h3.Stream.
type pipeEnd struct {
	r *io.PipeReader // what the peer writes
	w *io.PipeWriter // what this end writes
}

func (e *pipeEnd) Read(p []byte) (int, error)  { return e.r.Read(p) }
func (e *pipeEnd) Write(p []byte) (int, error) { return e.w.Write(p) }
func (e *pipeEnd) Close() error                { return e.w.Close() }
func (e *pipeEnd) CancelRead(h3.ErrCode)       { e.r.CloseWithError(errStopSending) }
func (e *pipeEnd) CancelWrite(h3.ErrCode)      { e.w.CloseWithError(errStreamReset) }

// bufEnd is one end of a stream held in buffers, for synchronous use:
// it reads in and writes to out.
type bufEnd struct {
	in  io.Reader
	out *bytes.Buffer
}

func (e *bufEnd) Read(p []byte) (int, error) {
	if e.in == nil {
		return 0, io.EOF
	}
	return e.in.Read(p)
}
func (e *bufEnd) Write(p []byte) (int, error) { return e.out.Write(p) }
func (e *bufEnd) Close() error                { return nil }
func (e *bufEnd) CancelRead(h3.ErrCode)       {}
func (e *bufEnd) CancelWrite(h3.ErrCode)      {}

// memStream is one request stream: cw/cr are the client's writer and
// reader, sr/sw the server's.
type memStream struct {
	client3, server3 h3.Stream
	cw               *h3.Writer
	cr               *h3.Reader
	sr               *h3.Reader
	sw               *h3.Writer
	ctx              context.Context // the server side's
	cancelCtx        context.CancelFunc
	head             *h3.Head // the request head, as the server read it
	identity         string   // the client identity the server sees

	// handlerErr is what a tunnelFunc's handler returned; ReadHead returns it.
	handlerErr atomic.Pointer[error]
	// onStop is called by StopReading (the request body's source may be
	// closed).
	onStop func()

	// What happened, for assertions.
	respEOF    atomic.Bool  // the client read the response to its end
	cancels    atomic.Int32 // Cancel calls
	closes     atomic.Int32 // client Close calls
	srvClosed  atomic.Bool  // the server ended the response with FIN
	srvReset   atomic.Bool  // ... with RESET_STREAM
	stopped    atomic.Bool  // the server stopped reading the request
	resetOnce  sync.Once
	stopOnce   sync.Once
	serverDone chan struct{} // closed when the serving goroutine returned
	// releaseOnClose: the client's Close releases its reader (syncLink,
	// where nothing else uses the stream by then).
	releaseOnClose bool

	// The size of every DATA frame each side read.
	framesMu   sync.Mutex
	reqFrames  []int64 // read by the server
	respFrames []int64 // read by the client
}

func (m *memStream) frames() (req, resp []int64) {
	m.framesMu.Lock()
	defer m.framesMu.Unlock()
	return slices.Clone(m.reqFrames), slices.Clone(m.respFrames)
}

func (m *memStream) recordFrame(list *[]int64, n int64) {
	m.framesMu.Lock()
	*list = append(*list, n)
	m.framesMu.Unlock()
}

// newMemStream returns a stream over pipes; ctx is the parent of the
// server side's context.
func newMemStream(ctx context.Context) *memStream {
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	m := &memStream{
		client3:    &pipeEnd{r: respR, w: reqW},
		server3:    &pipeEnd{r: reqR, w: respW},
		serverDone: make(chan struct{}),
	}
	m.ctx, m.cancelCtx = context.WithCancel(ctx)
	m.cw, m.cr = newH3Writer(m.client3), newH3Reader(m.client3, h3.ReadsResponse)
	m.sr, m.sw = newH3Reader(m.server3, h3.ReadsRequest), newH3Writer(m.server3)
	return m
}

// Streams held in buffers, one end at a time, for synchronous use.
func clientWriting(buf *bytes.Buffer) *memStream {
	e := &bufEnd{out: buf}
	return &memStream{client3: e, cw: newH3Writer(e)}
}

func serverReading(data []byte) *memStream {
	e := &bufEnd{in: bytes.NewReader(data), out: new(bytes.Buffer)}
	return &memStream{server3: e, sr: newH3Reader(e, h3.ReadsRequest)}
}

func serverWriting(buf *bytes.Buffer) *memStream {
	e := &bufEnd{out: buf}
	return &memStream{server3: e, sw: newH3Writer(e)}
}

func clientReading(data []byte) *memStream {
	e := &bufEnd{in: bytes.NewReader(data), out: new(bytes.Buffer)}
	return &memStream{client3: e, cr: newH3Reader(e, h3.ReadsResponse)}
}

// resetAll resets both directions and ends the server's context.
func (m *memStream) resetAll() {
	m.resetOnce.Do(func() {
		if m.cancelCtx != nil {
			m.cancelCtx()
		}
		for _, e := range []h3.Stream{m.client3, m.server3} {
			if e != nil {
				e.CancelRead(h3.ErrCodeRequestCanceled)
				e.CancelWrite(h3.ErrCodeRequestCanceled)
			}
		}
	})
}

// client is the stream's client end.
func (m *memStream) client() TunnelStream { return (*memClient)(m) }

// server is the stream's server end.
func (m *memStream) server() ServerStream { return (*memServer)(m) }

type memClient memStream

func (c *memClient) WriteData(p []byte) error { return c.cw.WriteData(p) }
func (c *memClient) CloseWrite(t httpio.Header) error {
	if err := c.cw.WriteTrailers(t); err != nil {
		return err
	}
	return c.cw.Close()
}
func (c *memClient) ReadHead() (*h3.Head, error) {
	h, err := c.cr.ReadHead()
	if err != nil {
		if herr := c.handlerErr.Load(); herr != nil {
			return nil, *herr
		}
	}
	return h, err
}
func (c *memClient) SetNoBody() { c.cr.SetNoBody() }
func (c *memClient) NextData() (int64, error) {
	n, err := c.cr.NextData()
	if err == io.EOF {
		c.respEOF.Store(true)
	}
	if err == nil {
		(*memStream)(c).recordFrame(&c.respFrames, n)
	}
	return n, err
}
func (c *memClient) ReadData(p []byte) (int, error) { return c.cr.ReadData(p) }
func (c *memClient) FrameLeft() int64               { return c.cr.FrameLeft() }
func (c *memClient) Trailers() httpio.Header        { return c.cr.Trailers() }
func (c *memClient) Cancel() {
	c.cancels.Add(1)
	(*memStream)(c).resetAll()
}
func (c *memClient) Close() {
	c.closes.Add(1)
	if !c.respEOF.Load() {
		c.Cancel()
	}
	if c.releaseOnClose {
		c.cr.Release()
	}
}

type memServer memStream

func (s *memServer) Context() context.Context { return s.ctx }
func (s *memServer) RemoteAddr() string       { return "192.0.2.1:4433" }
func (s *memServer) LocalAddr() string        { return "198.51.100.2:443" }
func (s *memServer) PeerIdentity() string     { return s.identity }
func (s *memServer) Request() *h3.Head        { return s.head }
func (s *memServer) NextData() (int64, error) {
	n, err := s.sr.NextData()
	if err == nil {
		(*memStream)(s).recordFrame(&s.reqFrames, n)
	}
	return n, err
}
func (s *memServer) ReadData(p []byte) (int, error) { return s.sr.ReadData(p) }
func (s *memServer) FrameLeft() int64               { return s.sr.FrameLeft() }
func (s *memServer) Trailers() httpio.Header        { return s.sr.Trailers() }
func (s *memServer) StopReading() {
	s.stopOnce.Do(func() {
		s.stopped.Store(true)
		s.server3.CancelRead(h3.ErrCodeNoError)
		if s.onStop != nil {
			s.onStop()
		}
	})
}
func (s *memServer) WriteHead(h *h3.Head) error          { return s.sw.WriteHead(h) }
func (s *memServer) WriteData(p []byte) error            { return s.sw.WriteData(p) }
func (s *memServer) WriteTrailers(t httpio.Header) error { return s.sw.WriteTrailers(t) }
func (s *memServer) Close() error {
	s.srvClosed.Store(true)
	return s.sw.Close()
}
func (s *memServer) Reset() {
	s.srvReset.Store(true)
	s.server3.CancelWrite(h3.ErrCodeInternalError)
}

// serverEnded reports whether the handler ended the response (FIN or
// reset); if not, the response direction is ended with errNothingWritten.
func (m *memStream) serverEnded() bool {
	if m.srvClosed.Load() || m.srvReset.Load() {
		return true
	}
	if pe, ok := m.server3.(*pipeEnd); ok {
		pe.w.CloseWithError(errNothingWritten)
	}
	return false
}

// tunnelFunc is a Tunnel backed by a function, standing in for the HTTP/3
// session and the far side so the client can be tested alone.
type tunnelFunc func(*http.Request) (*http.Response, error)

func (f tunnelFunc) Open(ctx context.Context, h *h3.Head, end bool) (TunnelStream, error) {
	m := newMemStream(context.Background())
	go func() {
		defer close(m.serverDone)
		m.serveFunc(f, end)
	}()
	if err := m.cw.WriteHead(h); err != nil {
		m.resetAll()
		return nil, err
	}
	if end {
		m.cw.Close()
	}
	return m.client(), nil
}

// serveFunc is the far side of a tunnelFunc stream.
func (m *memStream) serveFunc(f tunnelFunc, end bool) {
	head, err := m.sr.ReadHead()
	if err != nil {
		m.resetAll()
		return
	}
	req := requestFromH3(head).WithContext(m.ctx)
	if end {
		req.ContentLength = 0
	} else {
		req.Body = &h3Body{r: m.sr, req: req}
	}
	resp, err := f(req)
	if err != nil {
		m.handlerErr.Store(&err)
		m.server3.CancelWrite(h3.ErrCodeInternalError)
		m.server3.CancelRead(h3.ErrCodeNoError)
		return
	}
	if err := writeH3Response(m.sw, resp, req.Method); err != nil {
		m.server3.CancelWrite(h3.ErrCodeInternalError)
	}
	// What is left of the request body is not wanted any more.
	m.server3.CancelRead(h3.ErrCodeNoError)
}

// requestFromH3 decodes a request head as net/http types.
func requestFromH3(h *h3.Head) *http.Request {
	u, _ := url.ParseRequestURI(h.Path)
	if u == nil {
		u = &url.URL{Opaque: h.Path}
	}
	u.Scheme, u.Host = h.Scheme, h.Authority
	r := &http.Request{
		Method: h.Method, URL: u, RequestURI: h.Path, Host: h.Authority,
		Proto: "HTTP/3.0", ProtoMajor: 3, Header: http.Header{}, ContentLength: h.ContentLength,
	}
	for _, f := range h.Fields {
		r.Header.Add(f.Name, f.Value)
	}
	return r
}

// h3Body is a request body read off the stream: one Read returns bytes of
// one DATA frame; at the end the trailers are in the request's Trailer.
type h3Body struct {
	r   *h3.Reader
	req *http.Request
}

func (b *h3Body) Read(p []byte) (int, error) {
	for b.r.FrameLeft() == 0 {
		if _, err := b.r.NextData(); err != nil {
			if err == io.EOF {
				b.req.Trailer = http.Header{}
				for _, f := range b.r.Trailers() {
					b.req.Trailer.Add(f.Name, f.Value)
				}
			}
			return 0, err
		}
	}
	return b.r.ReadData(p[:min(int64(len(p)), b.r.FrameLeft())])
}

func (b *h3Body) Close() error { return nil }

// writeH3Response encodes resp: fields in sorted order (a map has none),
// content-length when known, a trailer declaration, one DATA frame per
// body Read, the trailers, FIN (by the caller).
func writeH3Response(w *h3.Writer, resp *http.Response, method string) error {
	head := &h3.Head{Status: resp.StatusCode, ContentLength: -1}
	if resp.ContentLength >= 0 && bodyAllowed(resp.StatusCode) {
		head.ContentLength = resp.ContentLength
		head.Fields = append(head.Fields, httpio.Field{Name: "content-length", Value: strconv.FormatInt(resp.ContentLength, 10)})
	}
	if len(resp.Trailer) > 0 {
		head.Fields = append(head.Fields, httpio.Field{Name: "trailer", Value: strings.Join(slices.Sorted(mapsKeys(resp.Trailer)), ", ")})
	}
	for _, k := range slices.Sorted(mapsKeys(resp.Header)) {
		for _, v := range resp.Header[k] {
			head.Fields = append(head.Fields, httpio.Field{Name: k, Value: v})
		}
	}
	if err := w.WriteHead(head); err != nil {
		return err
	}
	if resp.Body != nil && bodyAllowed(resp.StatusCode) && method != http.MethodHead {
		buf := make([]byte, 64<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				if werr := w.WriteData(buf[:n]); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
	}
	var t httpio.Header
	for _, k := range slices.Sorted(mapsKeys(resp.Trailer)) {
		for _, v := range resp.Trailer[k] {
			t = append(t, httpio.Field{Name: k, Value: v})
		}
	}
	if len(t) > 0 {
		if err := w.WriteTrailers(t); err != nil {
			return err
		}
	}
	return w.Close()
}

func mapsKeys(h http.Header) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}
}

// h3Link is a Tunnel whose far side is a real Handler: each stream is
// served by ServeStream on a goroutine of its own, as the session does.
type h3Link struct {
	h *Handler
	// streams keeps every stream opened, for assertions.
	mu      sync.Mutex
	streams []*memStream
}

func (l *h3Link) Open(ctx context.Context, h *h3.Head, end bool) (TunnelStream, error) {
	m := newMemStream(context.Background())
	l.mu.Lock()
	l.streams = append(l.streams, m)
	l.mu.Unlock()
	go func() {
		defer close(m.serverDone)
		head, err := m.sr.ReadHead()
		if err != nil {
			m.resetAll()
			return
		}
		m.head = head
		l.h.ServeStream(m.server())
		m.serverEnded()
	}()
	if err := m.cw.WriteHead(h); err != nil {
		m.resetAll()
		return nil, err
	}
	if end {
		m.cw.Close()
	}
	return m.client(), nil
}

// syncLink is a Tunnel for bodiless requests whose far side is a real
// Handler run synchronously inside Open: the request crosses in a buffer,
// ServeStream answers into another, and the client end reads the
// response from it. No goroutine is involved: it lets a test count the
// goroutines an exchange itself starts.
type syncLink struct{ h *Handler }

func (l syncLink) Open(ctx context.Context, h *h3.Head, end bool) (TunnelStream, error) {
	if !end {
		return nil, errors.New("syncLink carries bodiless requests only")
	}
	var reqBuf, respBuf bytes.Buffer
	cw := newH3Writer(&bufEnd{out: &reqBuf})
	err := cw.WriteHead(h)
	cw.Release()
	if err != nil {
		return nil, err
	}
	srv := &bufEnd{in: &reqBuf, out: &respBuf}
	m := &memStream{
		server3:    srv,
		sr:         newH3Reader(srv, h3.ReadsRequest),
		sw:         newH3Writer(srv),
		ctx:        ctx,
		serverDone: make(chan struct{}),
	}
	head, err := m.sr.ReadHead()
	if err != nil {
		m.sr.Release()
		m.sw.Release()
		return nil, err
	}
	m.head = head
	l.h.ServeStream(m.server())
	close(m.serverDone)
	m.sr.Release()
	m.sw.Release()
	m.client3 = &bufEnd{in: &respBuf}
	m.cr = newH3Reader(m.client3, h3.ReadsResponse)
	m.releaseOnClose = true
	return m.client(), nil
}

// h3Result is what the HTTP/3 stream carried back to the client.
type h3Result struct {
	status int // final status; 0 if none came
	// implicit is set when the handler returned without ending the stream
	// (no FIN, no reset): the session would have to invent an answer.
	implicit bool
	interim  []int
	header   http.Header
	body     string
	trailers http.Header
	reset    bool // the stream was reset (by the handler, or a broken response)
	stopped  bool // the handler stopped reading the request body
}

// serveH3 runs the handler for one request as the session would, playing
// the client: method, target and hdr make the request head (:authority
// example.org; a content-length field when length >= 0), body nil means a
// stream that ends right after its HEADERS, otherwise each Read of body
// is one DATA frame. The request body is sent while the handler runs;
// StopReading closes body if it is an io.Closer.
func serveH3(ctx context.Context, h *Handler, method, target string, hdr http.Header, body io.Reader, length int64) h3Result {
	return serveH3On(newMemStream(ctx), h, method, target, hdr, body, length)
}

// serveH3On is serveH3 on a stream the caller prepared.
func serveH3On(m *memStream, h *Handler, method, target string, hdr http.Header, body io.Reader, length int64) h3Result {
	head := &h3.Head{Method: method, Scheme: "https", Authority: "example.org", Path: target, ContentLength: -1}
	if body != nil && length >= 0 {
		head.ContentLength = length
		head.Fields = append(head.Fields, httpio.Field{Name: "content-length", Value: strconv.FormatInt(length, 10)})
	}
	for _, k := range slices.Sorted(mapsKeys(hdr)) {
		for _, v := range hdr[k] {
			head.Fields = append(head.Fields, httpio.Field{Name: strings.ToLower(k), Value: v})
		}
	}
	if c, ok := body.(io.Closer); ok {
		m.onStop = func() { c.Close() }
	}
	go func() {
		if err := m.cw.WriteHead(head); err != nil {
			return
		}
		if body != nil {
			buf := make([]byte, 32<<10)
			for {
				n, err := body.Read(buf)
				if n > 0 {
					if m.cw.WriteData(buf[:n]) != nil {
						return
					}
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					m.client3.CancelWrite(h3.ErrCodeRequestCanceled)
					return
				}
			}
		}
		m.cw.Close()
	}()
	rh, err := m.sr.ReadHead()
	if err != nil {
		panic("serveH3: the request head does not decode: " + err.Error())
	}
	m.head = rh
	res := make(chan h3Result, 1)
	go func() { res <- collectH3(m.cr, method) }()
	h.ServeStream(m.server())
	ended := m.serverEnded()
	// Whatever is left of the request is not read any more.
	m.server3.CancelRead(h3.ErrCodeNoError)
	r := <-res
	r.implicit = !ended
	r.stopped = m.stopped.Load()
	return r
}

// collectH3 reads a response off the stream.
func collectH3(r *h3.Reader, method string) (res h3Result) {
	for {
		h, err := r.ReadHead()
		if err != nil {
			res.reset = true
			return res
		}
		if h.Status >= 200 {
			res.status = h.Status
			res.header = http.Header{}
			for _, f := range h.Fields {
				res.header.Add(f.Name, f.Value)
			}
			if method == http.MethodHead || !bodyAllowed(h.Status) {
				r.SetNoBody()
			}
			break
		}
		res.interim = append(res.interim, h.Status)
	}
	var body bytes.Buffer
	buf := make([]byte, 32<<10)
	for {
		if r.FrameLeft() == 0 {
			if _, err := r.NextData(); err != nil {
				if err != io.EOF {
					res.reset = true
				}
				break
			}
			continue
		}
		n, err := r.ReadData(buf[:min(int64(len(buf)), r.FrameLeft())])
		body.Write(buf[:n])
		if err != nil && err != io.EOF {
			res.reset = true
			break
		}
	}
	res.body = body.String()
	if t := r.Trailers(); len(t) > 0 {
		res.trailers = http.Header{}
		for _, f := range t {
			res.trailers.Add(f.Name, f.Value)
		}
	}
	return res
}
