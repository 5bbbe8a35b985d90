package pipeline

// Tests of the server side (HTTP/3 in, HTTP/1.1 to the origin) against a
// scriptable origin: each of its connections runs a script that can close
// idle connections, close mid-head or mid-body, reset, answer early, send
// interim responses or trailers. The handler is driven as the session
// drives it (serveH3, tunnel_test.go), over a stream running the HTTP/3
// codec, which notices a handler that returns without ending the stream.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// scriptOrigin accepts connections and runs script on each; n counts
// connections from 1.
type scriptOrigin struct {
	t      *testing.T
	ln     net.Listener
	conns  atomic.Int32
	mu     sync.Mutex
	seen   []string // request lines in arrival order
	wg     sync.WaitGroup
	script func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader)
}

func startScriptOrigin(t *testing.T, script func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader)) *scriptOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveScriptOrigin(t, ln, script)
}

// serveScriptOrigin is startScriptOrigin on a listener the caller opened.
func serveScriptOrigin(t *testing.T, ln net.Listener, script func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader)) *scriptOrigin {
	t.Helper()
	o := &scriptOrigin{t: t, ln: ln, script: script}
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := int(o.conns.Add(1))
			o.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second)) // safety net only
				o.script(o, n, c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() { ln.Close(); o.wg.Wait() })
	return o
}

// read reads one request and its body, recording the request line.
func (o *scriptOrigin) read(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	o.mu.Lock()
	o.seen = append(o.seen, req.Method+" "+req.RequestURI)
	o.mu.Unlock()
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// readHead reads one request head only (the body stays unread).
func (o *scriptOrigin) readHead(br *bufio.Reader) (*http.Request, error) {
	req, err := http.ReadRequest(br)
	if err == nil {
		o.mu.Lock()
		o.seen = append(o.seen, req.Method+" "+req.RequestURI)
		o.mu.Unlock()
	}
	return req, err
}

func (o *scriptOrigin) requests() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.seen...)
}

// ok answers 200 with a keep-alive body echoing the request line.
func ok(c net.Conn, req *http.Request) {
	body := req.Method + " " + req.RequestURI
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// serveAll answers every request on the connection with ok.
func (o *scriptOrigin) serveAll(c net.Conn, br *bufio.Reader) {
	for {
		req, _, err := o.read(br)
		if err != nil {
			return
		}
		ok(c, req)
	}
}

func newTestHandler(addr string, tweak func(*ServerOptions)) (*Handler, *OriginPool) {
	pool := NewOriginPool(OriginOptions{Address: addr})
	o := &ServerOptions{Origin: pool}
	if tweak != nil {
		tweak(o)
	}
	return NewHandler(o), pool
}

func get(t *testing.T, h *Handler, target string) h3Result {
	t.Helper()
	return serveH3(t.Context(), h, "GET", target, nil, nil, 0)
}

func post(t *testing.T, h *Handler, method, target, body string) h3Result {
	t.Helper()
	if body == "" {
		return serveH3(t.Context(), h, method, target, nil, strings.NewReader(""), 0)
	}
	return serveH3(t.Context(), h, method, target, nil, strings.NewReader(body), int64(len(body)))
}

func wantStatus(t *testing.T, what string, r h3Result, status int) {
	t.Helper()
	if r.implicit || r.reset || r.status != status {
		t.Fatalf("%s: status %d (implicit %v, reset %v) body %q; want %d", what, r.status, r.implicit, r.reset, r.body, status)
	}
}

// TestOriginClosesIdleConnection: an origin that closes its idle
// keep-alive connection (nginx keepalive_timeout, Node's 5 s) must not turn
// the next request into a 502, whatever its method and body.
func TestOriginClosesIdleConnection(t *testing.T) {
	closed := make(chan struct{}, 8)
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		req, _, err := o.read(br)
		if err != nil {
			return
		}
		ok(c, req)
		c.Close() // idle timeout right after the answer
		closed <- struct{}{}
	})
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	for i, send := range []func() h3Result{
		func() h3Result { return get(t, h, "/a") },
		func() h3Result { return post(t, h, "POST", "/b", "payload") },
		func() h3Result { return post(t, h, "PUT", "/c", "payload") },
		func() h3Result { return post(t, h, "PATCH", "/d", "") },
		func() h3Result {
			return serveH3(t.Context(), h, "POST", "/e", http.Header{"Expect": {"100-continue"}}, strings.NewReader("chunked body"), -1)
		},
	} {
		r := send()
		wantStatus(t, fmt.Sprintf("request %d", i), r, 200)
		<-closed
	}
	if got := len(o.requests()); got != 5 {
		t.Fatalf("origin saw %d requests, want 5 (each exactly once): %q", got, o.requests())
	}
}

