package pipeline

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// waitFor fails the test if ch does not deliver within a generous safety
// bound (the assertion is that it happens at all, not how fast).
func waitFor[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: never happened", what)
		panic("unreachable")
	}
}

// TestCallerHangupCancelsTunnelRequest: a caller that gives up while the
// origin is slow (curl -m 1) cancels its exchange: the tunnel request's
// context ends, so the server side stops the origin's work, instead of the
// exchange running on until the response head comes.
func TestCallerHangupCancelsTunnelRequest(t *testing.T) {
	for _, tc := range []struct{ name, raw string }{
		{"keep-alive", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"connection close", "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
		{"http/1.0", "GET /slow HTTP/1.0\r\nHost: x\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
			addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
				started <- struct{}{}
				<-r.Context().Done()
				cancelled <- struct{}{}
				return nil, r.Context().Err()
			}))
			c, _ := dialRaw(t, addr, tc.raw)
			waitFor(t, "tunnel request", started)
			c.Close()
			waitFor(t, "cancellation of the tunnel request after the caller hung up", cancelled)
		})
	}
}

// earlyTunnel answers 413 at once without reading the request body, as an
// origin that refuses an upload does.
func earlyTunnel() Tunnel {
	return tunnelFunc(func(r *http.Request) (*http.Response, error) {
		return textResponse(413, "too big"), nil
	})
}

// TestEarlyResponseAnnouncesClose: an answer that comes before the whole
// request body either keeps the connection (the rest is small and is read
// and discarded) or says Connection: close in its head, so a client that
// reuses the connection at once is not surprised by a close.
func TestEarlyResponseAnnouncesClose(t *testing.T) {
	t.Run("large rest", func(t *testing.T) {
		addr := startClient(t, earlyTunnel())
		// 1 MiB promised, 1 KiB sent: the rest is beyond what is drained.
		_, br := dialRaw(t, addr, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"+strings.Repeat("x", 1024))
		resp := readResp(t, br, "POST")
		if resp.StatusCode != 413 || !resp.Close {
			t.Fatalf("got %d close=%v, want 413 with Connection: close", resp.StatusCode, resp.Close)
		}
		expectClosed(t, br)
	})
	t.Run("waiting for 100-continue", func(t *testing.T) {
		addr := startClient(t, earlyTunnel())
		_, br := dialRaw(t, addr, "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
		resp := readResp(t, br, "PUT")
		if resp.StatusCode != 413 || !resp.Close {
			t.Fatalf("got %d close=%v, want 413 with Connection: close (the body may never come)", resp.StatusCode, resp.Close)
		}
		expectClosed(t, br)
	})
	t.Run("small rest kept", func(t *testing.T) {
		var n int
		addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
			n++
			if n == 1 {
				return textResponse(413, "too big"), nil
			}
			return textResponse(200, "ok"), nil
		}))
		// The whole (small) body is sent: it is read and discarded after
		// the answer, and the connection serves the next request.
		c, br := dialRaw(t, addr, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n"+strings.Repeat("x", 4096))
		resp := readResp(t, br, "POST")
		if resp.StatusCode != 413 || resp.Close {
			t.Fatalf("got %d close=%v, want 413 keeping the connection", resp.StatusCode, resp.Close)
		}
		io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp := readResp(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("next request on the kept connection: %d", resp.StatusCode)
		}
	})
}

// readResp reads one response and its whole body.
func readResp(t *testing.T, br *bufio.Reader, method string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("body: %v", err)
	}
	resp.Body.Close()
	return resp
}

// expectClosed asserts the proxy closes the connection after the response,
// cleanly: the caller reads the end of the stream (FIN), not a reset that
// could have destroyed the response before it was read.
func expectClosed(t *testing.T, br *bufio.Reader) {
	t.Helper()
	if b, err := br.ReadByte(); err == nil {
		t.Fatalf("byte %q after a response that announced close", b)
	} else if err != io.EOF {
		t.Fatalf("connection not closed cleanly after a response that announced close: %v", err)
	}
}

