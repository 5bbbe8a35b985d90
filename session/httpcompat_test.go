package session

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// The session tests speak net/http: these adapters put a net/http face on
// Client.Open (RoundTrip) and on the StreamHandler (httpHandler). They use
// only the exported exchange API, so the tests exercise the real streams.

// RoundTrip sends req through Open and reads its response, skipping
// interim responses (reported to the request's httptrace).
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	draining := c.draining
	c.mu.Unlock()
	if draining || req == nil {
		return nil, ErrDraining
	}
	head := &h3.Head{Method: req.Method, Scheme: "https", Authority: req.Host, Path: req.URL.RequestURI(), ContentLength: -1}
	if head.Authority == "" {
		head.Authority = req.URL.Host
	}
	names := make([]string, 0, len(req.Header))
	for k := range req.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range req.Header[k] {
			head.Fields = append(head.Fields, httpio.Field{Name: strings.ToLower(k), Value: v})
		}
	}
	bodiless := req.Body == nil || req.Body == http.NoBody
	if req.ContentLength > 0 {
		head.Fields = append(head.Fields, httpio.Field{Name: "content-length", Value: strconv.FormatInt(req.ContentLength, 10)})
	}
	x, err := c.Open(req.Context(), head, bodiless)
	if err != nil {
		return nil, err
	}
	trace := httptrace.ContextClientTrace(req.Context())
	if trace != nil && trace.WroteRequest != nil {
		trace.WroteRequest(httptrace.WroteRequestInfo{}) // the head is out
	}
	var up sync.WaitGroup
	if !bodiless {
		up.Add(1)
		go func() {
			defer up.Done()
			buf := make([]byte, 16<<10)
			for {
				n, rerr := req.Body.Read(buf)
				if n > 0 {
					if x.WriteData(buf[:n]) != nil {
						return
					}
				}
				if rerr == io.EOF {
					x.CloseWrite(nil)
					return
				}
				if rerr != nil {
					x.Cancel()
					return
				}
			}
		}()
	}
	for {
		h, err := x.ReadHead()
		if err != nil {
			x.Cancel()
			up.Wait()
			x.Close()
			return nil, err
		}
		if h.Status < 200 {
			if trace != nil && trace.Got1xxResponse != nil {
				_ = trace.Got1xxResponse(h.Status, textproto.MIMEHeader(toHTTPHeader(h.Fields)))
			}
			continue
		}
		resp := &http.Response{StatusCode: h.Status, Status: strconv.Itoa(h.Status) + " " + http.StatusText(h.Status),
			Proto: "HTTP/3.0", ProtoMajor: 3, Header: toHTTPHeader(h.Fields), ContentLength: h.ContentLength, Request: req}
		resp.Body = &exchangeBody{x: x, up: &up}
		return resp, nil
	}
}

func toHTTPHeader(f httpio.Header) http.Header {
	hdr := http.Header{}
	for _, fl := range f {
		hdr.Add(fl.Name, fl.Value)
	}
	return hdr
}

// exchangeBody reads a response body off its exchange and closes the
// exchange once, at Close.
type exchangeBody struct {
	x    *Exchange
	up   *sync.WaitGroup
	once sync.Once
}

func (b *exchangeBody) Read(p []byte) (int, error) { return b.x.ReadData(p) }

func (b *exchangeBody) Close() error {
	b.once.Do(func() {
		b.x.Cancel()
		b.up.Wait()
		b.x.Close()
	})
	return nil
}

// httpHandler serves request streams with a net/http handler: interim
// responses through WriteHeader(1xx), a head written at the first Write,
// Flush or return (200 when none was set), one DATA frame per Write. A
// handler that panics with http.ErrAbortHandler resets the stream.
func httpHandler(h http.Handler) StreamHandler {
	return HandlerFunc(func(s *ServerStream) {
		rh := s.Request()
		body := &streamBody{s: s}
		req, err := http.NewRequestWithContext(s.Context(), rh.Method, "https://"+rh.Authority+rh.Path, body)
		if err != nil {
			s.Reset()
			return
		}
		req.Trailer = http.Header{}
		body.trailer = req.Trailer
		req.Host = rh.Authority
		req.RemoteAddr = s.RemoteAddr()
		req.ContentLength = rh.ContentLength
		req.Proto, req.ProtoMajor = "HTTP/3.0", 3
		req.Header = toHTTPHeader(rh.Fields)
		st := s.TLS()
		req.TLS = &st
		w := &streamResponseWriter{s: s, hdr: http.Header{}}
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					panic(p)
				}
				s.Reset()
				return
			}
			if w.writeHead(http.StatusOK) != nil {
				s.Reset()
				return
			}
			if tr := w.trailers(); len(tr) > 0 {
				s.WriteTrailers(tr)
			}
			s.Close()
		}()
		h.ServeHTTP(w, req)
	})
}

type streamBody struct {
	s       *ServerStream
	trailer http.Header // the request's, filled at EOF
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.s.ReadData(p)
	if err == io.EOF {
		for _, f := range b.s.Trailers() {
			b.trailer.Add(f.Name, f.Value)
		}
	}
	return n, err
}
func (b *streamBody) Close() error { return nil }

type streamResponseWriter struct {
	s      *ServerStream
	hdr    http.Header
	status int // 0 until the final head is out
}

func (w *streamResponseWriter) Header() http.Header { return w.hdr }

func (w *streamResponseWriter) head(status int) *h3.Head {
	h := &h3.Head{Status: status}
	names := make([]string, 0, len(w.hdr))
	for k := range w.hdr {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range w.hdr[k] {
			h.Fields = append(h.Fields, httpio.Field{Name: strings.ToLower(k), Value: v})
		}
	}
	return h
}

// trailers are the values of the declared trailer names and of the
// http.TrailerPrefix keys, as net/http sends them.
func (w *streamResponseWriter) trailers() httpio.Header {
	var out httpio.Header
	for _, names := range w.hdr["Trailer"] {
		for _, n := range strings.Split(names, ",") {
			n = http.CanonicalHeaderKey(strings.TrimSpace(n))
			for _, v := range w.hdr[n] {
				out = append(out, httpio.Field{Name: strings.ToLower(n), Value: v})
			}
		}
	}
	for k, vs := range w.hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vs {
				out = append(out, httpio.Field{Name: strings.ToLower(name), Value: v})
			}
		}
	}
	return out
}

func (w *streamResponseWriter) writeHead(status int) error {
	if w.status != 0 {
		return nil
	}
	w.status = status
	return w.s.WriteHead(w.head(status))
}

func (w *streamResponseWriter) WriteHeader(status int) {
	if status >= 100 && status < 200 {
		w.s.WriteHead(w.head(status))
		return
	}
	w.writeHead(status)
}

func (w *streamResponseWriter) Write(p []byte) (int, error) {
	if err := w.writeHead(http.StatusOK); err != nil {
		return 0, err
	}
	if len(p) == 0 || w.s.Request().Method == "HEAD" {
		return len(p), nil // net/http drops a body written to HEAD
	}
	if err := w.s.WriteData(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *streamResponseWriter) Flush() { w.writeHead(http.StatusOK) }
