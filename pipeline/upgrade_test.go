package pipeline

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// wsOrigin answers an upgrade request with 101 and "hello" right behind
// its head (same write), then echoes what it reads, upper-cased, until
// the end of its input; then it closes and signals ended. Other requests
// get 426.
func wsOrigin(t *testing.T, seen chan<- *bufioRequest, ended chan<- struct{}) *scriptOrigin {
	return startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		defer func() { ended <- struct{}{} }()
		req, err := o.readHead(br)
		if err != nil {
			return
		}
		seen <- &bufioRequest{line: req.Method + " " + req.RequestURI, conn: req.Header.Get("Connection"), upgrade: req.Header.Get("Upgrade"), key: req.Header.Get("Sec-WebSocket-Key")}
		if req.Header.Get("Upgrade") != "websocket" {
			io.WriteString(c, "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello")
		buf := make([]byte, 4096)
		for {
			k, err := br.Read(buf)
			if k > 0 {
				c.Write([]byte(strings.ToUpper(string(buf[:k]))))
			}
			if err != nil {
				return
			}
		}
	})
}

type bufioRequest struct{ line, conn, upgrade, key string }

// connectHead is the extended CONNECT the client side sends for a
// WebSocket handshake.
func connectHead() *h3.Head {
	return &h3.Head{Method: "CONNECT", Protocol: "websocket", Scheme: "https", Authority: "example.org", Path: "/chat",
		Fields:        httpio.Header{{Name: "sec-websocket-key", Value: "dGhlIHNhbXBsZSBub25jZQ=="}, {Name: "sec-websocket-version", Value: "13"}},
		ContentLength: -1}
}

// serveConnect runs h on a stream carrying connectHead, on a goroutine
// that closes served when the handler returned.
func serveConnect(t *testing.T, h *Handler) (*memStream, <-chan struct{}) {
	t.Helper()
	m := newMemStream(t.Context())
	go m.cw.WriteHead(connectHead())
	rh, err := m.sr.ReadHead()
	if err != nil {
		t.Fatal(err)
	}
	m.head = rh
	served := make(chan struct{})
	go func() {
		defer close(served)
		h.ServeStream(m.server())
	}()
	return m, served
}

// TestServerSwitchesProtocols drives the server side's handler with an
// extended CONNECT: the origin gets an HTTP/1.1 upgrade, its 101 becomes a
// 200 on the stream (hop-by-hop fields removed, its accept key kept), the
// bytes it sent behind the 101 arrive first, then the stream and the
// origin connection carry bytes both ways; the caller's FIN reaches the
// origin as the end of its input, its close ends the stream with FIN.
func TestServerSwitchesProtocols(t *testing.T) {
	seen, ended := make(chan *bufioRequest, 1), make(chan struct{}, 1)
	o := wsOrigin(t, seen, ended)
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	m, served := serveConnect(t, h)

	head, err := m.cr.ReadHead()
	if err != nil || head.Status != 200 {
		t.Fatalf("answer to the extended CONNECT: %v %v", head, err)
	}
	if head.Fields.Get("sec-websocket-accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || head.Fields.Get("upgrade") != "" || head.Fields.Get("connection") != "" {
		t.Fatalf("200 fields: %v", head.Fields)
	}
	req := <-seen
	if req.line != "GET /chat" || req.conn != "Upgrade" || req.upgrade != "websocket" || req.key != "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Fatalf("origin got %+v", req)
	}
	readN := func(n int) string {
		t.Helper()
		var b strings.Builder
		buf := make([]byte, 64)
		for b.Len() < n {
			if m.cr.FrameLeft() == 0 {
				if _, err := m.cr.NextData(); err != nil {
					t.Fatalf("after %q: %v", b.String(), err)
				}
			}
			k, err := m.cr.ReadData(buf[:min(len(buf), n-b.Len())])
			b.Write(buf[:k])
			if err != nil && b.Len() < n {
				t.Fatalf("after %q: %v", b.String(), err)
			}
		}
		return b.String()
	}
	if got := readN(5); got != "hello" {
		t.Fatalf("bytes behind the 101: %q", got)
	}
	if err := m.cw.WriteData([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if got := readN(4); got != "PING" {
		t.Fatalf("echo: %q", got)
	}
	m.cw.Close()
	if _, err := m.cr.NextData(); err != io.EOF {
		t.Fatalf("after the caller's FIN: %v, want the origin's close as FIN (io.EOF)", err)
	}
	<-served
	if !m.srvClosed.Load() || m.srvReset.Load() {
		t.Fatalf("stream ended with FIN %v, reset %v", m.srvClosed.Load(), m.srvReset.Load())
	}
	pool.mu.Lock()
	idle := len(pool.idle)
	pool.mu.Unlock()
	if idle != 0 {
		t.Fatal("a switched origin connection went back to the pool")
	}
}

// TestServerSwitchAborts: when the caller's side resets the stream, the
// origin connection is closed at once (the origin sees its input end), and
// the handler returns.
func TestServerSwitchAborts(t *testing.T) {
	seen, ended := make(chan *bufioRequest, 1), make(chan struct{}, 1)
	o := wsOrigin(t, seen, ended)
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	m, served := serveConnect(t, h)
	if head, err := m.cr.ReadHead(); err != nil || head.Status != 200 {
		t.Fatalf("answer: %v %v", head, err)
	}
	<-seen
	m.client().Cancel()
	select {
	case <-served:
	case <-time.After(30 * time.Second): // safety net
		t.Fatal("the handler did not return after the stream was reset")
	}
	select {
	case <-ended: // the origin's input ended: its connection was closed
	case <-time.After(30 * time.Second): // safety net
		t.Fatal("the origin connection stayed open after the stream was reset")
	}
}

// TestServerRefusedUpgrade: an origin that answers the upgrade without
// switching gets its answer relayed as an ordinary response.
func TestServerRefusedUpgrade(t *testing.T) {
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		if _, err := o.readHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
	})
	h, pool := newTestHandler(o.ln.Addr().String(), nil)
	defer pool.Close()
	m := newMemStream(context.Background())
	go m.cw.WriteHead(connectHead())
	rh, err := m.sr.ReadHead()
	if err != nil {
		t.Fatal(err)
	}
	m.head = rh
	res := make(chan h3Result, 1)
	go func() { res <- collectH3(m.cr, "GET") }()
	h.ServeStream(m.server())
	r := <-res
	if r.status != 403 || r.body != "no" || r.reset {
		t.Fatalf("refused upgrade: %+v", r)
	}
}
