package pipeline

// End-to-end tests of both sides together: a caller speaks HTTP/1.1 to
// ServeClientConn, whose tunnel (h3Link, syncLink) runs the HTTP/3 codec
// to a real Handler, which talks to a scripted origin.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// startE2E serves the client side with tun on a loopback listener, names
// spelt as they cross (AsReceived: lower case after HTTP/3).
func startE2E(t *testing.T, tun Tunnel) string {
	t.Helper()
	return startClientWith(t, &ClientOptions{Tunnel: tun, Now: fixedNow, Names: httpio.AsReceived})
}

func newE2EHandler(t *testing.T, origin string) *Handler {
	t.Helper()
	pool := NewOriginPool(OriginOptions{Address: origin, Names: httpio.AsReceived, NoDelay: true})
	t.Cleanup(func() { pool.Close() })
	return NewHandler(&ServerOptions{Origin: pool})
}

// readHeadLines reads a head's lines up to the empty line.
func readHeadLines(t *testing.T, br *bufio.Reader) []string {
	t.Helper()
	var lines []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a head: %v (after %q)", err, lines)
		}
		l = strings.TrimSuffix(l, "\r\n")
		if l == "" {
			return lines
		}
		lines = append(lines, l)
	}
}

// TestFieldOrderEndToEnd: fields cross both ways in the order they came,
// duplicates kept and interleaved with other names, whatever their case
// (HTTP/3 lower-cases names; with AsReceived that is what the far side
// gets). Host goes first to the origin and the framing fields last, as
// HTTP/1.1 wants; Cookie lines are not joined.
func TestFieldOrderEndToEnd(t *testing.T) {
	seen := make(chan []string, 1)
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		lines := readHeadLines(t, br)
		seen <- lines
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-B: 1\r\nx-a: 2\r\nSet-Cookie: a=1\r\nContent-Length: 2\r\nX-b: 3\r\nset-cookie: b=2\r\nX-A: 4\r\nDate: d\r\n\r\nok")
	})
	addr := startE2E(t, &h3Link{h: newE2EHandler(t, o.ln.Addr().String())})
	_, br := dialRaw(t, addr, "GET /x HTTP/1.1\r\nX-B: 1\r\nHost: example.com\r\nx-a: 2\r\nCookie: a=1\r\nX-b: 3\r\ncookie: b=2\r\nX-A: 4\r\n\r\n")
	got := readHeadLines(t, br)
	want := []string{"HTTP/1.1 200 OK", "x-b: 1", "x-a: 2", "set-cookie: a=1", "x-b: 3", "set-cookie: b=2", "x-a: 4", "date: d", "Content-Length: 2"}
	if !slices.Equal(got, want) {
		t.Errorf("caller got\n%q\nwant\n%q", got, want)
	}
	body := make([]byte, 2)
	if _, err := io.ReadFull(br, body); err != nil || string(body) != "ok" {
		t.Errorf("body %q, %v", body, err)
	}
	wantReq := []string{"GET /x HTTP/1.1", "Host: example.com", "x-b: 1", "x-a: 2", "cookie: a=1", "x-b: 3", "cookie: b=2", "x-a: 4"}
	if got := waitFor(t, "request at the origin", seen); !slices.Equal(got, wantReq) {
		t.Errorf("origin got\n%q\nwant\n%q", got, wantReq)
	}
}

// chunkSizes are the chunk sizes TestChunkBoundariesEndToEnd sends: tiny,
// around the 8 KiB and 16 KiB buffers of the codec and the pools, and
// beyond any of them.
var chunkSizes = []int{1, 8191, 8192, 8193, 16384, 16385, 65536, 300000}

// writeChunks writes one chunk per size (bytes cycling through the
// alphabet) and the last chunk.
func writeChunks(w io.Writer, sizes []int) {
	bw := bufio.NewWriter(w)
	for i, n := range sizes {
		fmt.Fprintf(bw, "%x\r\n", n)
		bw.Write([]byte(strings.Repeat(string(rune('a'+i%26)), n)))
		bw.WriteString("\r\n")
	}
	bw.WriteString("0\r\n\r\n")
	bw.Flush()
}

