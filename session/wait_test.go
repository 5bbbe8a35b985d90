package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/ptproxy/ptproxy/session/nettest"
	"github.com/quic-go/quic-go"
)

// waitingClient is a client of a port nobody listens on yet, whose
// requests wait up to wait for a session.
func waitingClient(t *testing.T, cs *certSet, wait time.Duration) (*testClient, int) {
	t.Helper()
	port := nettest.FreePort(t, "udp")
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), port, func(o *ClientOptions) {
		o.SessionWait = wait
	})
	return cl, port
}

// goGet starts a GET in a goroutine owned by wg.
func goGet(wg *sync.WaitGroup, rt http.RoundTripper, ctx context.Context, path string) <-chan getResult {
	ch := make(chan getResult, 1)
	wg.Go(func() { ch <- doGet(rt, ctx, path) })
	return ch
}

func receive(t *testing.T, what string, ch <-chan getResult) getResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(safety):
		t.Fatalf("%s did not return", what)
		return getResult{}
	}
}

// A request that arrives while there is no session waits for it (it is not
// in flight meanwhile) and is sent once the server is there.
func TestRequestWaitsForSession(t *testing.T) {
	cs := newCertSet(t)
	cl, port := waitingClient(t, cs, safety)
	var wg sync.WaitGroup
	defer wg.Wait()
	res := goGet(&wg, cl, context.Background(), "/waited")
	waitFor(t, "the request waiting", func() bool { return cl.Waiting() == 1 })
	if cl.InFlight() != 0 {
		t.Errorf("a waiting request counts as in flight: %d", cl.InFlight())
	}
	startServer(t, cs.serverTLS(t, "client.test", "server.test"), port, echo)
	if r := receive(t, "the waiting request", res); r.err != nil || r.status != 200 || r.body != "GET /waited " {
		t.Fatalf("waiting request: %+v", r)
	}
	if cl.Waiting() != 0 {
		t.Errorf("still %d waiting", cl.Waiting())
	}
}

// The wait is bounded: without a session the request gets ErrNotReady
// with the latest reason once its budget is spent.
func TestSessionWaitBounded(t *testing.T) {
	cs := newCertSet(t)
	cl, _ := waitingClient(t, cs, 50*time.Millisecond)
	var wg sync.WaitGroup
	defer wg.Wait()
	r := receive(t, "request without a server", goGet(&wg, cl, context.Background(), "/"))
	var nre *NotReadyError
	if !errors.As(r.err, &nre) || nre.Reason == nil {
		t.Fatalf("after the wait: %+v, want a NotReadyError with a reason", r)
	}
	if cl.Waiting() != 0 {
		t.Errorf("still %d waiting", cl.Waiting())
	}
}

// A caller that hangs up ends its wait at once.
func TestSessionWaitEndsWithTheCaller(t *testing.T) {
	cs := newCertSet(t)
	cl, _ := waitingClient(t, cs, time.Hour)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	res := goGet(&wg, cl, ctx, "/")
	waitFor(t, "the request waiting", func() bool { return cl.Waiting() == 1 })
	cancel()
	if r := receive(t, "the cancelled request", res); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled while waiting: %+v, want context.Canceled", r)
	}
	if cl.Waiting() != 0 {
		t.Errorf("still %d waiting", cl.Waiting())
	}
}

// Drain ends every wait at once with ErrDraining (503), and a request
// arriving after it is not waited for either.
func TestSessionWaitEndsOnDrain(t *testing.T) {
	cs := newCertSet(t)
	cl, _ := waitingClient(t, cs, time.Hour)
	var wg sync.WaitGroup
	defer wg.Wait()
	res := goGet(&wg, cl, context.Background(), "/")
	waitFor(t, "the request waiting", func() bool { return cl.Waiting() == 1 })
	drained := make(chan error, 1)
	go func() { drained <- cl.Drain(context.Background()) }()
	if r := receive(t, "the waiting request", res); !errors.Is(r.err, ErrDraining) {
		t.Fatalf("waiting request on drain: %+v, want ErrDraining", r)
	}
	if r := receive(t, "a request after the drain", goGet(&wg, cl, context.Background(), "/")); !errors.Is(r.err, ErrDraining) {
		t.Fatalf("request after the drain: %+v, want ErrDraining", r)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(safety):
		t.Fatal("Drain did not return")
	}
}