// TestHTTP10WithoutHost: RFC 9112 3.2 requires Host only from HTTP/1.1
// clients; an HTTP/1.0 request without one (HAProxy's httpchk, uptime
// probes) is forwarded with default_host, or the address the caller
// connected to, as its authority. HTTP/1.1 without Host stays a 400.
func TestHTTP10WithoutHost(t *testing.T) {
	seen := make(chan string, 1)
	tun := tunnelFunc(func(r *http.Request) (*http.Response, error) {
		seen <- r.Host
		return textResponse(200, "ok"), nil
	})
	addr := startClient(t, tun)
	_, br := dialRaw(t, addr, "GET /health HTTP/1.0\r\n\r\n")
	if resp := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.0 without Host: %d", resp.StatusCode)
	}
	if host := <-seen; host != addr {
		t.Errorf("authority %q, want the listener's address %q", host, addr)
	}

	addr = startClientWith(t, &ClientOptions{Tunnel: tun, Now: fixedNow, DefaultHost: "api.internal"})
	_, br = dialRaw(t, addr, "GET /health HTTP/1.0\r\n\r\n")
	if resp := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.0 without Host: %d", resp.StatusCode)
	}
	if host := <-seen; host != "api.internal" {
		t.Errorf("authority %q, want default_host", host)
	}

	_, br = dialRaw(t, addr, "GET /health HTTP/1.1\r\n\r\n")
	if resp := readResp(t, br, "GET"); resp.StatusCode != 400 {
		t.Fatalf("HTTP/1.1 without Host: %d, want 400", resp.StatusCode)
	}
}

// TestFullDuplexKeepsConnection: a response that starts before the request
// body ended but is not a refusal (an echo, a streaming transform) does not
// cost the caller its connection: the body keeps flowing, and the
// connection serves the next request.
func TestFullDuplexKeepsConnection(t *testing.T) {
	addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body == nil {
			return textResponse(200, "next"), nil
		}
		// The head goes back before the body is read; the response body
		// is the request body, read as the caller sends it.
		return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1, Body: r.Body}, nil
	}))
	c, br := dialRaw(t, addr, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "POST"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Close {
		t.Fatal("a full-duplex response announced Connection: close")
	}
	io.WriteString(c, "6\r\n world\r\n0\r\n\r\n")
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "hello world" {
		t.Fatalf("echo %q, %v", body, err)
	}
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp := readResp(t, br, "GET"); resp.StatusCode != 200 {
		t.Fatalf("next request on the kept connection: %d", resp.StatusCode)
	}
}

// TestEarlyRefusalReadableWhileUploading: a caller that goes on uploading
// after an early 413 reads the whole answer, announced as closing, and then
// a clean end of stream. (lingerClose exists so that no reset overtakes a
// response still in flight; on Linux loopback the small answer here is
// delivered before a reset either way, so this test does not pin it.)
func TestEarlyRefusalReadableWhileUploading(t *testing.T) {
	addr := startClient(t, earlyTunnel())
	// The caller keeps sending (up to 1 GiB, until the proxy closes), so
	// there is always unread input when the proxy closes.
	c, br := dialRaw(t, addr, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
	sent := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for range (1 << 30) / len(buf) {
			if _, err := c.Write(buf); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	resp := readResp(t, br, "POST")
	if resp.StatusCode != 413 || !resp.Close {
		t.Fatalf("got %d close=%v, want 413 with Connection: close", resp.StatusCode, resp.Close)
	}
	expectClosed(t, br)
	c.Close()
	<-sent // ends with an error once the proxy closed; only its end matters
}

// TestMalformedBodyIs400: a chunked body that turns out malformed is
// refused like a bad head (400, Connection: close), and the tunnel stream
// is cancelled, so the far side never takes an incomplete request for a
// complete one.
func TestMalformedBodyIs400(t *testing.T) {
	cancelled := make(chan string, 1)
	addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
		_, err := io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
			cancelled <- fmt.Sprint("body error: ", err)
		case <-time.After(10 * time.Second):
			cancelled <- "not cancelled"
		}
		return nil, errors.New("cancelled")
	}))
	_, br := dialRaw(t, addr, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
	resp := readResp(t, br, "POST")
	if resp.StatusCode != 400 || !resp.Close {
		t.Fatalf("got %d close=%v, want 400 and close", resp.StatusCode, resp.Close)
	}
	if got := waitFor(t, "the tunnel stream's end", cancelled); got == "not cancelled" || strings.Contains(got, "<nil>") {
		t.Fatalf("tunnel stream: %s", got)
	}
	expectClosed(t, br)
}

