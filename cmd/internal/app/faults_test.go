package app

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/httpio"
)

// In-process fault tests: the origin misbehaving, the caller going away,
// slow callers and too many callers. The process-level faults (SIGKILL,
// partitions) are in cmd/internal/proctest.

// safetyNet bounds every blocking step of a fault test so that a hang
// fails with a message instead of blocking the run; nothing asserts that
// anything is fast.
const safetyNet = 60 * time.Second

// tunnelPair is a running server and client over an origin, with configuration
// changes applied before start.
type tunnelPair struct {
	server, client       *Instance
	serverLog, clientLog *logBuffer
	addr                 string // the client's HTTP/1.1 address
}

func startTunnel(t *testing.T, origin string, server, client func(*config.Config)) *tunnelPair {
	t.Helper()
	return startTunnelLog(t, slog.LevelDebug, origin, server, client)
}

// startTunnelLog is startTunnel with the instances logging at level and
// above (the soak keeps per-request debug lines out of its heap).
func startTunnelLog(t testing.TB, level slog.Level, origin string, server, client func(*config.Config)) *tunnelPair {
	t.Helper()
	pk := newTestPKI(t)
	tp := &tunnelPair{}
	slg, slb := newLevelLogger(t, level)
	scfg := pk.serverConfig(origin)
	if server != nil {
		server(scfg)
	}
	tp.server, tp.serverLog = startInstance(t, scfg, slg), slb
	clog, clb := newLevelLogger(t, level)
	ccfg := pk.clientConfig(tp.server.QUICAddr().(*net.UDPAddr).Port)
	if client != nil {
		client(ccfg)
	}
	tp.client, tp.clientLog = startInstance(t, ccfg, clog), clb
	waitReady(t, tp.client)
	tp.addr = tp.client.HTTPAddr().String()
	return tp
}

// newLevelLogger is newTestLogger at another level.
func newLevelLogger(t testing.TB, level slog.Level) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", lb.buf.String())
		}
	})
	return slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: level})), lb
}

// scriptOrigin is a TCP origin whose every connection is handled by a
// script; it records how each connection ended.
type scriptOrigin struct {
	addr   string
	conns  atomic.Int32 // connections accepted
	closed atomic.Int32 // connections whose script saw them end (EOF, reset)
	wg     sync.WaitGroup
}

func startScriptOrigin(t *testing.T, script func(o *scriptOrigin, c net.Conn)) *scriptOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &scriptOrigin{addr: ln.Addr().String()}
	var mu sync.Mutex
	var open []net.Conn
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			c.SetDeadline(time.Now().Add(safetyNet))
			o.wg.Go(func() {
				defer c.Close()
				script(o, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		o.wg.Wait()
	})
	return o
}

// waitClosed reads c until the peer closes it and records that; a
// timeout (the safety net) is not a close.
func (o *scriptOrigin) waitClosed(c net.Conn) {
	_, err := io.Copy(io.Discard, c)
	if err == nil || !isTimeout(err) {
		o.closed.Add(1)
	}
}

// readHead reads one request head off c with a strict reader.
func readHead(c net.Conn) (*httpio.Reader, error) {
	r, _, err := readRequestHead(c)
	return r, err
}

func readRequestHead(c net.Conn) (*httpio.Reader, *httpio.Request, error) {
	r := httpio.NewReader(c, httpio.Limits{})
	req := new(httpio.Request)
	if err := r.ReadRequest(req); err != nil {
		r.Release()
		return nil, nil, err
	}
	return r, req, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// callerConn is a raw TCP connection of the application to the client.
func callerConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(safetyNet))
	t.Cleanup(func() { c.Close() })
	return c
}

// response is what a caller received: the status (0 if none), body bytes,
// and how reading ended.
type response struct {
	status int
	header http.Header
	body   string
	err    error // nil: complete response, then the connection closed
}

// send writes raw and reads one response and then up to the close.
func send(t *testing.T, addr, raw string) response {
	t.Helper()
	c := callerConn(t, addr)
	defer c.Close()
	io.WriteString(c, raw)
	return readResponse(c)
}