// Waiting requests share one broadcast: the client starts no goroutine per
// waiting request, and one published session wakes them all.
func TestWaitingRequestsShareOneBroadcast(t *testing.T) {
	const n = 100
	cs := newCertSet(t)
	cl, port := waitingClient(t, cs, safety)
	var wg sync.WaitGroup
	defer wg.Wait()
	before := runtime.NumGoroutine()
	var results []<-chan getResult
	for i := range n {
		results = append(results, goGet(&wg, cl, context.Background(), fmt.Sprintf("/w%d", i)))
	}
	waitFor(t, "every request waiting", func() bool { return cl.Waiting() == n })
	// n goroutines are the callers; the client's own (its loop, one
	// attempt and its QUIC connection) stay a handful.
	if extra := runtime.NumGoroutine() - before - n; extra > 20 {
		t.Errorf("%d goroutines beyond the %d callers while they wait", extra, n)
	}
	startServer(t, cs.serverTLS(t, "client.test", "server.test"), port, echo)
	for i, ch := range results {
		if r := receive(t, "a waiting request", ch); r.err != nil || r.status != 200 || r.body != fmt.Sprintf("GET /w%d ", i) {
			t.Errorf("request %d: %+v", i, r)
		}
	}
}

// twoServers are the server before and after a restart on one port: each
// records the paths it served, so a test can check that no request was
// processed twice.
type seenPaths struct {
	mu    sync.Mutex
	paths map[string]int
}

func (s *seenPaths) add(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paths == nil {
		s.paths = map[string]int{}
	}
	s.paths[p]++
}

func (s *seenPaths) count(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[p]
}

// namedEcho answers "<name> <method> <path> <body>" and records the path;
// /slow blocks until release is closed (entered receives once).
func namedEcho(name string, seen *seenPaths, entered chan<- struct{}, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen.add(r.URL.Path)
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, name+" "+r.Method+" "+r.URL.Path+" "+string(body))
	})
}