// TestTwoDeadPooledConnections: two idle connections the origin closed
// must be skipped; the request gets the origin's answer, never an empty 200.
func TestTwoDeadPooledConnections(t *testing.T) {
	var arrived, hold sync.WaitGroup
	arrived.Add(2)
	hold.Add(2)
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		if n <= 2 {
			req, _, err := o.read(br)
			arrived.Done()
			if err != nil {
				hold.Done()
				return
			}
			// Neither warm-up is answered before both are in flight, so
			// the second cannot reuse the first one's connection.
			arrived.Wait()
			ok(c, req)
			hold.Done()
			hold.Wait() // both are pooled before either closes
			return
		}
		o.serveAll(c, br)
	})
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { wantStatus(t, fmt.Sprint("warm-up ", i), get(t, h, "/warm"), 200) })
	}
	wg.Wait()
	hold.Wait()
	eventually(t, "both pooled connections closed by the origin", func() bool { return pooledDead(pool) == 2 })
	for _, m := range []string{"GET", "HEAD"} {
		r := serveH3(t.Context(), h, m, "/after", nil, nil, 0)
		wantStatus(t, m, r, 200)
		if m == "GET" && r.body != "GET /after" {
			t.Fatalf("GET body %q", r.body)
		}
	}
}

// pooledDead counts idle pooled connections the origin has closed.
func pooledDead(p *OriginPool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.idle {
		if !c.alive() {
			n++
		}
	}
	return n
}

// closesSecondRequest is an origin whose first connection answers one
// request, then reads the next and closes without answering (its
// keep-alive timer fired as the request arrived); later connections
// answer everything.
func closesSecondRequest(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
	if n == 1 {
		req, _, err := o.read(br)
		if err != nil {
			return
		}
		ok(c, req)
		o.read(br)
		return
	}
	o.serveAll(c, br)
}

// TestStaleConnectionRetryRules: a reused connection that the origin closes
// right under a request (after reading it, before any byte of an answer) is
// retried once on a new connection only for what RFC 9110 9.2.2 allows; a
// POST, with or without a body, is answered 502 and sent only once.
func TestStaleConnectionRetryRules(t *testing.T) {
	for _, tc := range []struct {
		method, body string
		retried      bool
	}{
		{"GET", "", true},
		{"HEAD", "", true},
		{"DELETE", "", true},
		{"POST", "", false},
		{"POST", "data", false},
		{"PATCH", "data", false},
	} {
		t.Run(tc.method+"-"+tc.body, func(t *testing.T) {
			o := startScriptOrigin(t, closesSecondRequest)
			h, pool := newTestHandler(o.ln.Addr().String(), nil)
			defer pool.Close()
			wantStatus(t, "first", get(t, h, "/first"), 200)
			var r h3Result
			if tc.body == "" && tc.method != "POST" {
				r = serveH3(t.Context(), h, tc.method, "/second", nil, nil, 0)
			} else {
				r = post(t, h, tc.method, "/second", tc.body)
			}
			sent := 0
			for _, l := range o.requests() {
				if l == tc.method+" /second" {
					sent++
				}
			}
			if tc.retried {
				wantStatus(t, "retried", r, 200)
				if sent != 2 {
					t.Fatalf("origin saw the request %d times, want 2 (original + retry)", sent)
				}
				return
			}
			wantStatus(t, "not retried", r, 502)
			if sent != 1 {
				t.Fatalf("origin saw the %s %d times, want exactly once", tc.method, sent)
			}
			if !strings.Contains(r.body, "origin closed the connection") || strings.Contains(r.body, "127.0.0.1") {
				t.Fatalf("502 body %q: want the class, not the address", r.body)
			}
		})
	}
}

