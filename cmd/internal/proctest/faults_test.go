package proctest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/nettest"
)

// faultOrigin is the origin behind the server process. It counts the
// handlers running per path, so a test can see the origin connections of
// cut exchanges being closed (a handler ends when its connection does).
type faultOrigin struct {
	addr string
	mu   sync.Mutex
	act  map[string]int
}

func newFaultOrigin(t *testing.T) *faultOrigin {
	o := &faultOrigin{act: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	// /stream sends 1 KiB chunks until the connection goes away.
	mux.HandleFunc("/stream", o.track(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		chunk := []byte(strings.Repeat("s", 1024))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}))
	// /upload reads the whole body before answering.
	mux.HandleFunc("/upload", o.track(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			return
		}
		fmt.Fprintf(w, "got %d", n)
	}))
	// /hang never answers.
	mux.HandleFunc("/hang", o.track(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	o.addr = startOrigin(t, mux)
	return o
}

func (o *faultOrigin) track(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.act[r.URL.Path]++
		o.mu.Unlock()
		defer func() {
			o.mu.Lock()
			o.act[r.URL.Path]--
			o.mu.Unlock()
		}()
		h(w, r)
	}
}

func (o *faultOrigin) active(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.act[path]
}

// inflight is one caller exchange on its own TCP connection to the client
// process, observed from the caller's side.
type inflight struct {
	done   chan struct{}
	status int   // response status, 0 when none arrived
	n      int64 // response body bytes received
	err    error // how reading ended (nil = a complete response)
}

// safetyNet bounds every caller read, so a hang fails as a timeout error
// instead of blocking the test forever; assertions reject timeouts.
const safetyNet = 60 * time.Second

func dialCaller(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(safetyNet))
	t.Cleanup(func() { c.Close() })
	return c
}

// startDownload starts GET /stream and returns once the response head and
// the first body bytes arrived; the rest is read in the background.
func startDownload(t *testing.T, addr string) *inflight {
	t.Helper()
	c := dialCaller(t, addr)
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: origin.test\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("download head: %v", err)
	}
	f := &inflight{done: make(chan struct{}), status: resp.StatusCode}
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatalf("download: first KiB: %v", err)
	}
	f.n = int64(len(buf))
	go func() {
		defer close(f.done)
		n, err := io.Copy(io.Discard, resp.Body)
		f.n += n
		f.err = err
	}()
	return f
}

// startUpload sends a chunked POST /upload head and one chunk, and keeps
// the body open; the response is awaited in the background.
func startUpload(t *testing.T, addr string) *inflight {
	t.Helper()
	c := dialCaller(t, addr)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: origin.test\r\nTransfer-Encoding: chunked\r\n\r\n")
	fmt.Fprintf(c, "%x\r\n%s\r\n", 4096, strings.Repeat("u", 4096))
	return awaitResponse(c)
}

// startRequest sends raw and awaits the response in the background.
func startRequest(t *testing.T, addr, raw string) *inflight {
	t.Helper()
	c := dialCaller(t, addr)
	io.WriteString(c, raw)
	return awaitResponse(c)
}

func awaitResponse(c net.Conn) *inflight {
	f := &inflight{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			f.err = err
			return
		}
		f.status = resp.StatusCode
		f.n, f.err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	return f
}

// isTimeout reports whether err is the safety-net deadline: a hang.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// checkCut asserts an in-flight exchange ended with a 502 or a closed
// connection, never by the safety net.
func checkCut(t *testing.T, what string, f *inflight) {
	t.Helper()
	within(t, what, f.done)
	switch {
	case isTimeout(f.err):
		t.Errorf("%s: hung until the safety net: %v", what, f.err)
	case f.status == 0:
		t.Logf("%s: connection closed without a response (%v)", what, f.err)
	case f.status == http.StatusBadGateway:
		t.Logf("%s: 502", what)
	default:
		t.Errorf("%s: status %d err=%v, want 502 or a closed connection", what, f.status, f.err)
	}
}

// checkCutBody asserts a response whose head was relayed was cut: the
// connection closed before the body was complete (never a clean end).
func checkCutBody(t *testing.T, what string, f *inflight) {
	t.Helper()
	within(t, what, f.done)
	if f.err == nil || isTimeout(f.err) {
		t.Errorf("%s: body ended with err=%v after %d bytes, want the connection closed mid-body", what, f.err, f.n)
	}
}