// issue 10: a request sent while the server drains (after its GOAWAY) is
// never answered 502: the server did not process it (RFC 9114 5.2), so it
// is sent again on the next session, whatever its method, as are the
// requests that arrive while the going-away session is still up. The
// server restarts on the same port meanwhile (drain, then a new server).
// No request is processed twice.
func TestGoAwayRetriedOnNextSession(t *testing.T) {
	cs := newCertSet(t)
	srvTLS := cs.serverTLS(t, "client.test", "server.test")
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var seen1, seen2 seenPaths
	srv1 := startServer(t, srvTLS, 0, namedEcho("one", &seen1, entered, release))
	port := srv1.port()
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), port, func(o *ClientOptions) {
		o.SessionWait = safety
	})
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	var wg sync.WaitGroup
	defer wg.Wait()
	// Runs before wg.Wait: a failing test must not leave /slow blocked.
	releaseSlow := sync.OnceFunc(func() { close(release) })
	defer releaseSlow()
	ctx := context.Background()
	slow := goGet(&wg, cl, ctx, "/slow")
	<-entered
	drained := make(chan error, 1)
	go func() { drained <- srv1.Drain(ctx) }()

	// GETs until one meets the GOAWAY (refused by http3 or by the server):
	// the client then marks the session as going away.
	type sentReq struct {
		path string
		res  <-chan getResult
	}
	var during []sentReq
	goneAway := func() bool { s := cl.cur.Load(); return s != nil && s.refusal() != nil }
	for i := 0; !goneAway(); i++ {
		if i == 200 {
			t.Fatal("no request met the GOAWAY")
		}
		p := fmt.Sprintf("/g%d", i)
		res := goGet(&wg, cl, ctx, p)
		waitFor(t, p+" answered or refused", func() bool { return len(res) == 1 || goneAway() })
		if len(res) == 1 {
			if r := <-res; r.err != nil || r.body != "one GET "+p+" " {
				t.Fatalf("%s before the GOAWAY: %+v (%v)", p, r, r.err)
			}
			continue
		}
		during = append(during, sentReq{p, res})
	}
	if got := cl.cur.Load().refusal(); !errors.Is(got, ErrServerGoaway) {
		t.Errorf("going-away session refuses with %v, want %v", got, ErrServerGoaway)
	}
	// Requests arriving now wait for the next session, bodies included.
	post := make(chan getResult, 1)
	wg.Go(func() {
		req, _ := http.NewRequest(http.MethodPost, "https://server.test/post", io.NopCloser(strings.NewReader("payload")))
		resp, err := cl.RoundTrip(req)
		if err != nil {
			post <- getResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		post <- getResult{status: resp.StatusCode, body: string(b), err: err}
	})
	del := make(chan getResult, 1)
	wg.Go(func() {
		req, _ := http.NewRequest(http.MethodDelete, "https://server.test/del", nil)
		resp, err := cl.RoundTrip(req)
		if err != nil {
			del <- getResult{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		del <- getResult{status: resp.StatusCode, body: string(b), err: err}
	})
	// A request sent just before the GOAWAY arrived may have been
	// accepted by the draining server (its id below the GOAWAY's) and is
	// answered by it; every other one waits for the next session.
	answered := func() int {
		n := 0
		for _, d := range during {
			n += len(d.res)
		}
		return n
	}
	waitFor(t, "the requests waiting for the next session", func() bool { return cl.Waiting()+answered() == len(during)+2 })

	releaseSlow()
	if r := receive(t, "the in-flight request", slow); r.err != nil || r.body != "one GET /slow " {
		t.Fatalf("in-flight request across the drain: %+v", r)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	startServer(t, srvTLS, port, namedEcho("two", &seen2, entered, release))

	for _, d := range during {
		r := receive(t, d.path, d.res)
		switch {
		case r.err != nil || r.status != 200:
			t.Errorf("%s sent during the GOAWAY: %+v, want 200", d.path, r)
		case r.body == "one GET "+d.path+" ":
			// Accepted before the GOAWAY: processed there, and only there.
		case r.body != "two GET "+d.path+" ":
			t.Errorf("%s sent during the GOAWAY: %+v, want the answer of one server", d.path, r)
		}
		if n1, n2 := seen1.count(d.path), seen2.count(d.path); n1+n2 != 1 {
			t.Errorf("%s processed %d+%d times", d.path, n1, n2)
		}
	}
	if r := receive(t, "POST", post); r.err != nil || r.body != "two POST /post payload" {
		t.Errorf("POST during the GOAWAY: %+v", r)
	}
	if r := receive(t, "DELETE", del); r.err != nil || r.body != "two DELETE /del " {
		t.Errorf("DELETE during the GOAWAY: %+v", r)
	}
	for _, p := range []string{"/post", "/del"} {
		if seen1.count(p)+seen2.count(p) != 1 {
			t.Errorf("%s processed %d+%d times", p, seen1.count(p), seen2.count(p))
		}
	}
}

// The retry rules, exchange by exchange: which failures say the request
// was not processed, and which requests may then be sent again.
func TestRetryClassification(t *testing.T) {
	rejected := &quic.StreamError{Remote: true, ErrorCode: quic.StreamErrorCode(h3.ErrCodeRequestRejected)}
	incomplete := &quic.StreamError{Remote: true, ErrorCode: quic.StreamErrorCode(h3.ErrCodeRequestIncomplete)}
	connGone := &quic.ApplicationError{Remote: true, ErrorCode: quic.ApplicationErrorCode(h3.ErrCodeNoError)}
	internal := &quic.StreamError{Remote: true, ErrorCode: quic.StreamErrorCode(h3.ErrCodeInternalError)}

	cs := newCertSet(t)
	ts := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, echo)
	tc := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), ts.port(), nil)
	waitFor(t, "ready", func() bool { return tc.State() == Ready })
	conn := tc.cur.Load().conn // alive: only the error decides
	ctx := context.Background()

	for _, c := range []struct {
		name  string
		err   error
		class retryClass
		goes  bool // the session refuses new requests afterwards
	}{
		{"H3_REQUEST_REJECTED", fmt.Errorf("reading response: %w", rejected), refused, true},
		{"H3_REQUEST_INCOMPLETE", fmt.Errorf("reading response: %w", incomplete), refused, false},
		{"connection closed", connGone, lost, true},
		{"H3_INTERNAL_ERROR", internal, noRetry, false},
	} {
		var reason error
		if got := classify(ctx, conn, func(err error) { reason = err }, c.err); got != c.class {
			t.Errorf("%s: class %d, want %d", c.name, got, c.class)
		}
		if goes := reason != nil; goes != c.goes {
			t.Errorf("%s: session refusing=%v, want %v", c.name, goes, c.goes)
		}
	}
	var reason error
	classify(ctx, conn, func(err error) { reason = err }, rejected)
	if !errors.Is(reason, ErrServerGoaway) {
		t.Errorf("refusal after H3_REQUEST_REJECTED: %v", reason)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got := classify(cancelled, conn, func(error) {}, rejected); got != noRetry {
		t.Errorf("a request whose caller gave up is never retried: class %d", got)
	}

	get := &h3.Head{Method: "GET"}
	post := &h3.Head{Method: "POST"}
	putKey := &h3.Head{Method: "PUT", Fields: httpio.Header{{Name: "idempotency-key", Value: "k"}}}
	for _, c := range []struct {
		name     string
		head     *h3.Head
		bodiless bool
		class    retryClass
		want     bool
	}{
		{"GET refused", get, true, refused, true},
		{"bodiless POST refused", post, true, refused, true},
		{"POST with a streamed body refused", post, false, refused, false},
		{"GET lost with the connection", get, true, lost, true},
		{"bodiless POST lost with the connection", post, true, lost, false},
		{"PUT with Idempotency-Key lost", putKey, true, lost, true},
		{"GET reset by the server", get, true, noRetry, false},
	} {
		if got := mayResend(c.head, c.bodiless, c.class); got != c.want {
			t.Errorf("%s: resend %v, want %v", c.name, got, c.want)
		}
	}

	// Not sent again: refused unprocessed is still a 503, lost a 502.
	c := &Client{}
	if err := c.giveUp(fmt.Errorf("x: %w", rejected), refused); !errors.Is(err, ErrNotReady) || !errors.Is(err, ErrServerGoaway) {
		t.Errorf("refused, not replayable: %v, want NotReadyError(ErrServerGoaway)", err)
	}
	lostErr := errors.New("connection lost")
	if err := c.giveUp(lostErr, lost); err != lostErr {
		t.Errorf("lost, not replayable: %v", err)
	}
}

// hangUntilClosed blocks /hang until the server closes the connection,
// and records every path.
func hangUntilClosed(name string, seen *seenPaths, entered chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r.URL.Path)
		if r.URL.Path == "/hang" {
			entered <- r.Method
			<-r.Context().Done()
			return
		}
		io.WriteString(w, name+" "+r.Method+" "+r.URL.Path)
	})
}

