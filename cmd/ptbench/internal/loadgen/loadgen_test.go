package loadgen

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/origin"
)

func TestRunAgainstOrigin(t *testing.T) {
	srv := httptest.NewServer(origin.Handler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	cases := []struct {
		req  Request
		want int64
	}{
		{Request{Method: "GET", Path: "/small"}, origin.SmallSize},
		{Request{Method: "GET", Path: "/1m"}, origin.LargeSize},
		{Request{Method: "GET", Path: "/chunked"}, origin.ChunkedSize},
		{Request{Method: "POST", Path: "/echo", Body: make([]byte, 1000)}, 1000},
		{Request{Method: "POST", Path: "/echo?discard", Body: make([]byte, 100000)}, 7},
	}
	for _, c := range cases {
		began, ended := false, false
		res, err := Run(context.Background(), Spec{
			Dial: TCPDialer(addr), Request: c.req, Concurrency: 4,
			MaxRequests: 40, Duration: 5 * time.Second, Warmup: 10 * time.Millisecond,
			ExpectBytes: c.want,
			Begin:       func() { began = true }, End: func() { ended = true },
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 40 || res.Errors != 0 || res.Latency.Count() != 40 || !began || !ended {
			t.Errorf("%s %s: %d ok, %d errors (%s), %d samples", c.req.Method, c.req.Path, res.Requests, res.Errors, res.FirstErr, res.Latency.Count())
		}
		if res.Bytes != 40*c.want {
			t.Errorf("%s: %d bytes", c.req.Path, res.Bytes)
		}
	}
}

func TestRunBoundedByTime(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		time.Sleep(20 * time.Millisecond)
	}))
	defer srv.Close()
	// MaxRequests is out of reach: only Duration can end the run. The
	// assertion is that it ends and reports what it did, not how fast.
	// (With 200 ms, a loaded CI machine once started no request in time:
	// the recorders were then allocated inside the measured phase.)
	type result struct {
		res *Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := Run(context.Background(), Spec{
			Dial: TCPDialer(strings.TrimPrefix(srv.URL, "http://")), Request: Request{Method: "GET", Path: "/"},
			Concurrency: 2, MaxRequests: 1 << 30, Duration: time.Second, ExpectBytes: 0,
		})
		done <- result{res, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second): // safety net for a hang only
		t.Fatal("Run did not stop at its Duration")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.res.Requests < 1 || int64(r.res.Requests) > served.Load() {
		t.Fatalf("Run reports %d requests, the server saw %d", r.res.Requests, served.Load())
	}
}

// A scripted server exercising chunk extensions, trailers, interim
// responses and Connection: close.
func TestParsing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		readReq := func() {
			for {
				l, err := br.ReadString('\n')
				if err != nil || l == "\r\n" {
					return
				}
			}
		}
		readReq()
		c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"))
		readReq()
		c.Write([]byte("HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\nConnection: close\r\n\r\nnope"))
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(nc)
	defer c.Close()
	req := &Request{Method: "GET", Path: "/"}
	st, n, err := c.Do(req)
	if err != nil || st != 200 || n != 5 || !c.Reusable() {
		t.Fatalf("chunked: %d %d %v", st, n, err)
	}
	st, n, err = c.Do(req)
	if err != nil || st != 404 || n != 4 || c.Reusable() {
		t.Fatalf("close: %d %d %v reusable=%v", st, n, err, c.Reusable())
	}
}

func TestPoll(t *testing.T) {
	// Nothing listens at first; the listener appears after 100 ms.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	go func() {
		time.Sleep(100 * time.Millisecond)
		ln2, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		srv := &http.Server{Handler: origin.Handler()}
		go srv.Serve(ln2)
		time.Sleep(3 * time.Second)
		srv.Close()
	}()
	t0 := time.Now()
	at, attempts, err := Poll(context.Background(), TCPDialer(addr), Request{Method: "GET", Path: "/small"}, 5*time.Millisecond, time.Second, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if at.Sub(t0) < 90*time.Millisecond || attempts < 2 {
		t.Fatalf("200 after %v in %d attempts", at.Sub(t0), attempts)
	}
	if _, _, err := Poll(context.Background(), TCPDialer("127.0.0.1:1"), Request{Method: "GET", Path: "/"}, 5*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond); err == nil {
		t.Fatal("poll of a closed port must fail")
	}
}
