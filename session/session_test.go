package session

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/nettest"
	"github.com/ptproxy/ptproxy/session/pki"
)

func TestRoundTripMutualTLS(t *testing.T) {
	cs := newCertSet(t)
	srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, echo)
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), nil)

	<-cl.FirstAttemptDone()
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	resp, err := get(t, cl, "/hello", "ping")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := readBody(t, resp); got != "POST /hello ping" {
		t.Fatalf("body %q", got)
	}
	if st, ok := cl.ConnStats(); !ok || st.SmoothedRTT <= 0 {
		t.Errorf("ConnStats = %+v, %v", st, ok)
	}
	if cl.LocalAddr() == nil {
		t.Error("no LocalAddr")
	}
	waitFor(t, "server connection log", func() bool {
		recs := srv.logs.find("connection established", nil)
		return len(recs) >= 1 && strings.Contains(recs[0][KeySubject].(string), "client.test")
	})
	// Several peers at once.
	cl2 := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), nil)
	waitFor(t, "second client ready", func() bool { return cl2.State() == Ready })
	resp2, err := get(t, cl2, "/two", "")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp2)
	waitFor(t, "two server connections", func() bool { return len(srv.logs.find("connection established", nil)) == 2 })

	// The transition log: idle->connecting->ready, once each.
	recs := cl.logs.find("session ready", nil)
	if len(recs) != 1 || recs[0][KeyEvent] != "established" || recs[0][KeyPeer] != "server.test" {
		t.Fatalf("ready transition log: %v", recs)
	}
}

// An IP literal as peer_hostname works for SNI-less verification.
func TestPeerHostnameIPLiteral(t *testing.T) {
	cs := newCertSet(t)
	srv := startServer(t, cs.serverTLS(t, "127.0.0.1", "127.0.0.1"), 0, echo)
	cl := startClient(t, cs.clientTLS(t, "127.0.0.1", cs.client(t, "127.0.0.1")), srv.port(), func(o *ClientOptions) {
		o.PeerHostname = "127.0.0.1"
	})
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	resp, err := get(t, cl, "/ip", "")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
}

func TestServerCertFromOtherCA(t *testing.T) {
	good, other := newCertSet(t), newCertSet(t)
	srv := startServer(t, other.serverTLS(t, "client.test", "server.test"), 0, echo)
	// The client trusts only good's CA; its own cert is valid for the server... irrelevant.
	cl := startClient(t, good.clientTLS(t, "server.test", good.client(t, "client.test")), srv.port(), nil)
	<-cl.FirstAttemptDone()
	reasons := cl.failReasons()
	if len(reasons) == 0 || !strings.Contains(reasons[0], "unknown authority") {
		t.Fatalf("fail reasons %q, want unknown authority", reasons)
	}
	_, err := get(t, cl, "/", "")
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("RoundTrip err = %v", err)
	}
	if cl.State() == Ready {
		t.Fatal("client became ready")
	}
}

// refusedClient runs a client with clientLeaf (nil = no certificate) and
// waits for the server's Warn line containing want.
func refusedClient(t *testing.T, mkLeaf func(*certSet) *pki.Leaf, want string) {
	t.Helper()
	cs := newCertSet(t)
	srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, echo)
	var cfgLeaf *pki.Leaf
	if mkLeaf != nil {
		cfgLeaf = mkLeaf(cs)
	} else {
		cfgLeaf = cs.client(t, "client.test")
	}
	tlsConf := cs.clientTLS(t, "server.test", cfgLeaf)
	if mkLeaf == nil {
		tlsConf.Certificates = nil
	}
	cl := startClient(t, tlsConf, srv.port(), nil)

	waitFor(t, "server refusal log", func() bool {
		return len(srv.logs.find("handshake refused", nil)) > 0
	})
	<-cl.FirstAttemptDone()
	waitFor(t, "client fail transition", func() bool { return len(cl.failReasons()) > 0 })
	cl.stop()
	recs := srv.logs.find("handshake refused", nil)
	r := recs[0]
	if r["level"] != "WARN" || !strings.Contains(r[KeyReason].(string), want) || !strings.HasPrefix(r[KeyRemoteAddr].(string), "127.0.0.1:") {
		t.Fatalf("refusal record %v, want reason containing %q", r, want)
	}
	// Once per handshake: never more refusals than client attempts.
	attempts := 0
	for _, tr := range cl.transitions() {
		if tr.Event == EvDial {
			attempts++
		}
	}
	if n := len(srv.logs.find("handshake refused", nil)); n > attempts {
		t.Errorf("%d refusal lines for %d attempts", n, attempts)
	}
	if len(srv.logs.find("connection established", nil)) != 0 {
		t.Error("refused client got a connection")
	}
	for _, tr := range cl.transitions() {
		if tr.To == Ready {
			t.Fatalf("refused client reached ready: %+v", tr)
		}
	}
}