// A replayable request (GET) whose connection died before any response is
// sent again on the next session (the server may have processed it once;
// a GET may be repeated, RFC 9110 9.2.2).
func TestLostGetResentOnNextSession(t *testing.T) {
	cs := newCertSet(t)
	srvTLS := cs.serverTLS(t, "client.test", "server.test")
	entered := make(chan string, 1)
	var seen1, seen2 seenPaths
	srv := startServer(t, srvTLS, 0, hangUntilClosed("one", &seen1, entered))
	port := srv.port()
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), port, func(o *ClientOptions) {
		o.SessionWait = safety
	})
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	var wg sync.WaitGroup
	defer wg.Wait()
	res := goGet(&wg, cl, context.Background(), "/hang")
	<-entered
	srv.stop() // closes the connection under the request
	startServer(t, srvTLS, port, namedEcho("two", &seen2, nil, nil))
	if r := receive(t, "the lost GET", res); r.err != nil || r.status != 200 || r.body != "two GET /hang " {
		t.Fatalf("lost GET: %+v, want 200 from the new server", r)
	}
	if seen1.count("/hang") != 1 || seen2.count("/hang") != 1 {
		t.Errorf("/hang reached the servers %d and %d times, want once each", seen1.count("/hang"), seen2.count("/hang"))
	}
}

