package session

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Our HTTP/3 layer must stay valid HTTP/3 (RFC 9114, RFC 9204): these
// tests put it against quic-go's own http3 package, our client against its
// server and its client against our server, for GET, HEAD, POST (known and
// unknown length), trailers, interim responses and GOAWAY.

// interopOrigin is the net/http handler both directions serve.
func interopOrigin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header()["X-Seen-Fields"] = []string{r.Header.Get("X-A"), strings.Join(r.Header.Values("Cookie"), "|")}
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("X-Length", strconv.Itoa(len(b)))
		w.Header().Set("X-Trailer", r.Trailer.Get("X-Sum"))
		w.Write(b)
	})
	mux.HandleFunc("/interim", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "abc")
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	return mux
}

// TestOurClientAgainstQuicGoServer runs session.Client (our request
// streams, control stream and SETTINGS) against http3.Server.
func TestOurClientAgainstQuicGoServer(t *testing.T) {
	cs := newCertSet(t)
	// An explicit transport, closed last: Transport.Close waits for its
	// read loop, where a listener of quic.ListenAddrEarly only asks it to
	// stop, and goleak (TestMain) then found it still reading under load.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.ListenEarly(http3.ConfigureTLSConfig(cs.serverTLS(t, "client.test", "server.test")), &quic.Config{Allow0RTT: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http3.Server{Handler: interopOrigin()}
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ln) }()
	t.Cleanup(func() {
		srv.Close()
		ln.Close() // ServeListener does not own it
		<-done
		tr.Close()
		udp.Close()
	})
	tc := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), ln.Addr().(*net.UDPAddr).Port, nil)
	waitFor(t, "ready", func() bool { return tc.State() == Ready })
	ctx := context.Background()

	t.Run("GET", func(t *testing.T) {
		x := openExchange(t, tc.Client, &h3.Head{Method: "GET", Scheme: "https", Authority: "a.example", Path: "/get",
			Fields: httpio.Header{{Name: "x-a", Value: "1"}, {Name: "cookie", Value: "a=1"}, {Name: "cookie", Value: "b=2"}}}, true)
		h := finalHead(t, x)
		body, trailers := readAll(t, x)
		if h.Status != 200 || body != "hello" || h.ContentLength != 5 || trailers != nil {
			t.Fatalf("GET: %d %q cl=%d trailers=%v", h.Status, body, h.ContentLength, trailers)
		}
		if got := h.Fields.Get("x-seen-host"); got != "a.example" {
			t.Errorf("server saw Host %q", got)
		}
		// quic-go's server joins the two cookie fields (RFC 9114 4.2.1).
		if got := strings.Join(slicesOf(h.Fields.Values("x-seen-fields")), ","); got != "1,a=1; b=2" {
			t.Errorf("server saw fields %q", got)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		x := openExchange(t, tc.Client, &h3.Head{Method: "HEAD", Scheme: "https", Authority: "a.example", Path: "/get"}, true)
		h := finalHead(t, x)
		if body, _ := readAll(t, x); h.Status != 200 || body != "" {
			t.Fatalf("HEAD: %d %q", h.Status, body)
		}
	})
	for _, known := range []bool{true, false} {
		t.Run("POST known length "+strconv.FormatBool(known), func(t *testing.T) {
			parts := []string{strings.Repeat("a", 1), strings.Repeat("b", 8193), strings.Repeat("c", 70000)}
			total := 0
			for _, p := range parts {
				total += len(p)
			}
			head := &h3.Head{Method: "POST", Scheme: "https", Authority: "a.example", Path: "/echo"}
			if known {
				head.Fields = httpio.Header{{Name: "content-length", Value: strconv.Itoa(total)}}
			}
			x := openExchange(t, tc.Client, head, false)
			for _, p := range parts {
				if err := x.WriteData([]byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			if err := x.CloseWrite(httpio.Header{{Name: "x-sum", Value: "42"}}); err != nil {
				t.Fatal(err)
			}
			h := finalHead(t, x)
			body, _ := readAll(t, x)
			if h.Status != 200 || body != strings.Join(parts, "") {
				t.Fatalf("echo: %d, %d bytes", h.Status, len(body))
			}
			if got := h.Fields.Get("x-trailer"); got != "42" {
				t.Errorf("server saw trailer %q", got)
			}
		})
	}
	t.Run("interim", func(t *testing.T) {
		x := openExchange(t, tc.Client, &h3.Head{Method: "GET", Scheme: "https", Authority: "a.example", Path: "/interim"}, true)
		h, err := x.ReadHead()
		if err != nil || h.Status != 103 || h.Fields.Get("link") == "" {
			t.Fatalf("interim head: %+v, %v", h, err)
		}
		h = finalHead(t, x)
		if body, _ := readAll(t, x); h.Status != 200 || body != "final" {
			t.Fatalf("final: %d %q", h.Status, body)
		}
	})
	t.Run("trailers", func(t *testing.T) {
		x := openExchange(t, tc.Client, &h3.Head{Method: "GET", Scheme: "https", Authority: "a.example", Path: "/trailers"}, true)
		finalHead(t, x)
		body, trailers := readAll(t, x)
		if body != "body" || trailers.Get("x-checksum") != "abc" {
			t.Fatalf("body %q trailers %v", body, trailers)
		}
	})
	t.Run("GOAWAY", func(t *testing.T) {
		x := openExchange(t, tc.Client, &h3.Head{Method: "GET", Scheme: "https", Authority: "a.example", Path: "/hang"}, true)
		finalHead(t, x)
		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		go srv.Shutdown(sctx) // sends GOAWAY, then waits for /hang
		waitFor(t, "the client to see GOAWAY", func() bool {
			s := tc.cur.Load()
			return s == nil || !s.usable()
		})
		_, err := tc.Client.Open(ctx, &h3.Head{Method: "GET", Scheme: "https", Authority: "a.example", Path: "/get"}, true)
		if !errors.Is(err, ErrNotReady) {
			t.Fatalf("a request after GOAWAY: %v, want ErrNotReady", err)
		}
	})
}

// TestQuicGoClientAgainstOurServer runs http3.Transport against
// session.Server (our control stream, request streams and GOAWAY).
func TestQuicGoClientAgainstOurServer(t *testing.T) {
	cs := newCertSet(t)
	ts := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, interopOrigin())
	clientTLS := cs.clientTLS(t, "server.test", cs.client(t, "client.test"))
	tr := &http3.Transport{TLSClientConfig: clientTLS, QUICConfig: &quic.Config{}}
	defer tr.Close()
	base := "https://server.test:" + strconv.Itoa(ts.port())
	tr.Dial = func(ctx context.Context, _ string, tlsConf *tls.Config, qc *quic.Config) (*quic.Conn, error) {
		return quic.DialAddr(ctx, "127.0.0.1:"+strconv.Itoa(ts.port()), tlsConf, qc)
	}
	hc := &http.Client{Transport: tr}

	req, _ := http.NewRequest("GET", base+"/get", nil)
	req.Header.Set("X-A", "1")
	req.Header.Add("Cookie", "a=1")
	req.Header.Add("Cookie", "b=2")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "hello" || resp.Header.Get("X-Seen-Host") != "server.test:"+strconv.Itoa(ts.port()) {
		t.Fatalf("GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	// quic-go joins cookies with "; " (RFC 9114 4.2.1 allows either).
	if got := resp.Header.Values("X-Seen-Fields"); len(got) != 2 || got[0] != "1" || !strings.Contains(got[1], "a=1") || !strings.Contains(got[1], "b=2") {
		t.Errorf("server saw fields %q", got)
	}

	resp, err = hc.Head(base + "/get")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}

	payload := strings.Repeat("p", 100000)
	req, _ = http.NewRequest("POST", base+"/echo", io.NopCloser(strings.NewReader(payload))) // unknown length
	req.Trailer = http.Header{"X-Sum": {"7"}}
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != payload || resp.Header.Get("X-Trailer") != "7" {
		t.Fatalf("POST: %d, %d bytes, trailer %q", resp.StatusCode, len(body), resp.Header.Get("X-Trailer"))
	}

	var interim []int
	var mu sync.Mutex
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		mu.Lock()
		interim = append(interim, code)
		mu.Unlock()
		return nil
	}})
	req, _ = http.NewRequestWithContext(ctx, "GET", base+"/interim", nil)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != 200 || body != "final" {
		t.Fatalf("interim: %d %q", resp.StatusCode, body)
	}
	mu.Lock()
	if len(interim) != 1 || interim[0] != 103 {
		t.Errorf("interim responses %v, want [103]", interim)
	}
	mu.Unlock()

	resp, err = hc.Get(base + "/trailers")
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); body != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Fatalf("trailers: %q %v", body, resp.Trailer)
	}

	// GOAWAY: a drain lets the request in flight finish; quic-go's client
	// then closes the connection, and the drain ends.
	resp, err = hc.Get(base + "/hang")
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() {
		dctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		drained <- ts.Drain(dctx)
	}()
	waitFor(t, "the server to start draining", func() bool { return ts.State() == Draining })
	resp.Body.Close() // the client cancels /hang; the handler returns
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
}