func TestClientCertForOtherName(t *testing.T) {
	refusedClient(t, func(cs *certSet) *pki.Leaf { return cs.client(t, "intruder.test") },
		`client certificate for "intruder.test" does not match peer_hostname "client.test"`)
}

func TestNoClientCert(t *testing.T) {
	refusedClient(t, nil, "no client certificate")
}

func TestExpiredClientCert(t *testing.T) {
	refusedClient(t, func(cs *certSet) *pki.Leaf {
		l, err := cs.ca.Leaf(pki.LeafOptions{
			Names:       []string{"client.test"},
			NotBefore:   time.Now().Add(-48 * time.Hour),
			NotAfter:    time.Now().Add(-24 * time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}, "expired")
}

func TestClientCertFromOtherCA(t *testing.T) {
	refusedClient(t, func(cs *certSet) *pki.Leaf {
		other, err := pki.NewCA("other")
		if err != nil {
			t.Fatal(err)
		}
		l, err := other.Client("client.test")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}, "unknown authority")
}

func TestNotReadyImmediately(t *testing.T) {
	cs := newCertSet(t)
	port := nettest.FreePort(t, "udp") // nobody listens
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), port, func(o *ClientOptions) {
		o.Transport.MaxIdleTimeout = 300 * time.Millisecond
	})
	// Before the first attempt ended: still ErrNotReady, never blocking.
	_, err := get(t, cl, "/", "")
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v, want ErrNotReady", err)
	}
	<-cl.FirstAttemptDone()
	_, err = get(t, cl, "/", "")
	var nre *NotReadyError
	if !errors.Is(err, ErrNotReady) || !errors.As(err, &nre) || nre.Reason == nil {
		t.Fatalf("err = %v, want NotReadyError with reason", err)
	}
	if !strings.HasPrefix(err.Error(), "tunnel not established: ") || err.Error() == "tunnel not established: " {
		t.Fatalf("message %q lacks the reason", err)
	}
	if cl.LastError() == nil {
		t.Error("LastError nil after a failed attempt")
	}
}

func TestResolverCalledEveryAttempt(t *testing.T) {
	cs := newCertSet(t)
	port := nettest.FreePort(t, "udp")
	var calls atomic.Int32
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), port, func(o *ClientOptions) {
		o.ConnectAddress = "tunnel.example"
		o.Transport.MaxIdleTimeout = 200 * time.Millisecond
		o.ConnectInterval = 50 * time.Millisecond
		o.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			if host != "tunnel.example" {
				t.Errorf("resolver asked for %q", host)
			}
			calls.Add(1)
			return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
		}
	})
	waitFor(t, "three attempts", func() bool {
		dials := 0
		for _, tr := range cl.transitions() {
			if tr.Event == EvDial {
				dials++
			}
		}
		return dials >= 3 && len(cl.failReasons()) >= 3
	})
	cl.stop()
	<-cl.errc
	cl.errc <- nil
	dials := 0
	for _, tr := range cl.transitions() {
		if tr.Event == EvDial {
			dials++
		}
	}
	if int(calls.Load()) != dials {
		t.Fatalf("resolver called %d times for %d attempts", calls.Load(), dials)
	}
	for _, r := range cl.failReasons() {
		if strings.Contains(r, "no address usable") {
			t.Fatalf("bind-family filter rejected 127.0.0.1: %s", r)
		}
	}
}

