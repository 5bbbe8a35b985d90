package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Between two requests a keep-alive caller's connection holds no buffer:
// its reader's buffer is parked and the connection's goroutine waits for
// the caller to send something (peeking) before the reader takes one
// again. These tests drive that wait through the real client pipeline.

// signalConn is a caller's TCP connection that reports on waits each wait
// for readability through its RawConn (the idle wait, or a hang-up
// watch's peek), so that a test knows the connection is idle, its buffers
// parked, before it sends the next request.
type signalConn struct {
	*net.TCPConn
	waits chan<- struct{}
}

func (c signalConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return nil, err
	}
	return signalRawConn{RawConn: rc, waits: c.waits}, nil
}

type signalRawConn struct {
	syscall.RawConn
	waits chan<- struct{}
}

func (r signalRawConn) Read(f func(fd uintptr) bool) error {
	signal(r.waits)
	return r.RawConn.Read(f)
}

// signalPlainConn is the same without a socket to peek at (like
// plainConn): there the idle wait reads one byte ahead, and reads of one
// byte are reported.
type signalPlainConn struct {
	net.Conn
	waits chan<- struct{}
}

func (c signalPlainConn) Read(p []byte) (int, error) {
	if len(p) == 1 {
		signal(c.waits)
	}
	return c.Conn.Read(p)
}

func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// idleServer serves the client pipeline for the idle tests: each accepted
// connection reports its idle waits on waits and the end of
// ServeClientConn on ended.
type idleServer struct {
	addr  string
	waits chan struct{}
	ended chan struct{}
}

func startIdleServer(t *testing.T, o *ClientOptions, plain bool) *idleServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &idleServer{addr: ln.Addr().String(), waits: make(chan struct{}, 4096), ended: make(chan struct{}, 4096)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var conn net.Conn = signalConn{TCPConn: c.(*net.TCPConn), waits: s.waits}
			if plain {
				conn = signalPlainConn{Conn: c, waits: s.waits}
			}
			go func() {
				ServeClientConn(ctx, conn, o)
				s.ended <- struct{}{}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); cancel(); <-done })
	return s
}

// echoTunnel answers every request with its path and body.
func echoTunnel() Tunnel {
	return tunnelFunc(func(r *http.Request) (*http.Response, error) {
		var body []byte
		if r.Body != nil {
			var err error
			if body, err = io.ReadAll(r.Body); err != nil {
				return nil, err
			}
		}
		return textResponse(200, r.URL.Path+string(body)), nil
	})
}

func readBody200(t *testing.T, br *bufio.Reader, want string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %q (%v), want 200 %q", resp.StatusCode, body, err, want)
	}
}

// TestIdleCallerParksAndResumes: a keep-alive caller that waited idle,
// buffers parked, is served as before whatever comes next: a request with
// a body, a head split across writes, two pipelined requests, and the end
// of its stream (the connection ends). With a socket to peek at and
// without.
func TestIdleCallerParksAndResumes(t *testing.T) {
	for _, plain := range []bool{false, true} {
		name := "peek"
		if plain {
			name = "read-ahead"
		}
		t.Run(name, func(t *testing.T) {
			s := startIdleServer(t, &ClientOptions{Tunnel: echoTunnel(), Now: fixedNow}, plain)
			c, br := dialRaw(t, s.addr, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
			readBody200(t, br, "/1")
			// Each wait is the connection idle after a response (the
			// first may be the one before the first request: then the
			// next step merely starts sooner; the outcome is the same).
			waitFor(t, "idle wait", s.waits)
			io.WriteString(c, "POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
			readBody200(t, br, "/2hello")
			waitFor(t, "idle wait", s.waits)
			io.WriteString(c, "GET /3 HTTP/1.1\r\nHo")
			io.WriteString(c, "st: x\r\n\r\n")
			readBody200(t, br, "/3")
			waitFor(t, "idle wait", s.waits)
			io.WriteString(c, "GET /4 HTTP/1.1\r\nHost: x\r\n\r\nGET /5 HTTP/1.1\r\nHost: x\r\n\r\n")
			readBody200(t, br, "/4")
			readBody200(t, br, "/5")
			waitFor(t, "idle wait", s.waits)
			c.(*net.TCPConn).CloseWrite()
			if b, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("after the caller's end of stream: byte %q, %v; want the end of the stream", b, err)
			}
			waitFor(t, "the end of ServeClientConn", s.ended)
		})
	}
}

// TestIdleCallerResetOrTimeout: a caller that resets its connection while
// idle ends it; so does the header timeout running out while idle.
func TestIdleCallerResetOrTimeout(t *testing.T) {
	s := startIdleServer(t, &ClientOptions{Tunnel: echoTunnel(), Now: fixedNow}, false)
	c, br := dialRaw(t, s.addr, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	readBody200(t, br, "/1")
	waitFor(t, "idle wait", s.waits)
	c.(*net.TCPConn).SetLinger(0) // Close sends a reset
	c.Close()
	waitFor(t, "the end of ServeClientConn after a reset", s.ended)

	s = startIdleServer(t, &ClientOptions{Tunnel: echoTunnel(), Now: fixedNow, HeaderReadTimeout: 200 * time.Millisecond}, false)
	_, br = dialRaw(t, s.addr, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	readBody200(t, br, "/1")
	expectClosed(t, br)
	waitFor(t, "the end of ServeClientConn after the header timeout", s.ended)
}

// TestIdleCallersHoldNoBuffers: idle keep-alive callers hold no read, write
// or copy buffer (16 KiB each): the heap grows by far less than one such
// buffer per idle caller. The counts include the test's own end of each
// connection.
func TestIdleCallersHoldNoBuffers(t *testing.T) {
	const callers = 200
	const maxPerCaller = 8 << 10
	s := startIdleServer(t, &ClientOptions{Tunnel: echoTunnel(), Now: fixedNow}, false)
	heap := func() uint64 {
		// Twice: sync.Pool keeps what it holds through one collection.
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base := heap()
	conns := make([]net.Conn, 0, callers)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range callers {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(20 * time.Second)) // safety net only
		if _, err := io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// Read the whole response without keeping a buffer per caller.
		var got []byte
		var b [512]byte
		for !bytes.HasSuffix(got, []byte("\r\n\r\n/ok")) {
			n, err := c.Read(b[:])
			if err != nil {
				t.Fatalf("response %q: %v", got, err)
			}
			got = append(got, b[:n]...)
		}
	}
	// Every caller is idle once its connection waits after its response:
	// a wait per caller before its request, one after.
	for range 2 * callers {
		waitFor(t, "idle wait", s.waits)
	}
	var per uint64
	for range 100 {
		if h := heap(); h > base {
			per = (h - base) / callers
		} else {
			per = 0
		}
		if per <= maxPerCaller {
			t.Logf("%d B of heap per idle caller", per)
			return
		}
		time.Sleep(10 * time.Millisecond) // a goroutine still on its way to its wait
	}
	t.Fatalf("%d B of heap per idle caller, want at most %d", per, maxPerCaller)
}