// rawGet sends one GET with Connection: close and returns status and body.
func rawGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := dialCaller(t, addr)
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// startPair runs a server process on a fixed port and a client process
// dialling dialPort (the server's port, or a relay's). clientSystem are
// extra "key = value" lines for the client's [system] section.
func startPair(t *testing.T, e *env, origin string, serverPort, dialPort int, clientSystem ...string) (server, client *proc, addr string) {
	t.Helper()
	server = startProc(t, "server", e.serverConfig("server.toml", serverPort, origin))
	server.waitLog("server listening", "accepting connections", 0, nil)
	client = startProc(t, "client", withSystem(t, e.clientConfig("client.toml", dialPort), clientSystem...))
	addr = client.httpAddr()
	client.waitLog("tunnel up", "session ready", 0, event("established"))
	if st, body := rawGet(t, addr, "/ok"); st != 200 || body != "ok" {
		t.Fatalf("through the tunnel: %d %q", st, body)
	}
	return server, client, addr
}

// withSystem appends lines to the [system] section of a config file
// written by env (its last section) and returns the path.
func withSystem(t *testing.T, path string, lines ...string) string {
	t.Helper()
	if len(lines) == 0 {
		return path
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, strings.Join(lines, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	return path
}

// outageWait is session_wait_timeout for the tests of requests answered
// while the server stays down: short, so each gets its 503 soon.
const outageWait = "session_wait_timeout = 200"

// TestServerKilledMidStream: SIGKILL of the server process while a
// download streams, an upload is half sent and a request waits for the
// origin. The in-flight exchanges end (502 or closed, never a hang), new
// requests get 503 once the client noticed, and after a restart on the same
// port the first connection attempt that starts once the server listens
// succeeds.
func TestServerKilledMidStream(t *testing.T) {
	o := newFaultOrigin(t)
	e := newEnv(t)
	port := nettest.FreePort(t, "udp")
	server, client, addr := startPair(t, e, o.addr, port, port, outageWait)

	down := startDownload(t, addr)
	up := startUpload(t, addr)
	hang := startRequest(t, addr, "GET /hang HTTP/1.1\r\nHost: origin.test\r\n\r\n")
	eventually(t, "the three exchanges at the origin", func() bool {
		return o.active("/stream") == 1 && o.active("/upload") == 1 && o.active("/hang") == 1
	})

	killedAt := time.Now()
	server.kill()
	// A request sent before the client can know: it rides the dead session.
	window := startRequest(t, addr, "GET /ok HTTP/1.1\r\nHost: origin.test\r\n\r\n")

	checkCutBody(t, "download (head already relayed)", down)
	checkCut(t, "upload waiting for its response", up)
	checkCut(t, "request waiting for the origin", hang)
	within(t, "request sent right after the kill", window.done)
	if window.status != http.StatusBadGateway && window.status != http.StatusServiceUnavailable && window.status != 0 || isTimeout(window.err) {
		t.Errorf("request after the kill: status %d err=%v, want 502, 503 or closed", window.status, window.err)
	}
	// The origin connections of the cut exchanges are gone with the process.
	eventually(t, "origin handlers ended", func() bool {
		return o.active("/stream")+o.active("/upload")+o.active("/hang") == 0
	})

	lost := client.waitLog("lost transition", "session idle", 0, event("lost"))
	if !strings.Contains(lost.str("reason"), "no recent network activity") {
		t.Errorf("lost reason %q, want the QUIC idle timeout", lost.str("reason"))
	}
	t.Logf("MEASURED server SIGKILL -> client lost: %d ms (max_idle_timeout %d ms)", ms(lost.time().Sub(killedAt)), maxIdleTimeoutMs)

	// While the server is down every request is answered, after waiting
	// session_wait_timeout for a session (the 503 rule itself is
	// TestOutageAnswers503).
	for range 3 {
		f := startRequest(t, addr, "GET /ok HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n")
		within(t, "request while the server is down", f.done)
		if f.status != http.StatusServiceUnavailable && f.status != http.StatusBadGateway || isTimeout(f.err) {
			t.Errorf("while the server is down: status %d err=%v", f.status, f.err)
		}
	}

	server2 := startProc(t, "server-restarted", e.serverConfig("server.toml", port, o.addr))
	listening := server2.waitLog("restarted server listening", "accepting connections", 0, nil)
	ready := client.waitLog("tunnel back", "session ready", 1, event("established"))
	checkRecovery(t, client, listening.time())
	t.Logf("MEASURED restarted server listening -> client ready: %d ms (connect_interval %d ms)", ms(ready.time().Sub(listening.time())), connectIntervalMs)

	if st, body := rawGet(t, addr, "/ok"); st != 200 || body != "ok" {
		t.Fatalf("after the restart: %d %q", st, body)
	}
}

// checkRecovery asserts from the client's transition log that no
// connection attempt that began after since failed: the client needs at
// most the attempt in flight at that moment (which may fail) plus one more,
// started after a backoff capped by connect_interval (the backoff itself
// is unit-tested in session). Counting events instead of timing them keeps
// the test honest on a loaded machine.
func checkRecovery(t *testing.T, client *proc, since time.Time) {
	t.Helper()
	var lastDial time.Time
	fails, dialsAfter := 0, 0
	for _, r := range client.logs() {
		switch r.str("event") {
		case "dial":
			lastDial = r.time()
			if lastDial.After(since) {
				dialsAfter++
			}
		case "fail":
			fails++
			if lastDial.After(since) {
				t.Errorf("an attempt that began after the server was listening failed: %v", r)
			}
		}
	}
	if dialsAfter > 1 {
		t.Errorf("%d attempts began after the server was listening, want at most 1", dialsAfter)
	}
	t.Logf("failed attempts during the outage: %d", fails)
}

// TestPartitionDetectedWithinIdleTimeout drops every packet between client
// and server (a UDP relay turned into a black hole). The client declares
// the session lost by the QUIC idle timeout, i.e. after max_idle_timeout of
// silence; the server does the same and closes the origin connection of
// the cut exchange; new requests get 503; once the partition heals the
// session comes back by itself.
func TestPartitionDetectedWithinIdleTimeout(t *testing.T) {
	o := newFaultOrigin(t)
	e := newEnv(t)
	port := nettest.FreePort(t, "udp")
	relay, err := NewRelay(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	server, client, addr := startPair(t, e, o.addr, port, relay.Addr().Port)

	down := startDownload(t, addr)
	eventually(t, "download at the origin", func() bool { return o.active("/stream") == 1 })

	cutAt := time.Now()
	relay.SetBlackhole(true)

	lost := client.waitLog("lost transition", "session idle", 0, event("lost"))
	if !strings.Contains(lost.str("reason"), "no recent network activity") {
		t.Errorf("client lost reason %q, want the QUIC idle timeout", lost.str("reason"))
	}
	checkCutBody(t, "download during the partition", down)
	closed := server.waitLog("server notices", "connection closed", 0, nil)
	if !strings.Contains(closed.str("reason"), "no recent network activity") {
		t.Errorf("server close reason %q, want the QUIC idle timeout", closed.str("reason"))
	}
	eventually(t, "origin connection of the cut download closed", func() bool { return o.active("/stream") == 0 })
	t.Logf("MEASURED partition -> client lost: %d ms, server closed: %d ms (max_idle_timeout %d ms)",
		ms(lost.time().Sub(cutAt)), ms(closed.time().Sub(cutAt)), maxIdleTimeoutMs)

	failed := client.waitLog("an attempt failing in the partition", "session idle", 0, event("fail"))
	t.Logf("attempt during the partition failed: %s", failed.str("reason"))

	healedAt := time.Now()
	relay.SetBlackhole(false)
	ready := client.waitLog("tunnel back", "session ready", 1, event("established"))
	checkRecovery(t, client, healedAt)
	t.Logf("MEASURED partition healed -> client ready: %d ms (connect_interval %d ms)", ms(ready.time().Sub(healedAt)), connectIntervalMs)
	if st, body := rawGet(t, addr, "/ok"); st != 200 || body != "ok" {
		t.Fatalf("after the partition: %d %q", st, body)
	}
	fw, dr := relay.Counts()
	t.Logf("relay: %d datagrams forwarded, %d dropped", fw, dr)
}

// TestClientKilledMidStream: SIGKILL of the client process during a
// download and an upload. The server notices (idle timeout), the streams
// end and it closes both origin connections: nothing is left behind.
func TestClientKilledMidStream(t *testing.T) {
	o := newFaultOrigin(t)
	e := newEnv(t)
	port := nettest.FreePort(t, "udp")
	server, client, addr := startPair(t, e, o.addr, port, port)

	down := startDownload(t, addr)
	up := startUpload(t, addr)
	eventually(t, "both exchanges at the origin", func() bool { return o.active("/stream") == 1 && o.active("/upload") == 1 })

	client.kill()
	checkCutBody(t, "download from the killed client", down)
	checkCut(t, "upload to the killed client", up)
	closed := server.waitLog("server notices", "connection closed", 0, nil)
	t.Logf("server close reason: %s", closed.str("reason"))
	eventually(t, "origin connections closed", func() bool { return o.active("/stream")+o.active("/upload") == 0 })
}

// TestOutageAnswers503: once the client has noticed that the session is
// gone, every new request is answered 503 "tunnel not established:
// <reason>" by the client itself, whatever its method, once it waited
// session_wait_timeout for the tunnel to come back (here it never does).
func TestOutageAnswers503(t *testing.T) {
	o := newFaultOrigin(t)
	e := newEnv(t)
	port := nettest.FreePort(t, "udp")
	server, client, addr := startPair(t, e, o.addr, port, port, outageWait)
	server.kill()
	client.waitLog("lost transition", "session idle", 0, event("lost"))
	for _, m := range []struct{ name, raw string }{
		{"POST", "POST /upload HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"},
		{"PUT", "PUT /upload HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
		{"GET", "GET /ok HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n"},
		{"HEAD", "HEAD /ok HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n"},
	} {
		t.Run(m.name, func(t *testing.T) {
			// Every method waits like the others (the client sends no 0-RTT
			// early data by default) and gets 503 when no session comes.
			f := startRequest(t, addr, m.raw)
			within(t, "request during the outage", f.done)
			if f.status != http.StatusServiceUnavailable {
				t.Errorf("%s during the outage: status %d err=%v, want 503", m.name, f.status, f.err)
			}
		})
	}
	for _, r := range client.find("request failed", nil) {
		if r["status"] != float64(503) || !strings.Contains(r.str("error"), "tunnel not established") {
			t.Errorf("client logged %v, want only 503 tunnel not established", r)
		}
	}
}

// TestRestartRequestsWait is issue 10 at process level: while the server
// process restarts (SIGTERM: drain with GOAWAY, exit, a new process on the
// same port), callers keep sending GETs, and a POST arrives during the
// outage. With session_wait_timeout they wait for the new session: every
// request is answered by the origin, none gets 502 or 503; no connection
// attempt fails with a stream-state error.
func TestRestartRequestsWait(t *testing.T) {
	const restarts = 3
	o := newFaultOrigin(t)
	e := newEnv(t)
	port := nettest.FreePort(t, "udp")
	// A safety net, not a timing: requests wait until the server is back.
	server, client, addr := startPair(t, e, o.addr, port, port, "session_wait_timeout = 60000")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			f := startRequest(t, addr, "GET /ok HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n")
			wg.Go(func() {
				<-f.done
				mu.Lock()
				defer mu.Unlock()
				if isTimeout(f.err) {
					statuses[-1]++
					return
				}
				statuses[f.status]++
			})
		}
	})
	for i := 1; i <= restarts; i++ {
		server.stop() // SIGTERM: the server drains and exits
		client.waitLog("lost transition", "session idle", i-1, event("lost"))
		post := startRequest(t, addr, "POST /upload HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		server = startProc(t, fmt.Sprintf("server-%d", i), e.serverConfig(fmt.Sprintf("server-%d.toml", i), port, o.addr))
		server.waitLog("restarted server listening", "accepting connections", 0, nil)
		client.waitLog("tunnel back", "session ready", i, event("established"))
		within(t, "POST sent during the outage", post.done)
		if post.status != http.StatusOK {
			t.Errorf("restart %d: POST during the outage: status %d err=%v, want 200", i, post.status, post.err)
		}
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if statuses[http.StatusOK] == 0 || len(statuses) != 1 {
		t.Errorf("GETs across %d restarts: %v (status: count), want only 200", restarts, statuses)
	}
	for _, r := range client.logs() {
		if strings.Contains(r.str("reason"), "STREAM_STATE_ERROR") {
			t.Errorf("client: %v", r)
		}
	}
	t.Logf("GETs across %d restarts: %v", restarts, statuses)
}