func TestReconnectAfterServerRestart(t *testing.T) {
	cs := newCertSet(t)
	srvTLS := cs.serverTLS(t, "client.test", "server.test")
	srv1 := startServer(t, srvTLS, 0, echo)
	port := srv1.port()
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), port, func(o *ClientOptions) {
		o.Transport.MaxIdleTimeout = 500 * time.Millisecond
	})
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	resp, err := get(t, cl, "/one", "")
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)

	srv1.stop()
	waitFor(t, "lost transition", func() bool {
		for _, tr := range cl.transitions() {
			if tr.Event == EvLost {
				return true
			}
		}
		return false
	})
	var lost Transition
	for _, tr := range cl.transitions() {
		if tr.Event == EvLost {
			lost = tr
		}
	}
	if !errors.Is(lost.Reason, ErrServerClosed) {
		t.Errorf("lost reason %v, want %v", lost.Reason, ErrServerClosed)
	}

	srv2 := startServer(t, srvTLS, port, echo)
	_ = srv2
	waitFor(t, "client ready again", func() bool {
		if cl.State() != Ready {
			return false
		}
		resp, err := get(t, cl, "/two", "x")
		if err != nil {
			return false
		}
		return readBody(t, resp) == "POST /two x"
	})
	// The state snapshot is stored before the transition hook runs, so a
	// request can succeed on the new session before the hook recorded it:
	// the second "established" is awaited, not sampled.
	waitFor(t, "the second established transition", func() bool {
		established := 0
		for _, tr := range cl.transitions() {
			if tr.Event == EvEstablished {
				established++
			}
		}
		return established >= 2
	})
}

// slowHandler blocks each request until release is closed.
type slowHandler struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newSlow() *slowHandler {
	return &slowHandler{entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *slowHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(func() { close(h.entered) })
	<-h.release
	w.WriteHeader(http.StatusOK)
	w.Write([]byte("slow done"))
}

func TestClientDrainWaitsForInflight(t *testing.T) {
	cs := newCertSet(t)
	h := newSlow()
	srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, h)
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), nil)
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })

	type result struct {
		body string
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := get(t, cl, "/slow", "")
		if err != nil {
			resc <- result{err: err}
			return
		}
		resc <- result{body: readBody(t, resp)}
	}()
	<-h.entered

	drainc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		drainc <- cl.Drain(ctx)
	}()
	waitFor(t, "client draining", func() bool { return cl.State() == Draining })
	if _, err := get(t, cl, "/new", ""); !errors.Is(err, ErrDraining) {
		t.Fatalf("new request during drain: %v, want ErrDraining", err)
	}
	select {
	case err := <-drainc:
		t.Fatalf("Drain returned before the in-flight request ended: %v", err)
	default:
	}
	close(h.release)
	r := <-resc
	if r.err != nil || r.body != "slow done" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	if err := <-drainc; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if cl.State() != Stopped {
		t.Fatalf("state %s, want stopped", cl.State())
	}
	if err := <-cl.errc; err != nil {
		t.Fatalf("Run after Drain: %v", err)
	}
	cl.errc <- nil
}

func TestServerDrainWaitsForInflight(t *testing.T) {
	cs := newCertSet(t)
	h := newSlow()
	srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, h)
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), nil)
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })

	resc := make(chan string, 1)
	go func() {
		resp, err := get(t, cl, "/slow", "")
		if err != nil {
			resc <- "error: " + err.Error()
			return
		}
		resc <- readBody(t, resp)
	}()
	<-h.entered
	drainc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		drainc <- srv.Drain(ctx)
	}()
	waitFor(t, "server draining", func() bool { return srv.State() == Draining })
	select {
	case err := <-drainc:
		t.Fatalf("Drain returned before the handler ended: %v", err)
	default:
	}
	close(h.release)
	if got := <-resc; got != "slow done" {
		t.Fatalf("in-flight request got %q", got)
	}
	if err := <-drainc; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if srv.State() != Stopped {
		t.Fatalf("server state %s", srv.State())
	}
	// The client learns at once and reports a clean reason.
	waitFor(t, "client lost", func() bool {
		for _, tr := range cl.transitions() {
			if tr.Event == EvLost {
				return errors.Is(tr.Reason, ErrServerGoaway) || errors.Is(tr.Reason, ErrServerClosed)
			}
		}
		return false
	})
}

func TestServerCloseBeforeListen(t *testing.T) {
	cs := newCertSet(t)
	s, err := NewServer(ServerOptions{TLS: cs.serverTLS(t, "client.test", "server.test"), Handler: httpHandler(echo), Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.State() != Stopped {
		t.Fatalf("state %s", s.State())
	}
	if err := s.Listen(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Listen after Close: %v", err)
	}
}

func TestClientCloseWithoutRun(t *testing.T) {
	cs := newCertSet(t)
	c, err := NewClient(ClientOptions{PeerHostname: "server.test", BindAddress: "127.0.0.1",
		TLS: cs.clientTLS(t, "server.test", cs.client(t, "client.test")), Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if c.State() != Stopped {
		t.Fatalf("state %s", c.State())
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	if _, err := c.RoundTrip(&http.Request{}); !errors.Is(err, ErrDraining) {
		t.Fatalf("RoundTrip after Close: %v", err)
	}
}
