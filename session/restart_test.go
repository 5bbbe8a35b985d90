package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// isStreamStateError reports whether err is quic-go's STREAM_STATE_ERROR,
// the connection error of issue 10 ("peer attempted to open stream 0").
func isStreamStateError(err error) bool {
	if te, ok := errors.AsType[*quic.TransportError](err); ok && te.ErrorCode == quic.StreamStateError {
		return true
	}
	return err != nil && strings.Contains(err.Error(), "STREAM_STATE_ERROR")
}

type getResult struct {
	status int
	body   string
	err    error
}

func doGet(rt http.RoundTripper, ctx context.Context, path string) getResult {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://server.test"+path, nil)
	if err != nil {
		return getResult{err: err}
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return getResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return getResult{status: resp.StatusCode, body: string(b), err: err}
}

// A server restart is a new process, with new TLS ticket keys: a client
// with ZeroRTT resumes its first reconnection with 0-RTT, which the new server
// rejects. A GET that rode that reconnection as early data must then be
// answered by the new server, and the reconnection must not fail. Before
// the fix it failed with STREAM_STATE_ERROR "peer attempted to open stream
// 0": http3 reset the rejected early stream (ReadResponse's error path
// calls CancelWrite) after quic-go had reset its stream maps for 1-RTT; as
// the stream had sent its FIN, quic-go's shutdown left its send side open,
// so the RESET_STREAM went out in 1-RTT, the server answered on a stream
// 0 the reset client had never opened, and the client closed the
// connection. The loop restarts the server several times; every round must
// have carried an early GET across a rejected 0-RTT handshake.
func TestRestartWithRejected0RTTReconnects(t *testing.T) {
	const rounds = 6
	cs := newCertSet(t)
	srvTLS := cs.serverTLS(t, "client.test", "server.test")
	srv := startServer(t, srvTLS, 0, echo)
	port := srv.port()
	tlsConf := cs.clientTLS(t, "server.test", cs.client(t, "client.test"))
	cache := &ticketCache{ClientSessionCache: tlsConf.ClientSessionCache}
	tlsConf.ClientSessionCache = cache

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// armed holds the round whose early GET the next early session carries.
	var armed atomic.Int32
	sent := make(chan int, rounds)
	results := make(chan getResult, rounds)
	cl := startClient(t, tlsConf, port, func(o *ClientOptions) {
		o.ZeroRTT = true
		// Long enough that an attempt outlives a loaded machine's restart.
		o.Transport.MaxIdleTimeout = 10 * time.Second
		o.ConnectInterval = 5 * time.Second
	})
	noHedging(cl.Client)
	cl.testHookEarly.Store(ptr(func() {
		round := armed.Swap(0)
		if round == 0 {
			return
		}
		wg.Go(func() {
			var once sync.Once // a retry on the next session writes it again
			tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { sent <- int(round) }) },
			})
			results <- doGet(cl, tctx, fmt.Sprintf("/early-%d", round))
		})
	}))

	var ticketsBefore int32 // tickets stored before the current server started
	for round := 1; round <= rounds; round++ {
		waitFor(t, "client ready", func() bool { return cl.State() == Ready })
		if r := doGet(cl, ctx, "/warm"); r.err != nil || r.status != 200 {
			t.Fatalf("round %d: request before the restart: %+v", round, r)
		}
		waitFor(t, "a session ticket from this server", func() bool { return cache.puts.Load() > ticketsBefore })

		armed.Store(int32(round))
		srv.stop()
		select {
		case got := <-sent:
			if got != round {
				t.Fatalf("early GET of round %d sent in round %d", got, round)
			}
		case r := <-results:
			t.Fatalf("round %d: early GET ended before it was sent: %+v", round, r)
		case <-time.After(safety):
			t.Fatalf("round %d: no early GET was sent on the reconnection", round)
		}
		// The new process: same port, new ticket keys (0-RTT rejected).
		ticketsBefore = cache.puts.Load()
		srv = startServer(t, srvTLS, port, echo)

		var r getResult
		select {
		case r = <-results:
		case <-time.After(safety):
			t.Fatalf("round %d: early GET did not finish", round)
		}
		want := fmt.Sprintf("GET /early-%d ", round)
		if r.err != nil || r.status != 200 || r.body != want {
			t.Errorf("round %d: early GET across the restart: status %d body %q err %v, want 200 %q", round, r.status, r.body, r.err, want)
		}
		waitFor(t, "client ready again", func() bool { return cl.State() == Ready })
		// The new server cannot read the old one's tickets: its first
		// connection is a full handshake (the 0-RTT was rejected).
		if est := srv.logs.find("connection established", nil); len(est) == 0 || est[0][KeyResumed] != false {
			t.Fatalf("round %d: the new server's first connection was resumed, 0-RTT was not rejected: %v", round, est)
		}
	}
	for _, tr := range cl.transitions() {
		if isStreamStateError(tr.Reason) {
			t.Errorf("%s -> %s (%s): %v", tr.From, tr.To, tr.Event, tr.Reason)
		}
	}
}

// noHedging makes the primary dial (the one that carries 0-RTT) the only
// dial of every attempt.
func noHedging(c *Client) { c.testNoHedge.Store(true) }

// By default (ZeroRTT off) a reconnection to the same server process
// resumes the TLS session but sends no early data, so no stream is opened
// before the handshake completed (quic-go issue 4303).
func TestNoEarlyDataByDefault(t *testing.T) {
	cs := newCertSet(t)
	srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, echo)
	tlsConf := cs.clientTLS(t, "server.test", cs.client(t, "client.test"))
	cache := &ticketCache{ClientSessionCache: tlsConf.ClientSessionCache}
	tlsConf.ClientSessionCache = cache
	cl := startClient(t, tlsConf, srv.port(), nil)
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	if r := doGet(cl, context.Background(), "/one"); r.err != nil || r.status != 200 {
		t.Fatalf("first request: %+v", r)
	}
	waitFor(t, "a session ticket", func() bool { return cache.puts.Load() > 0 })
	srv.closeConns() // same process, same ticket keys
	waitFor(t, "the second connection", func() bool { return len(srv.logs.find("connection established", nil)) == 2 })
	second := srv.logs.find("connection established", nil)[1]
	if second[KeyResumed] != true || second[KeyEarlyData] != false {
		t.Fatalf("reconnection: resumed=%v early_data=%v, want a resumed session without early data", second[KeyResumed], second[KeyEarlyData])
	}
	if cl.early.Load() != nil {
		t.Error("an early session was published")
	}
}