// TestUnreplayableRequestAvoidsLongIdleConnection: an origin may close an
// idle connection at the moment a request arrives on it (nginx at exactly
// keepalive_timeout); the liveness check cannot see that coming. A request
// that could not be sent again therefore takes a new connection rather than
// one idle for unsafeReuseIdle or more, and reaches the origin; a replayable
// one still reuses it (and would be retried).
func TestUnreplayableRequestAvoidsLongIdleConnection(t *testing.T) {
	for _, tc := range []struct {
		method, body string
		newConn      bool
	}{
		{"POST", "data", true},
		{"POST", "", true},
		{"PUT", "data", true},
		{"GET", "", false},
	} {
		t.Run(tc.method+"-"+tc.body, func(t *testing.T) {
			o := startScriptOrigin(t, closesSecondRequest)
			h, pool := newTestHandler(o.ln.Addr().String(), nil)
			defer pool.Close()
			wantStatus(t, "first", get(t, h, "/first"), 200)
			pool.mu.Lock()
			if len(pool.idle) != 1 {
				pool.mu.Unlock()
				t.Fatalf("%d idle connections after the first exchange, want 1", len(pool.idle))
			}
			pool.idle[0].idleSince = time.Now().Add(-unsafeReuseIdle)
			pool.mu.Unlock()

			var r h3Result
			if tc.method == "GET" {
				r = get(t, h, "/second")
			} else {
				r = post(t, h, tc.method, "/second", tc.body)
			}
			wantStatus(t, "second", r, 200)
			sent := 0
			for _, l := range o.requests() {
				if l == tc.method+" /second" {
					sent++
				}
			}
			// Sent once on a new connection, or (GET) on the idle one and
			// then again on a new one.
			want := 2
			if tc.newConn {
				want = 1
			}
			if sent != want {
				t.Fatalf("origin saw the request %d times, want %d", sent, want)
			}
			if n := o.conns.Load(); n != 2 {
				t.Fatalf("%d origin connections, want 2", n)
			}
		})
	}
}

// TestResponseHeadOverPeerLimit: a response head larger than the client
// side's SETTINGS_MAX_FIELD_SECTION_SIZE is not sent (the client would
// reject the stream as malformed); the caller gets a 502 that says why,
// and the connection that carried it is not reused.
func TestResponseHeadOverPeerLimit(t *testing.T) {
	big := strings.Repeat("v", 3000)
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := o.read(br)
			if err != nil {
				return
			}
			if req.RequestURI == "/big" {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 2\r\n\r\nok", big)
				continue
			}
			ok(c, req)
		}
	})
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	m := newMemStream(t.Context())
	m.sw.SetPeerLimit(1000)
	r := serveH3On(m, h, "GET", "/big", nil, nil, 0)
	wantStatus(t, "head over the peer's limit", r, 502)
	if !strings.Contains(r.body, "larger than the client side accepts") {
		t.Fatalf("502 body %q: want the reason", r.body)
	}
	m = newMemStream(t.Context())
	m.sw.SetPeerLimit(1000)
	wantStatus(t, "a small head after it", serveH3On(m, h, "GET", "/small", nil, nil, 0), 200)
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("%d origin connections, want 2 (the one left mid-body is not reused)", n)
	}
}

