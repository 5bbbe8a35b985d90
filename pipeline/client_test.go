package pipeline

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startClient serves the client side on a loopback listener and returns
// its address.
func startClient(t *testing.T, tun Tunnel) string {
	t.Helper()
	return startClientWith(t, &ClientOptions{Tunnel: tun, Now: fixedNow})
}

// startClientWith is startClient with all the options given.
func startClientWith(t *testing.T, o *ClientOptions) string {
	t.Helper()
	return serveClient(t, o, func(c net.Conn) net.Conn { return c })
}

// serveClient serves the client pipeline on a loopback listener, each
// accepted connection passed through wrap, and returns its address.
func serveClient(t *testing.T, o *ClientOptions, wrap func(net.Conn) net.Conn) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go ServeClientConn(ctx, wrap(c), o)
		}
	}()
	t.Cleanup(func() { ln.Close(); cancel(); <-done })
	return ln.Addr().String()
}

func fixedNow() time.Time { return time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) }

func dialRaw(t *testing.T, addr, raw string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second)) // safety net only
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func textResponse(status int, body string) *http.Response {
	return &http.Response{
		StatusCode:    status,
		Header:        http.Header{"Content-Type": {"text/plain"}},
		ContentLength: int64(len(body)),
		Body:          io.NopCloser(strings.NewReader(body)),
	}
}

func TestClientForwardsGET(t *testing.T) {
	var seen atomic.Pointer[http.Request]
	addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
		seen.Store(r)
		return textResponse(200, "hello"), nil
	}))
	_, br := dialRaw(t, addr, "GET /a?b=c HTTP/1.1\r\nHost: example.org\r\nX-One: 1\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello" || resp.ContentLength != 5 {
		t.Fatalf("got %d %q cl=%d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp.Header.Get("Date") == "" {
		t.Error("Date not added")
	}
	r := seen.Load()
	if r.Host != "example.org" || r.URL.RequestURI() != "/a?b=c" || r.Header.Get("X-One") != "1" {
		t.Errorf("tunnel saw host=%q uri=%q hdr=%v", r.Host, r.URL.RequestURI(), r.Header)
	}
	if r.Body != nil {
		t.Errorf("bodiless GET sent with a body")
	}
}

func TestClientTunnelDownIs503(t *testing.T) {
	addr := startClient(t, tunnelFunc(func(*http.Request) (*http.Response, error) {
		return nil, fmt.Errorf("%w: dial: no route", ErrTunnelDown)
	}))
	_, br := dialRaw(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Server") != "ptproxy client" || !strings.Contains(string(body), "tunnel not established") {
		t.Fatalf("got %d server=%q body=%q", resp.StatusCode, resp.Header.Get("Server"), body)
	}
}

func TestClientPipelinedInOrder(t *testing.T) {
	addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
		return textResponse(200, r.URL.RequestURI()), nil
	}))
	_, br := dialRaw(t, addr, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"/1", "/2", "/3"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Fatalf("got %q want %q", body, want)
		}
	}
}

func TestClientChunkedUploadKeepsChunksAndTrailers(t *testing.T) {
	type got struct {
		reads   []string
		trailer http.Header
		cl      int64
	}
	ch := make(chan got, 1)
	addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
		var g got
		g.cl = r.ContentLength
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				g.reads = append(g.reads, string(buf[:n]))
			}
			if err != nil {
				break
			}
		}
		g.trailer = r.Trailer
		ch <- g
		return textResponse(200, "ok"), nil
	}))
	_, br := dialRaw(t, addr, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"3\r\nabc\r\n5;ext=1\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	g := <-ch
	if strings.Join(g.reads, "|") != "abc|hello" {
		t.Errorf("chunk units %q", g.reads)
	}
	if g.cl != -1 {
		t.Errorf("ContentLength %d, want -1 (unknown)", g.cl)
	}
	if g.trailer.Get("X-Sum") != "42" {
		t.Errorf("trailer %v", g.trailer)
	}
}

func TestClientRejectsSmugglingWithoutForwarding(t *testing.T) {
	var calls atomic.Int32
	addr := startClient(t, tunnelFunc(func(*http.Request) (*http.Response, error) {
		calls.Add(1)
		return textResponse(200, "no"), nil
	}))
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
	} {
		c, br := dialRaw(t, addr, raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 400 || !resp.Close {
			t.Errorf("%q: got %d close=%v", raw, resp.StatusCode, resp.Close)
		}
		// The connection is closed after the rejection.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := br.Read(make([]byte, 1)); err == nil {
			t.Errorf("%q: connection still open (%d bytes more)", raw, n)
		}
	}
	if calls.Load() != 0 {
		t.Fatalf("tunnel called %d times for rejected requests", calls.Load())
	}
}

func TestClientCONNECTIs405(t *testing.T) {
	addr := startClient(t, tunnelFunc(func(*http.Request) (*http.Response, error) {
		t.Error("tunnel called")
		return nil, io.EOF
	}))
	_, br := dialRaw(t, addr, "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 405 {
		t.Fatalf("got %d", resp.StatusCode)
	}
}

// errReader fails after delivering its data, as a tunnel stream reset does.
type errReader struct {
	data string
	done bool
}

func (e *errReader) Read(p []byte) (int, error) {
	if !e.done {
		e.done = true
		return copy(p, e.data), nil
	}
	return 0, io.ErrUnexpectedEOF
}

func TestClientCutResponseClosesWithoutLastChunk(t *testing.T) {
	addr := startClient(t, tunnelFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1,
			Body: io.NopCloser(&errReader{data: "partial"})}, nil
	}))
	c, br := dialRaw(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c
	raw, _ := io.ReadAll(br) // ends when the proxy closes
	s := string(raw)
	if !strings.Contains(s, "Transfer-Encoding: chunked") || !strings.Contains(s, "partial") {
		t.Fatalf("unexpected bytes %q", s)
	}
	if strings.HasSuffix(s, "0\r\n\r\n") {
		t.Fatalf("a cut body was terminated as complete: %q", s)
	}
}