// readChunks reads a chunked body and returns the size of each chunk, and
// whether each chunk's bytes are all the letter writeChunks gave it.
func readChunks(t *testing.T, br *bufio.Reader) []int {
	t.Helper()
	var sizes []int
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("chunk size line: %v", err)
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(line, "\r\n"), 16, 64)
		if err != nil {
			t.Fatalf("chunk size line %q", line)
		}
		if n == 0 {
			if l, _ := br.ReadString('\n'); l != "\r\n" {
				t.Fatalf("after the last chunk: %q", l)
			}
			return sizes
		}
		data := make([]byte, n+2)
		if _, err := io.ReadFull(br, data); err != nil {
			t.Fatalf("chunk of %d: %v", n, err)
		}
		letter := byte('a' + len(sizes)%26)
		if strings.Trim(string(data[:n]), string(letter)) != "" || string(data[n:]) != "\r\n" {
			t.Fatalf("chunk %d of %d bytes has the wrong bytes", len(sizes), n)
		}
		sizes = append(sizes, int(n))
	}
}

// TestChunkBoundariesEndToEnd: every HTTP/1.1 chunk, whatever its size,
// crosses the tunnel as exactly one DATA frame and reaches the far side as
// exactly one chunk of the same size, uploads and downloads alike.
func TestChunkBoundariesEndToEnd(t *testing.T) {
	atOrigin := make(chan []int, 1)
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		readHeadLines(t, br)
		atOrigin <- readChunks(t, br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		writeChunks(c, chunkSizes)
	})
	link := &h3Link{h: newE2EHandler(t, o.ln.Addr().String())}
	addr := startE2E(t, link)
	c, br := dialRaw(t, addr, "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
	go writeChunks(c, chunkSizes)
	head := readHeadLines(t, br)
	if head[0] != "HTTP/1.1 200 OK" || !slices.Contains(head, "Transfer-Encoding: chunked") {
		t.Fatalf("response head %q", head)
	}
	atCaller := readChunks(t, br)
	want := make([]int64, len(chunkSizes))
	for i, n := range chunkSizes {
		want[i] = int64(n)
	}
	if got := waitFor(t, "the upload at the origin", atOrigin); !slices.Equal(got, chunkSizes) {
		t.Errorf("origin got chunks of %v, want %v", got, chunkSizes)
	}
	if !slices.Equal(atCaller, chunkSizes) {
		t.Errorf("caller got chunks of %v, want %v", atCaller, chunkSizes)
	}
	link.mu.Lock()
	m := link.streams[0]
	link.mu.Unlock()
	reqFrames, respFrames := m.frames()
	if !slices.Equal(reqFrames, want) || !slices.Equal(respFrames, want) {
		t.Errorf("DATA frames: request %v, response %v; want %v both ways", reqFrames, respFrames, want)
	}
}

// goroutinesCreated is the number of goroutines the process has created.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// perExchange runs exchange n times on a warm connection and returns the
// goroutines created per exchange, the least of a few runs (other
// activity in the process can only add to the count).
func perExchange(t *testing.T, n int, exchange func()) float64 {
	t.Helper()
	exchange() // warm: the origin connection, pools
	best := -1.0
	for range 3 {
		before := goroutinesCreated()
		for range n {
			exchange()
		}
		per := float64(goroutinesCreated()-before) / float64(n)
		if best < 0 || per < best {
			best = per
		}
	}
	return best
}