func openExchange(t *testing.T, c *Client, h *h3.Head, bodiless bool) *Exchange {
	t.Helper()
	x, err := c.Open(context.Background(), h, bodiless)
	if err != nil {
		t.Fatalf("Open %s %s: %v", h.Method, h.Path, err)
	}
	t.Cleanup(x.Close)
	return x
}

func finalHead(t *testing.T, x *Exchange) *h3.Head {
	t.Helper()
	for {
		h, err := x.ReadHead()
		if err != nil {
			t.Fatalf("ReadHead: %v", err)
		}
		if h.Status >= 200 {
			return h
		}
	}
}

func readAll(t *testing.T, x *Exchange) (string, httpio.Header) {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := x.ReadData(buf)
		b.Write(buf[:n])
		if err == io.EOF {
			return b.String(), x.Trailers()
		}
		if err != nil {
			t.Fatalf("reading body: %v", err)
		}
	}
}

func slicesOf(seq func(func(string) bool)) []string {
	var out []string
	for v := range seq {
		out = append(out, v)
	}
	return out
}

// TestLinuxFastPaths: with FEC off, quic-go owns the *net.UDPConn and uses
// its Linux fast paths; GSO is the one it reports (batched receive and ECN
// come with the same socket type). FEC's packet layer is not a
// *net.UDPConn, so it goes without (docs/transport.md).
func TestLinuxFastPaths(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("GSO is a Linux fast path")
	}
	for _, mode := range []string{"off", "on", "auto"} {
		t.Run("fec "+mode, func(t *testing.T) {
			tr := withFEC(testTransport, mode != "off")
			tr.FECAuto = mode == "auto"
			cs := newCertSet(t)
			srv, logs := startFECServer(t, cs, tr)
			tc := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.Addr().(*net.UDPAddr).Port, func(o *ClientOptions) {
				o.Transport = tr
			})
			waitFor(t, "ready", func() bool { return tc.State() == Ready })
			if !tc.cur.Load().conn.ConnectionState().GSO {
				t.Error("client connection without GSO on a UDP socket")
			}
			est := logs.find("connection established", nil)
			if len(est) == 0 || est[0][KeyGSO] != true {
				t.Errorf("server connection without GSO: %v", est)
			}
		})
	}
}