// TestCallerGoneMidBodyCancels: a caller that goes away in the middle of
// its request body cancels the exchange.
func TestCallerGoneMidBodyCancels(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	addr := startClient(t, tunnelFunc(func(r *http.Request) (*http.Response, error) {
		io.ReadAll(r.Body)
		<-r.Context().Done()
		cancelled <- struct{}{}
		return nil, r.Context().Err()
	}))
	c, _ := dialRaw(t, addr, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
	time.Sleep(10 * time.Millisecond) // let the body start flowing (not required)
	c.Close()
	waitFor(t, "cancellation of the tunnel stream", cancelled)
}

// TestContinueEndToEnd: Expect: 100-continue travels to the origin, whose
// 100 (Continue) comes back over HTTP/3 to the caller, which only then
// sends its body.
func TestContinueEndToEnd(t *testing.T) {
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		req, err := o.readHead(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		body, _ := io.ReadAll(req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	})
	addr := startClient(t, &h3Link{h: newE2EHandler(t, o.ln.Addr().String())})
	c, br := dialRaw(t, addr, "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nExpect: 100-continue\r\n\r\n")
	if line, err := br.ReadString('\n'); err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim response %q, %v", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("interim head goes on: %q", l)
	}
	io.WriteString(c, "upload")
	resp := readResp(t, br, "PUT")
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("got %d close=%v", resp.StatusCode, resp.Close)
	}
}

// TestDrainingAndHeaderTimeout: once Draining ends, an idle keep-alive
// connection closes, and one with an exchange in flight closes after its
// response; a connection that sends no head within HeaderReadTimeout
// closes.
func TestDrainingAndHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	draining, drain := context.WithCancel(context.Background())
	defer drain()
	addr := startClientWith(t, &ClientOptions{Now: fixedNow, Draining: draining,
		Tunnel: tunnelFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path == "/slow" {
				<-release
			}
			return textResponse(200, "ok"), nil
		})})
	_, idleBr := dialRaw(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp := readResp(t, idleBr, "GET"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("got %d close=%v", resp.StatusCode, resp.Close)
	}
	_, busyBr := dialRaw(t, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(20 * time.Millisecond) // the slow exchange is in flight (not required)
	drain()
	expectClosed(t, idleBr)
	close(release)
	if resp := readResp(t, busyBr, "GET"); resp.StatusCode != 200 {
		t.Fatalf("in-flight exchange: %d", resp.StatusCode)
	}
	expectClosed(t, busyBr)

	addr = startClientWith(t, &ClientOptions{Now: fixedNow, HeaderReadTimeout: 100 * time.Millisecond, Tunnel: earlyTunnel()})
	_, br := dialRaw(t, addr, "GET / HTTP/1.1\r\n") // never completed
	start := time.Now()
	expectClosed(t, br)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// plainConn hides everything but net.Conn (no syscall.Conn): the hang-up
// watch cannot peek and reads a byte ahead instead (pushbackConn).
type plainConn struct{ net.Conn }

// startClientPlain is startClient on connections without a socket to peek
// at.
func startClientPlain(t *testing.T, tun Tunnel) string {
	t.Helper()
	return serveClient(t, &ClientOptions{Tunnel: tun, Now: fixedNow}, func(c net.Conn) net.Conn { return plainConn{c} })
}

// TestHangupWatchWithoutPeek: where the watch reads a byte ahead instead
// of peeking, a request pipelined while an exchange is watched still
// arrives whole, and a hang-up still cancels the exchange.
func TestHangupWatchWithoutPeek(t *testing.T) {
	release := make(chan struct{})
	cancelled := make(chan struct{}, 1)
	tun := tunnelFunc(func(r *http.Request) (*http.Response, error) {
		switch r.URL.Path {
		case "/slow":
			<-release
		case "/hang":
			<-r.Context().Done()
			cancelled <- struct{}{}
			return nil, r.Context().Err()
		}
		return textResponse(200, r.URL.Path), nil
	})
	addr := startClientPlain(t, tun)
	c, br := dialRaw(t, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(3 * hangupDelay) // the watch is reading (not required for the outcome)
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	close(release)
	for _, want := range []string{"/slow", "/next"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if string(body) != want {
			t.Fatalf("got %q, want %q", body, want)
		}
	}

	c, _ = dialRaw(t, addr, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(3 * hangupDelay)
	c.Close()
	waitFor(t, "cancellation after the hang-up", cancelled)
}