// TestOriginFailuresMidMessage: a close mid-head is a 502; a close or reset
// mid-body after the head was relayed resets the stream (the caller sees a
// cut response, never a complete-looking one).
func TestOriginFailuresMidMessage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(c net.Conn)
		status int
		reset  bool
		body   string // of a 502
	}{
		{"close mid-head", func(c net.Conn) { io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-") }, 502, false,
			"could not proxy request: origin closed the connection in the middle of its response head\n"},
		{"reset before answer", func(c net.Conn) { c.(*net.TCPConn).SetLinger(0) }, 502, false,
			"could not proxy request: origin closed the connection without answering\n"},
		{"close mid-body", func(c net.Conn) { io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") }, 200, true, ""},
		{"close mid-chunk", func(c net.Conn) { io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab") }, 200, true, ""},
		{"garbage", func(c net.Conn) { io.WriteString(c, "SMTP ready\r\n\r\n") }, 502, false,
			"could not proxy request: invalid response from origin\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
				if _, _, err := o.read(br); err != nil {
					return
				}
				tc.script(c)
			})
			h, pool := newTestHandler(o.ln.Addr().String(), nil)
			defer pool.Close()
			r := get(t, h, "/x")
			if r.implicit || r.status != tc.status || r.reset != tc.reset {
				t.Fatalf("status %d implicit %v reset %v body %q; want %d reset %v", r.status, r.implicit, r.reset, r.body, tc.status, tc.reset)
			}
			if tc.status == 502 && r.body != tc.body {
				t.Fatalf("502 body %q, want %q", r.body, tc.body)
			}
		})
	}
}

// TestOriginInterimAndTrailers: 100 Continue and 103 Early Hints are
// relayed as interim responses; trailers come through.
func TestOriginInterimAndTrailers(t *testing.T) {
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		req, err := o.readHead(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/continue":
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			body, _ := io.ReadAll(req.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		case "/hints":
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case "/trailers":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 42\r\n\r\n")
		}
	})
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	r := serveH3(t.Context(), h, "PUT", "/continue", http.Header{"Expect": {"100-continue"}}, strings.NewReader("upload"), 6)
	wantStatus(t, "continue", r, 200)
	if len(r.interim) != 1 || r.interim[0] != 100 || r.body != "upload" {
		t.Fatalf("continue: interim %v body %q", r.interim, r.body)
	}
	r = get(t, h, "/hints")
	wantStatus(t, "hints", r, 200)
	if len(r.interim) != 1 || r.interim[0] != 103 || r.body != "ok" {
		t.Fatalf("hints: interim %v body %q", r.interim, r.body)
	}
	r = get(t, h, "/trailers")
	wantStatus(t, "trailers", r, 200)
	if got := r.trailers.Get("X-Sum"); got != "42" || r.body != "ok" {
		t.Fatalf("trailers: X-Sum %q body %q", got, r.body)
	}
	if r.header.Get("Trailer") != "X-Sum" {
		t.Fatalf("trailer declaration %q", r.header.Get("Trailer"))
	}
}

// TestOriginEarlyAnswer: an origin that answers before reading the upload
// (401, 413) gets its answer relayed, not a 502, and the connection it
// answered on is not reused (it is out of step).
func TestOriginEarlyAnswer(t *testing.T) {
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := o.readHead(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/upload" {
				io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
				// Read on until ptproxy closes, as a lazy origin does.
				io.Copy(io.Discard, br)
				return
			}
			io.Copy(io.Discard, req.Body)
			ok(c, req)
		}
	})
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	// The caller sends 64 KiB of its 4 MiB and then stalls: the handler
	// must answer, stop reading and return all the same.
	body := &stalledBody{data: bytes.Repeat([]byte("x"), 64<<10), closed: make(chan struct{})}
	r := serveH3(t.Context(), h, "POST", "/upload", nil, body, 4<<20)
	wantStatus(t, "early answer", r, 413)
	if r.body != "big" {
		t.Fatalf("body %q", r.body)
	}
	select {
	case <-body.closed:
	default:
		t.Fatal("the request body was not closed after the early answer")
	}
	if !r.stopped {
		t.Fatal("the handler did not stop reading the request body")
	}
	wantStatus(t, "next", get(t, h, "/next"), 200)
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("%d origin connections, want 2 (the early-answered one not reused)", n)
	}
}

// stalledBody returns data, then blocks until closed, as an HTTP/3 request
// body does when the caller stops sending.
type stalledBody struct {
	data   []byte
	once   sync.Once
	closed chan struct{}
}

func (b *stalledBody) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	<-b.closed
	return 0, errors.New("body closed")
}

func (b *stalledBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// TestOriginTimeoutAndCancel: no answer within upstream_timeout is a 504
// and the connection is not reused; a tunnel-side cancellation while
// waiting for the head closes the origin connection (the origin stops
// working for nobody) and resets the stream.
func TestOriginTimeoutAndCancel(t *testing.T) {
	gone := make(chan struct{}, 4)
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		req, _, err := o.read(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/slow" {
			// Never answer; report when ptproxy closes the connection.
			if _, err := br.ReadByte(); err != nil {
				gone <- struct{}{}
			}
			return
		}
		ok(c, req)
		o.serveAll(c, br)
	})
	h, pool := newTestHandler(o.ln.Addr().String(), func(so *ServerOptions) { so.UpstreamTimeout = 100 * time.Millisecond })
	defer pool.Close()
	r := get(t, h, "/slow")
	wantStatus(t, "timeout", r, 504)
	if !strings.Contains(r.body, "origin did not answer in time") {
		t.Fatalf("504 body %q", r.body)
	}
	<-gone

	h2, pool2 := newTestHandler(o.ln.Addr().String(), nil)
	defer pool2.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan h3Result, 1)
	go func() { done <- serveH3(ctx, h2, "GET", "/slow", nil, nil, 0) }()
	eventually(t, "the origin got the slow request", func() bool { return containsN(o.requests(), "GET /slow", 2) })
	cancel()
	select {
	case <-gone:
	case <-time.After(20 * time.Second):
		t.Fatal("the origin connection stayed open after the exchange was cancelled")
	}
	if r := <-done; !r.reset || r.implicit {
		t.Fatalf("cancelled exchange: %+v; want a reset stream", r)
	}
}