func readResponse(c net.Conn) response {
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return response{err: err}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return response{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

// TestOriginFaults: the origin refuses, resets or stalls. Every case ends
// with a synthetic answer from the server side (502, or 504 for the
// upstream_timeout), and the origin connection is closed.
func TestOriginFaults(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		tp := startTunnel(t, dead, nil, nil)
		r := send(t, tp.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if r.status != 502 || r.header.Get("Server") != "ptproxy server" || r.body != "could not proxy request: origin refused the connection\n" {
			t.Fatalf("got %d %q server=%q", r.status, r.body, r.header.Get("Server"))
		}
	})

	t.Run("reset before the response", func(t *testing.T) {
		o := startScriptOrigin(t, func(o *scriptOrigin, c net.Conn) {
			if r, err := readHead(c); err == nil {
				r.Release()
			}
			c.(*net.TCPConn).SetLinger(0) // close sends RST
		})
		tp := startTunnel(t, o.addr, nil, nil)
		for _, raw := range []string{
			"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		} {
			r := send(t, tp.addr, raw)
			if r.status != 502 || r.header.Get("Server") != "ptproxy server" || !strings.Contains(r.body, "could not proxy request") {
				t.Errorf("%.4s: got %d %q", raw, r.status, r.body)
			}
		}
	})

	t.Run("reset mid-body", func(t *testing.T) {
		o := startScriptOrigin(t, func(o *scriptOrigin, c net.Conn) {
			if r, err := readHead(c); err == nil {
				r.Release()
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
			time.Sleep(50 * time.Millisecond) // let the head travel first
			c.(*net.TCPConn).SetLinger(0)
		})
		tp := startTunnel(t, o.addr, nil, nil)
		r := send(t, tp.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		// The head was relayed: the only honest signal left is closing
		// before the announced length.
		if r.status != 200 || r.err == nil || isTimeout(r.err) || len(r.body) >= 100000 {
			t.Fatalf("got %d, %d bytes, err=%v; want the head then a cut body", r.status, len(r.body), r.err)
		}
	})

	t.Run("malformed response", func(t *testing.T) {
		o := startScriptOrigin(t, func(o *scriptOrigin, c net.Conn) {
			r, err := readHead(c)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
			o.waitClosed(c)
			r.Release()
		})
		tp := startTunnel(t, o.addr, nil, nil)
		r := send(t, tp.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if r.status != 502 || !strings.Contains(r.body, "could not proxy request") {
			t.Fatalf("got %d %q", r.status, r.body)
		}
		eventually(t, "origin connection closed", func() bool { return o.closed.Load() == 1 })
	})

	t.Run("stall bounded by upstream_timeout", func(t *testing.T) {
		o := startScriptOrigin(t, func(o *scriptOrigin, c net.Conn) {
			r, err := readHead(c)
			if err != nil {
				return
			}
			o.waitClosed(c) // never answers
			r.Release()
		})
		tp := startTunnel(t, o.addr, func(c *config.Config) { c.System.UpstreamTimeout = 300 }, nil)
		r := send(t, tp.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if r.status != 504 || r.header.Get("Server") != "ptproxy server" || !strings.Contains(r.body, "could not proxy request") {
			t.Fatalf("got %d %q", r.status, r.body)
		}
		eventually(t, "origin connection closed after the timeout", func() bool { return o.closed.Load() == 1 })
		// The next request gets a fresh connection and the same answer.
		if r := send(t, tp.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); r.status != 504 {
			t.Fatalf("second request: %d", r.status)
		}
		if o.conns.Load() != 2 {
			t.Errorf("origin saw %d connections, want 2 (a timed-out connection is never reused)", o.conns.Load())
		}
	})
}

// settled returns an option set that ignores every goroutine running now,
// after the pair is up and warm: what is left after a fault beyond these
// is a leak.
func settled() goleak.Option { return goleak.IgnoreCurrent() }

// settledTunnel is settled once both ends of tp run the goroutines a
// session keeps for its life: the client is ready only after the server's
// SETTINGS came, but the server may read the client's control stream (on a
// goroutine of its own) later than that.
func settledTunnel(t *testing.T, tp *tunnelPair) goleak.Option {
	t.Helper()
	eventually(t, "the server read the client's SETTINGS", func() bool {
		return tp.serverLog.contains("peer SETTINGS received")
	})
	return settled()
}

// noLeaks waits until no goroutine other than the ignored ones runs.
func noLeaks(t *testing.T, base goleak.Option) {
	t.Helper()
	var last error
	deadline := time.Now().Add(safetyNet)
	for {
		if last = goleak.Find(base); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left behind: %v", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCallerDisconnectMidUpload: the application closes its connection
// halfway through a request body. The HTTP/3 stream is cancelled, the
// server closes the origin connection (the origin never gets a complete
// request), and no goroutine is left behind.
func TestCallerDisconnectMidUpload(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var got atomic.Int64
			complete := atomic.Bool{}
			o := startScriptOrigin(t, func(o *scriptOrigin, c net.Conn) {
				r, req, err := readRequestHead(c)
				if err != nil {
					return
				}
				defer r.Release()
				up := req.Path == "/up"
				buf := make([]byte, 32<<10)
				for {
					n, _, err := r.ReadBody(buf)
					if !up {
						if err == io.EOF {
							io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
							return
						}
						if err != nil {
							return
						}
						continue
					}
					got.Add(int64(n))
					if err == io.EOF {
						complete.Store(true)
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
						return
					}
					if err != nil {
						if !isTimeout(err) {
							o.closed.Add(1)
						}
						return
					}
				}
			})
			tp := startTunnel(t, o.addr, nil, nil)
			warm(t, tp.addr)
			base := settledTunnel(t, tp)

			c := callerConn(t, tp.addr)
			head := "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
			if chunked {
				head = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
			}
			io.WriteString(c, head)
			part := strings.Repeat("u", 16<<10)
			for range 4 {
				if chunked {
					fmt.Fprintf(c, "%x\r\n%s\r\n", len(part), part)
				} else {
					io.WriteString(c, part)
				}
			}
			eventually(t, "part of the body at the origin", func() bool { return got.Load() > 0 })
			c.Close()

			eventually(t, "origin connection closed", func() bool { return o.closed.Load() == 1 })
			if complete.Load() {
				t.Fatal("the origin received a complete request from a caller that went away")
			}
			noLeaks(t, base)
		})
	}
}

// TestCallerDisconnectMidDownload: the application closes its connection
// while a response streams. The client cancels the HTTP/3 stream, the
// server stops and closes the origin connection, nothing is left behind.
func TestCallerDisconnectMidDownload(t *testing.T) {
	var writing atomic.Bool
	o := startScriptOrigin(t, func(o *scriptOrigin, c net.Conn) {
		r, err := readHead(c)
		if err != nil {
			return
		}
		defer r.Release()
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 4096, strings.Repeat("d", 4096))
		writing.Store(true)
		for {
			if _, err := io.WriteString(c, chunk); err != nil {
				if !isTimeout(err) {
					o.closed.Add(1)
				}
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	tp := startTunnel(t, o.addr, nil, nil)
	base := settledTunnel(t, tp)

	c := callerConn(t, tp.addr)
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	eventually(t, "the origin's writes fail: its connection was closed", func() bool { return o.closed.Load() == 1 })
	noLeaks(t, base)
	// A caller going away is no proxying failure: the server says the
	// stream ended, and warns of nothing.
	if !tp.serverLog.contains("response cut: the stream ended") {
		t.Error("the server did not log why the response was cut")
	}
	for _, r := range tp.serverLog.records() {
		if r["level"] == "WARN" || r["level"] == "ERROR" {
			t.Errorf("server logged %v: %v", r["level"], r)
		}
	}
}

// warm sends one request so that lazily started goroutines exist before a
// goroutine baseline is taken.
func warm(t *testing.T, addr string) {
	t.Helper()
	r := send(t, addr, "POST /warm HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
	if r.status != 200 {
		t.Fatalf("warm-up: %d %q %v", r.status, r.body, r.err)
	}
}

// TestSlowCallersBoundedByHeaderReadTimeout: a caller that trickles its
// head (slowloris), one that sends nothing, and an idle keep-alive
// connection are all closed once header_read_timeout passes; none of them
// reaches the origin or gets a response.
func TestSlowCallersBoundedByHeaderReadTimeout(t *testing.T) {
	var originReqs atomic.Int32
	tp := startTunnel(t, startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originReqs.Add(1)
		// No pooled origin connection (and its server goroutine) may
		// outlive an exchange and read as a leak.
		w.Header().Set("Connection", "close")
		io.WriteString(w, "ok")
	})), nil, func(c *config.Config) { c.System.HeaderReadTimeout = 300 })
	warm(t, tp.addr)
	base := settledTunnel(t, tp)

	// closedByProxy reads until the proxy closes c and returns what came.
	closedByProxy := func(what string, c net.Conn) string {
		t.Helper()
		b, err := io.ReadAll(c)
		if isTimeout(err) {
			t.Fatalf("%s: still open at the safety net", what)
		}
		return string(b)
	}

	t.Run("slowloris", func(t *testing.T) {
		c := callerConn(t, tp.addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		var sent atomic.Int32
		var wg sync.WaitGroup
		wg.Go(func() {
			// One header byte every 20 ms: each read makes progress, only
			// a bound on the whole head ends it. Bounded to 3000 bytes.
			for i := range 3000 {
				if _, err := fmt.Fprintf(c, "%c", 'a'+i%26); err != nil {
					return
				}
				sent.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		})
		if got := closedByProxy("slowloris", c); got != "" {
			t.Errorf("slowloris got a response: %q", got)
		}
		c.Close()
		wg.Wait()
		if sent.Load() >= 3000 {
			t.Error("the trickle was never cut")
		}
	})

	t.Run("silent", func(t *testing.T) {
		c := callerConn(t, tp.addr)
		if got := closedByProxy("silent connection", c); got != "" {
			t.Errorf("silent connection got %q", got)
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c := callerConn(t, tp.addr)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("first request: %d close=%v", resp.StatusCode, resp.Close)
		}
		if n, err := br.Read(make([]byte, 1)); n != 0 || isTimeout(err) {
			t.Fatalf("idle keep-alive connection: n=%d err=%v, want closed", n, err)
		}
	})

	if n := originReqs.Load(); n != 2 {
		t.Errorf("origin saw %d requests, want only the warm-up and the keep-alive one", n)
	}
	noLeaks(t, base)
}

// TestMaxConnections: with max_connections = 3, a fourth concurrent
// connection is closed at once without a response and logged at WARN; a
// slot freed by a closing connection is usable again.
func TestMaxConnections(t *testing.T) {
	tp := startTunnel(t, startOrigin(t, echoOrigin(nil)), nil, func(c *config.Config) {
		c.System.MaxConnections = 3
		c.System.HeaderReadTimeout = 0 // the held connections stay
	})
	held := make([]net.Conn, 3)
	for i := range held {
		held[i] = callerConn(t, tp.addr)
		// A full exchange proves the connection was accepted and holds a
		// slot (it stays open: keep-alive).
		io.WriteString(held[i], "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(held[i]), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
	}

	extra := callerConn(t, tp.addr)
	io.WriteString(extra, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b, err := io.ReadAll(extra)
	if isTimeout(err) || len(b) != 0 {
		t.Fatalf("connection over the limit: got %q err=%v, want closed at once", b, err)
	}
	eventually(t, "refusal logged", func() bool {
		for _, r := range tp.clientLog.records() {
			if r["msg"] == "connection refused: max_connections reached" && r["level"] == "WARN" && r["max_connections"] == float64(3) {
				return true
			}
		}
		return false
	})

	held[0].Close()
	eventually(t, "a freed slot is usable", func() bool {
		r := send(t, tp.addr, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		return r.status == 200
	})
}