// After the server's GOAWAY our client closes the session itself (H3_NO_ERROR)
// as soon as its last exchange ended, as HTTP/3 clients do: the draining
// server then knows every response was received and need not wait out its
// linger. With a request in flight the close waits for it.
func TestClientClosesAfterGoAway(t *testing.T) {
	cs := newCertSet(t)
	ts := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, interopOrigin())
	ts.linger = time.Hour // a drain that waited for the linger would never end
	tc := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), ts.port(), nil)
	waitFor(t, "ready", func() bool { return tc.State() == Ready })
	x, s, drained := drainWithExchange(t, ts, tc)
	if s.conn.Context().Err() != nil {
		t.Fatal("the session closed with an exchange in flight")
	}
	x.Close() // cancels /hang: the handler returns, the exchange ends
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	closed := ts.logs.find("connection closed", func(r map[string]any) bool { return r[KeyReason] == ErrClientClosed.Error() })
	if len(closed) != 1 {
		t.Fatalf("the server did not see the client close: %v", ts.logs.find("connection closed", nil))
	}
}

// TestRequestHeadOverServerLimit: once the server's SETTINGS announced
// SETTINGS_MAX_FIELD_SECTION_SIZE, a request head over it is refused by the
// client before anything is sent (ErrFieldSectionTooLarge, not retried);
// the server never sees it, and the session carries the next request.
func TestRequestHeadOverServerLimit(t *testing.T) {
	cs := newCertSet(t)
	var mu sync.Mutex
	seen := map[string]int{}
	srv := startServerMod(t, cs.serverTLS(t, "client.test", "server.test"), 0,
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[r.URL.Path]++
			mu.Unlock()
			io.WriteString(w, "ok")
		}),
		func(o *ServerOptions) { o.MaxFieldSectionSize = 2000 })
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), nil)
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	small := func() *h3.Head {
		return &h3.Head{Method: "GET", Scheme: "https", Authority: "server.test", Path: "/small"}
	}
	// The first exchange's answer comes after the server's SETTINGS (its
	// control stream opens before any request is accepted).
	x := openExchange(t, cl.Client, small(), true)
	if h := finalHead(t, x); h.Status != 200 {
		t.Fatalf("small request: %d", h.Status)
	}
	readAll(t, x)

	big := small()
	big.Path = "/big"
	big.Fields = httpio.Header{{Name: "x-big", Value: strings.Repeat("v", 3000)}}
	if x, err := cl.Open(context.Background(), big, true); !errors.Is(err, h3.ErrFieldSectionTooLarge) {
		if x != nil {
			x.Close()
		}
		t.Fatalf("Open with a head over the server's limit: %v, want ErrFieldSectionTooLarge", err)
	}
	x = openExchange(t, cl.Client, small(), true)
	if h := finalHead(t, x); h.Status != 200 {
		t.Fatalf("small request after the refusal: %d", h.Status)
	}
	readAll(t, x)
	// Counted by path: a small GET may be sent again after a connection
	// lost under load (it is replayable), the big one never.
	mu.Lock()
	defer mu.Unlock()
	if seen["/big"] != 0 || seen["/small"] < 2 {
		t.Fatalf("server saw %v, want /small at least twice and /big never", seen)
	}
}