// A request lost with its connection that cannot be sent again keeps the
// connection's error (a 502 at the pipeline: the server may have processed
// it), both when it is not replayable (POST) and when no session comes
// back within the wait (GET); it is never reported as "no session" (503).
func TestLostRequestKeepsItsError(t *testing.T) {
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		t.Run(method, func(t *testing.T) {
			cs := newCertSet(t)
			entered := make(chan string, 1)
			var seen seenPaths
			srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, hangUntilClosed("one", &seen, entered))
			cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), func(o *ClientOptions) {
				o.SessionWait = 50 * time.Millisecond // the server does not come back
			})
			waitFor(t, "client ready", func() bool { return cl.State() == Ready })
			done := make(chan error, 1)
			go func() {
				req, _ := http.NewRequest(method, "https://server.test/hang", nil)
				resp, err := cl.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			<-entered
			srv.stop()
			var err error
			select {
			case err = <-done:
			case <-time.After(safety):
				t.Fatal("the lost request did not return")
			}
			if err == nil || errors.Is(err, ErrNotReady) || errors.Is(err, ErrDraining) {
				t.Fatalf("%s lost with its connection: %v, want the connection's error", method, err)
			}
			if seen.count("/hang") != 1 {
				t.Errorf("/hang reached the server %d times", seen.count("/hang"))
			}
		})
	}
}

// A GOAWAY that arrives right after a request's head went out, before the
// request's exchange is otherwise set up, must not close the session
// under it: the request is below the GOAWAY's id, the server processes
// it, and its answer arrives. (The client closes a going-away session
// once it has no exchange left; an exchange counted only after its head
// was written was missed, and the request died with the connection.)
func TestGoAwayJustAfterRequestSent(t *testing.T) {
	cs := newCertSet(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	releaseSlow := sync.OnceFunc(func() { close(release) })
	defer releaseSlow()
	var seen seenPaths
	srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, namedEcho("one", &seen, entered, release))
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), nil)
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	ctx := context.Background()
	drained := make(chan error, 1)
	var hookErr atomic.Pointer[error]
	fail := func(err error) { hookErr.Store(&err) }
	var once sync.Once
	cl.Client.testHookSent.Store(ptr(func() {
		once.Do(func() {
			// The server has the request, then announces GOAWAY, and the
			// client has it, all before the sender goes on.
			select {
			case <-entered:
			case <-time.After(safety):
				fail(errors.New("the request never reached the server"))
				return
			}
			go func() { drained <- srv.Drain(ctx) }()
			s := cl.cur.Load()
			deadline := time.Now().Add(safety)
			for !s.away.Load() {
				if time.Now().After(deadline) {
					fail(errors.New("no GOAWAY at the client"))
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}))
	var wg sync.WaitGroup
	defer wg.Wait()
	slow := goGet(&wg, cl, ctx, "/slow")
	waitFor(t, "the GOAWAY seen by the client", func() bool { s := cl.cur.Load(); return hookErr.Load() != nil || s == nil || s.away.Load() })
	releaseSlow()
	r := receive(t, "/slow", slow)
	if err := hookErr.Load(); err != nil {
		t.Fatal(*err)
	}
	if r.err != nil || r.status != 200 || r.body != "one GET /slow " {
		t.Fatalf("request sent just before the GOAWAY: %+v (%v), want the draining server's answer", r, r.err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if n := seen.count("/slow"); n != 1 {
		t.Errorf("/slow processed %d times", n)
	}
}
