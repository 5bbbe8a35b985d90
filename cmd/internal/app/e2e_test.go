package app

import (
	"bufio"
	"bytes"
	"crypto/rand"
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
	"github.com/ptproxy/ptproxy/session/nettest"
)

// echoOrigin answers /echo with the request body, /bytes?n= with n bytes,
// and everything else with a description of the request.
func echoOrigin(conns *atomic.Int32) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		// Without full duplex net/http discards a request body that is still
		// unread once the response starts, and truncates the echo.
		http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("X-Request-Length", fmt.Sprint(r.ContentLength))
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		var n int
		fmt.Sscan(r.URL.Query().Get("n"), &n)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		w.Write(bytes.Repeat([]byte("x"), n))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Uri", r.RequestURI)
		w.Header().Set("X-Forwarded-Seen", strings.Join(r.Header.Values("Forwarded"), " | "))
		w.Header().Set("X-Accept-Encoding", r.Header.Get("Accept-Encoding"))
		w.Header().Set("X-User-Agent", r.Header.Get("User-Agent"))
		fmt.Fprint(w, "hello")
	})
	if conns == nil {
		return mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { mux.ServeHTTP(w, r) })
}

func TestEndToEndMethods(t *testing.T) {
	p := startPair(t, echoOrigin(nil))
	c := callerClient()

	resp, err := c.Get(p.url + "/path?q=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello" {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Uri"); got != "/path?q=1" {
		t.Errorf("origin saw target %q", got)
	}
	if got := resp.Header.Get("X-Host"); got != p.client.HTTPAddr().String() {
		t.Errorf("origin saw Host %q, want the caller's %q", got, p.client.HTTPAddr())
	}
	// Go's client sends Accept-Encoding: gzip itself, so clear it to check
	// that ptproxy adds nothing.
	req, _ := http.NewRequest("GET", p.url+"/", nil)
	req.Header.Set("User-Agent", "")
	raw := rawRoundTrip(t, p.client.HTTPAddr().String(), "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
	if !strings.Contains(raw, "X-Accept-Encoding: \r\n") && strings.Contains(raw, "X-Accept-Encoding: gzip") {
		t.Errorf("Accept-Encoding added: %q", raw)
	}
	if strings.Contains(raw, "X-User-Agent: Go") {
		t.Errorf("User-Agent added: %q", raw)
	}

	resp, err = c.Head(p.url + "/bytes?n=1234")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 1234 {
		t.Fatalf("HEAD: %d cl=%d", resp.StatusCode, resp.ContentLength)
	}

	resp, err = c.Post(p.url+"/echo", "text/plain", strings.NewReader("posted body"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "posted body" || resp.Header.Get("X-Request-Length") != "11" {
		t.Fatalf("POST: %q len=%s", body, resp.Header.Get("X-Request-Length"))
	}
}

func TestEndToEndLargeBodiesBothWays(t *testing.T) {
	p := startPair(t, echoOrigin(nil))
	c := callerClient()
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	for _, chunked := range []bool{false, true} {
		var r io.Reader = bytes.NewReader(payload)
		if chunked {
			r = io.MultiReader(r) // hides the length: Go sends it chunked
		}
		req, _ := http.NewRequest("POST", p.url+"/echo", r)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("chunked=%v: 1 MiB echo: err=%v len=%d equal=%v", chunked, err, len(got), bytes.Equal(got, payload))
		}
	}
	resp, err := c.Get(p.url + "/bytes?n=1048576")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(got) != 1<<20 || resp.ContentLength != 1<<20 {
		t.Fatalf("1 MiB download: %d bytes, cl=%d", len(got), resp.ContentLength)
	}
}

func TestEndToEndConcurrent(t *testing.T) {
	p := startPair(t, echoOrigin(nil))
	c := callerClient()
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			body := fmt.Sprintf("request %d", i)
			resp, err := c.Post(p.url+"/echo", "text/plain", strings.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != body {
				errs <- fmt.Errorf("request %d: got %q", i, got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestEndToEndKeepAlive checks reuse on both sides: several requests on one
// caller connection, served over a single origin connection.
func TestEndToEndKeepAlive(t *testing.T) {
	var originConns atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: echoOrigin(nil), ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			originConns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	pk := newTestPKI(t)
	slog, _ := newTestLogger(t)
	server := startInstance(t, pk.serverConfig(ln.Addr().String()), slog)
	clog, _ := newTestLogger(t)
	client := startInstance(t, pk.clientConfig(server.QUICAddr().(*net.UDPAddr).Port), clog)
	waitReady(t, client)

	conn, err := net.Dial("tcp", client.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for i := range 5 {
		fmt.Fprintf(conn, "GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", 10+i)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on the same connection: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if len(b) != 10+i {
			t.Fatalf("request %d: %d bytes", i, len(b))
		}
	}
	if got := originConns.Load(); got != 1 {
		t.Errorf("origin saw %d connections for 5 sequential requests, want 1 (keep-alive)", got)
	}
}

// rawRoundTrip sends raw bytes and returns everything until the proxy
// closes or one response is complete (Connection: close is added).
func rawRoundTrip(t *testing.T, addr, raw string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if !strings.Contains(raw, "Connection: close") {
		raw = strings.Replace(raw, "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
	}
	io.WriteString(conn, raw)
	b, _ := io.ReadAll(conn)
	return string(b)
}

func TestEndToEndPeerNotRunningIs503(t *testing.T) {
	pk := newTestPKI(t)
	// A UDP port nobody listens on.
	port := nettest.FreePort(t, "udp")
	cfg := pk.clientConfig(port)
	cfg.Transport.MaxIdleTimeout = 300 // attempts fail quickly
	clog, _ := newTestLogger(t)
	client := startInstance(t, cfg, clog)
	<-client.Ready() // the first attempt ended (failed)
	resp, err := callerClient().Get("http://" + client.HTTPAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Server") != "ptproxy client" {
		t.Fatalf("got %d server=%q", resp.StatusCode, resp.Header.Get("Server"))
	}
	// The class of the failure, not the address dialled (that is logged).
	if string(body) != "tunnel not established: peer did not answer\n" && string(body) != "tunnel not established: peer unreachable\n" {
		t.Fatalf("503 body should carry the class of the failure: %q", body)
	}
}

func TestEndToEndOriginDownIs502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	pk := newTestPKI(t)
	slog, _ := newTestLogger(t)
	server := startInstance(t, pk.serverConfig(dead), slog)
	clog, _ := newTestLogger(t)
	client := startInstance(t, pk.clientConfig(server.QUICAddr().(*net.UDPAddr).Port), clog)
	waitReady(t, client)
	resp, err := callerClient().Get("http://" + client.HTTPAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 502 || resp.Header.Get("Server") != "ptproxy server" || !strings.Contains(string(body), "could not proxy request") {
		t.Fatalf("got %d server=%q body=%q", resp.StatusCode, resp.Header.Get("Server"), body)
	}
}

func TestEndToEndServerRestartReconnects(t *testing.T) {
	origin := startOrigin(t, echoOrigin(nil))
	pk := newTestPKI(t)
	slog, _ := newTestLogger(t)
	server := startInstance(t, pk.serverConfig(origin), slog)
	port := server.QUICAddr().(*net.UDPAddr).Port
	clog, clb := newTestLogger(t)
	client := startInstance(t, pk.clientConfig(port), clog)
	waitReady(t, client)
	get := func() int {
		resp, err := callerClient().Get("http://" + client.HTTPAddr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(); s != 200 {
		t.Fatalf("before restart: %d", s)
	}
	server.Close()
	eventually(t, "client notices the server is gone", func() bool { return client.Client().State().String() != "ready" })

	cfg := pk.serverConfig(origin)
	cfg.General.QUICPort = port
	startInstance(t, cfg, slog)
	waitReady(t, client)
	if s := get(); s != 200 {
		t.Fatalf("after restart: %d", s)
	}
	if !clb.contains("ready", "idle") {
		t.Error("no transition logged for the lost session")
	}
}

// TestEndToEndRequestWaitsForSession: with session_wait_timeout set, a
// request that arrives while the server is down waits for the session
// instead of getting 503, and is answered once the server is back.
func TestEndToEndRequestWaitsForSession(t *testing.T) {
	origin := startOrigin(t, echoOrigin(nil))
	pk := newTestPKI(t)
	port := nettest.FreePort(t, "udp") // nobody listens yet
	ccfg := pk.clientConfig(port)
	ccfg.System.SessionWaitTimeout = 60000 // a safety net, not a timing
	clog, _ := newTestLogger(t)
	client := startInstance(t, ccfg, clog)
	<-client.Ready() // the first attempt ended (failed)

	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := callerClient().Get("http://" + client.HTTPAddr().String() + "/waited")
		if err != nil {
			done <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	eventually(t, "the request waiting at the client", func() bool {
		select {
		case r := <-done:
			t.Fatalf("answered without a server: %+v", r)
		default:
		}
		return client.Client().Waiting() == 1
	})
	scfg := pk.serverConfig(origin)
	scfg.General.QUICPort = port
	slog, _ := newTestLogger(t)
	startInstance(t, scfg, slog)
	r := <-done
	if r.err != nil || r.status != 200 {
		t.Fatalf("request that waited for the session: %+v, want 200", r)
	}
}

// rawOrigin is an origin that reads with httpio, so tests can see chunk
// units exactly as they arrived, and answers through a callback.
type rawOrigin struct {
	ln      net.Listener
	handler func(req *httpio.Request, r *httpio.Reader, conn net.Conn)
	wg      sync.WaitGroup
}

func startRawOrigin(t *testing.T, h func(req *httpio.Request, r *httpio.Reader, conn net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{ln: ln, handler: h}
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.wg.Go(func() {
				defer c.Close()
				r := httpio.NewReader(c, httpio.Limits{})
				defer r.Release()
				var req httpio.Request
				for r.ReadRequest(&req) == nil {
					o.handler(&req, r, c)
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); o.wg.Wait() })
	return ln.Addr().String()
}

// TestEndToEndChunkBoundaries sends chunks one at a time, waiting until each
// has arrived before sending the next, and checks that every chunk arrives
// as one chunk on the far side: upload at the origin, download at the caller.
func TestEndToEndChunkBoundaries(t *testing.T) {
	sizes := []int{1, 10, 100, 1000}
	gotUp := make(chan string, len(sizes)+1)
	nextDown := make(chan struct{})
	origin := startRawOrigin(t, func(req *httpio.Request, r *httpio.Reader, conn net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			n, end, err := r.ReadBody(buf)
			if n > 0 {
				gotUp <- fmt.Sprintf("%d:%v", n, end)
			}
			if err != nil {
				break
			}
		}
		gotUp <- "trailer=" + r.Trailers().Get("X-Up")
		w := httpio.NewWriter(conn, httpio.TitleCase)
		defer w.Release()
		w.WriteResponseHead(200, "OK", httpio.Header{{Name: "Transfer-Encoding", Value: "chunked"}, {Name: "Trailer", Value: "X-Down"}})
		w.Flush()
		for _, s := range sizes {
			w.WriteChunk(bytes.Repeat([]byte("d"), s))
			w.Flush()
			<-nextDown
		}
		w.WriteLastChunk(httpio.Header{{Name: "X-Down", Value: "done"}})
		w.Flush()
	})
	pk := newTestPKI(t)
	slog, _ := newTestLogger(t)
	server := startInstance(t, pk.serverConfig(origin), slog)
	clog, _ := newTestLogger(t)
	client := startInstance(t, pk.clientConfig(server.QUICAddr().(*net.UDPAddr).Port), clog)
	waitReady(t, client)

	conn, err := net.Dial("tcp", client.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Up\r\n\r\n")
	for _, s := range sizes {
		fmt.Fprintf(conn, "%x\r\n%s\r\n", s, strings.Repeat("u", s))
		if got, want := <-gotUp, fmt.Sprintf("%d:true", s); got != want {
			t.Fatalf("upload chunk: origin saw %s, want %s", got, want)
		}
	}
	io.WriteString(conn, "0\r\nX-Up: yes\r\n\r\n")
	if got := <-gotUp; got != "trailer=yes" {
		t.Errorf("upload trailer: %s", got)
	}

	r := httpio.NewReader(conn, httpio.Limits{})
	defer r.Release()
	var resp httpio.Response
	if err := r.ReadResponse(&resp, "POST"); err != nil {
		t.Fatal(err)
	}
	if resp.Body.Kind != httpio.ChunkedBody {
		t.Fatalf("download framing %v, want chunked", resp.Body.Kind)
	}
	buf := make([]byte, 64<<10)
	for _, s := range sizes {
		n, end, err := r.ReadBody(buf)
		if err != nil || n != s || !end {
			t.Fatalf("download chunk: n=%d end=%v err=%v, want one whole chunk of %d", n, end, err, s)
		}
		nextDown <- struct{}{}
	}
	if n, _, err := r.ReadBody(buf); err != io.EOF || n != 0 {
		t.Fatalf("after the chunks: n=%d err=%v", n, err)
	}
	if got := r.Trailers().Get("X-Down"); got != "done" {
		t.Errorf("download trailer %q", got)
	}
}

// TestEndToEndExpectContinue: the caller waits for 100 Continue before
// sending its body; the origin's interim response crosses the tunnel.
func TestEndToEndExpectContinue(t *testing.T) {
	p := startPair(t, echoOrigin(nil))
	conn, err := net.Dial("tcp", p.client.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q err=%v, want the interim 100", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("interim response not terminated: %q", blank)
	}
	io.WriteString(conn, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Fatalf("final: %d %q", resp.StatusCode, b)
	}
}

// TestEndToEndHeadOverServerLimit: a client configured to accept larger
// heads than its server (transport.max_header_bytes differs) refuses a
// request the server would reject, from the server's SETTINGS: 431 from
// "ptproxy client", the origin never sees it, and the caller's next request
// on a new connection goes through.
func TestEndToEndHeadOverServerLimit(t *testing.T) {
	var seen atomic.Int32
	p := &pair{pki: newTestPKI(t)}
	p.origin = startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		io.WriteString(w, "ok")
	}))
	slog, _ := newTestLogger(t)
	scfg := p.pki.serverConfig(p.origin)
	scfg.Transport.MaxHeaderBytes = 4096
	p.server = startInstance(t, scfg, slog)
	clog, _ := newTestLogger(t)
	p.client = startInstance(t, p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port), clog)
	waitReady(t, p.client)
	url := "http://" + p.client.HTTPAddr().String()
	c := callerClient()

	get := func(field string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url+"/x", nil)
		if field != "" {
			req.Header.Set("X-Big", field)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	// The first exchange brings the server's SETTINGS, if they had not
	// come yet.
	if resp, _ := get(""); resp.StatusCode != 200 {
		t.Fatalf("small request: %d", resp.StatusCode)
	}
	resp, body := get(strings.Repeat("v", 8000))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || resp.Header.Get("Server") != "ptproxy client" ||
		!strings.Contains(body, "larger than the server side accepts") {
		t.Fatalf("oversized head: %d %q %q; want 431 from ptproxy client saying why", resp.StatusCode, resp.Header.Get("Server"), body)
	}
	if resp, _ := get(""); resp.StatusCode != 200 {
		t.Fatalf("small request after the refusal: %d", resp.StatusCode)
	}
	if n := seen.Load(); n != 2 {
		t.Fatalf("origin saw %d requests, want 2", n)
	}
}