// TestClientUsable: Usable is false before the first session, true while
// the session takes requests, false as soon as the server's GOAWAY
// arrived (the state still says ready until the connection ends), and
// false once the client drains.
func TestClientUsable(t *testing.T) {
	cs := newCertSet(t)
	ts := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, interopOrigin())
	ts.linger = time.Hour
	port := ts.port()
	tc := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), port, nil)
	waitFor(t, "ready", func() bool { return tc.State() == Ready })
	if !tc.Usable() {
		t.Fatal("ready client is not usable")
	}
	// An exchange in flight keeps the session open after the GOAWAY.
	x, _, drained := drainWithExchange(t, ts, tc)
	if tc.Usable() {
		t.Fatal("usable after the server's GOAWAY")
	}
	x.Close()
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	waitFor(t, "session lost", func() bool { return tc.State() != Ready })
	if tc.Usable() {
		t.Fatal("usable without a session")
	}
	ts2 := startServer(t, cs.serverTLS(t, "client.test", "server.test"), port, interopOrigin())
	defer ts2.stop()
	waitFor(t, "usable again", tc.Usable)
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	if err := tc.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if tc.Usable() {
		t.Fatal("usable after Drain")
	}
}

// drainWithExchange opens a /hang exchange on tc's session, starts
// draining ts and waits until the client received the GOAWAY. The caller
// closes x to let the drain (its result on drained) end.
func drainWithExchange(t *testing.T, ts *testServer, tc *testClient) (*Exchange, *clientSession, <-chan error) {
	t.Helper()
	x := openExchange(t, tc.Client, &h3.Head{Method: "GET", Scheme: "https", Authority: "a", Path: "/hang"}, true)
	finalHead(t, x)
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		drained <- ts.Drain(ctx)
	}()
	s := tc.cur.Load()
	waitFor(t, "the GOAWAY", func() bool { return s.away.Load() })
	return x, s, drained
}