// containsN reports whether list holds v at least n times.
func containsN(list []string, v string, n int) bool {
	c := 0
	for _, s := range list {
		if s == v {
			c++
		}
	}
	return c >= n
}

// TestServerSinkNeverInventsAResponse: a sink left without a head and
// without a failure (no path of the exchange does that) answers 502 and
// ends the stream, or resets it when the exchange was cancelled; it never
// leaves the stream without an end. A head without an end is a reset.
func TestServerSinkNeverInventsAResponse(t *testing.T) {
	run := func(ctx context.Context, prepare func(k *streamSink)) h3Result {
		m := newMemStream(ctx)
		res := make(chan h3Result, 1)
		go func() { res <- collectH3(m.cr, "GET") }()
		k := &streamSink{s: m.server(), ctx: ctx}
		if prepare != nil {
			prepare(k)
		}
		k.done()
		r := <-res
		r.implicit = !m.serverEnded()
		return r
	}
	r := run(t.Context(), nil)
	if r.status != 502 || r.implicit || r.reset || !strings.Contains(r.body, "could not proxy request") {
		t.Fatalf("left alone: %+v", r)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if r := run(ctx, nil); !r.reset || r.status != 0 || r.implicit {
		t.Fatalf("cancelled: %+v, want the stream reset", r)
	}
	r = run(t.Context(), func(k *streamSink) {
		k.head(&Head{Status: 200, Body: httpio.Framing{Kind: httpio.LengthBody, Length: 10}})
		k.data([]byte("abc"))
	})
	if !r.reset || r.status != 200 || r.implicit {
		t.Fatalf("head out: %+v, want the stream reset", r)
	}
}

// TestPooledConnectionDeadlineCleared: a connection returned to the pool
// with a deadline left from its exchange (the caller left just as the
// response ended) must not fail the next request at once (a spurious 504).
func TestPooledConnectionDeadlineCleared(t *testing.T) {
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) { o.serveAll(c, br) })
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	wantStatus(t, "first", get(t, h, "/1"), 200)
	c, err := pool.get(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	c.conn.SetDeadline(time.Unix(1, 0))
	pool.put(c, "")
	wantStatus(t, "after a stale deadline", get(t, h, "/2"), 200)
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("%d origin connections, want 1 (the pooled one reused)", n)
	}
}

func TestIdleTimeFromKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		ka   string
		want time.Duration
	}{
		{"", 4 * time.Second},
		{"timeout=5", 4 * time.Second},
		{"timeout=5, max=100", 4 * time.Second},
		{"max=100, timeout=2", time.Second},
		{"Timeout=60", 4 * time.Second},
		{"timeout=abc", 4 * time.Second},
		{"timeout=0", 0},
	} {
		if got := idleTime(4*time.Second, tc.ka); got != tc.want {
			t.Errorf("idleTime(4s, %q) = %v, want %v", tc.ka, got, tc.want)
		}
	}
}

// TestResponseLimitsGenerous: a response head with 150 fields and 80 KiB
// of fields (more than the request limits) passes with the default
// response limits, as Go's and Node's clients accept it.
func TestResponseLimitsGenerous(t *testing.T) {
	var b strings.Builder
	b.WriteString("HTTP/1.1 200 OK\r\n")
	for i := range 150 {
		fmt.Fprintf(&b, "X-F%d: %s\r\n", i, strings.Repeat("v", 540))
	}
	b.WriteString("Content-Length: 2\r\n\r\nok")
	r := httpio.NewReader(strings.NewReader(b.String()), ResponseLimits(0))
	defer r.Release()
	var resp httpio.Response
	if err := r.ReadResponse(&resp, "GET"); err != nil {
		t.Fatalf("header-heavy response refused: %v", err)
	}
	if len(resp.Header) != 151 {
		t.Fatalf("%d fields", len(resp.Header))
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