// TestGoroutinesPerExchange pins the design: a bodiless exchange runs on
// the goroutine of the caller's connection on the client and on the
// stream's goroutine on the server, starting none of its own; a request
// body adds exactly one goroutine on each side. The timers that would
// start a hang-up watch or a delayed flush are pushed out of reach, so
// only the design is measured, not the scheduler.
func TestGoroutinesPerExchange(t *testing.T) {
	defer func(h, f time.Duration) { hangupDelay, flushDelay = h, f }(hangupDelay, flushDelay)
	hangupDelay, flushDelay = time.Hour, time.Hour
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) { o.serveAll(c, br) })
	h := newE2EHandler(t, o.ln.Addr().String())
	var mu sync.Mutex // one exchange at a time per connection
	roundTrip := func(c net.Conn, br *bufio.Reader, req, method string) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		if resp := readResp(t, br, method); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}

	// Client and server on one goroutine each, the tunnel synchronous:
	// the whole bodiless exchange, both sides and the origin's keep-alive
	// connection, starts no goroutine.
	addr := startE2E(t, syncLink{h: h})
	c, br := dialRaw(t, addr, "")
	get := "GET /g HTTP/1.1\r\nHost: x\r\n\r\n"
	if per := perExchange(t, 20, func() { roundTrip(c, br, get, "GET") }); per != 0 {
		t.Errorf("a bodiless exchange started %.2f goroutines, want 0", per)
	}

	// Over a stream per exchange served on a goroutine of its own (what
	// the session does): that goroutine is the only one.
	addr = startE2E(t, &h3Link{h: h})
	c, br = dialRaw(t, addr, "")
	if per := perExchange(t, 20, func() { roundTrip(c, br, get, "GET") }); per != 1 {
		t.Errorf("a bodiless exchange over a stream started %.2f goroutines, want 1 (the stream's)", per)
	}

	// A request body: one more on each side (the client's upload and the
	// server's upload to the origin).
	post := "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	if per := perExchange(t, 20, func() { roundTrip(c, br, post, "POST") }); per != 3 {
		t.Errorf("an exchange with a body started %.2f goroutines, want 3 (the stream's and one upload per side)", per)
	}
}

// TestEveryStreamEndsOnce: whatever way an exchange ends (complete, with
// a body, refused early, cut by the origin, abandoned by the caller), the
// client closes its stream exactly once and the server ends it (FIN or
// reset) before ServeStream returns.
func TestEveryStreamEndsOnce(t *testing.T) {
	o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
		for {
			req, err := o.readHead(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/big":
				io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
				return
			case "/cut":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
				return
			case "/slow":
				br.ReadByte() // until ptproxy closes the connection
				return
			}
			io.Copy(io.Discard, req.Body)
			ok(c, req)
		}
	})
	link := &h3Link{h: newE2EHandler(t, o.ln.Addr().String())}
	addr := startE2E(t, link)

	_, br := dialRaw(t, addr, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	readResp(t, br, "GET")
	readResp(t, br, "POST")
	_, br = dialRaw(t, addr, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\nsome")
	if resp := readResp(t, br, "POST"); resp.StatusCode != 413 {
		t.Fatalf("early answer: %d", resp.StatusCode)
	}
	_, br = dialRaw(t, addr, "GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
	io.ReadAll(br)
	c, _ := dialRaw(t, addr, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	eventually(t, "the slow request at the origin", func() bool { return slices.Contains(o.requests(), "GET /slow") })
	c.Close()

	eventually(t, "every stream ended", func() bool {
		link.mu.Lock()
		defer link.mu.Unlock()
		if len(link.streams) != 5 {
			return false
		}
		for _, m := range link.streams {
			select {
			case <-m.serverDone:
			default:
				return false
			}
			if m.closes.Load() != 1 {
				return false
			}
		}
		return true
	})
	link.mu.Lock()
	defer link.mu.Unlock()
	for i, m := range link.streams {
		if m.closes.Load() != 1 || !(m.srvClosed.Load() || m.srvReset.Load()) {
			t.Errorf("stream %d: closed %d times by the client, ended by the server: %v", i, m.closes.Load(), m.srvClosed.Load() || m.srvReset.Load())
		}
	}
}
