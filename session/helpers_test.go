package session

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/nettest"
	"github.com/ptproxy/ptproxy/session/pki"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// safety is the generous deadline of every wait: a safety net, not a
// timing assertion.
const safety = 30 * time.Second

// logBuf is a goroutine-safe buffer behind a JSON slog handler.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the parsed JSON log records.
func (b *logBuf) records() []map[string]any {
	b.mu.Lock()
	data := b.buf.String()
	b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(data, "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err == nil {
			out = append(out, r)
		}
	}
	return out
}

func (b *logBuf) find(msg string, match func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	for _, r := range b.records() {
		if r["msg"] == msg && (match == nil || match(r)) {
			out = append(out, r)
		}
	}
	return out
}

func newLogger(t *testing.T) (*slog.Logger, *logBuf) {
	b := &logBuf{}
	var w io.Writer = b
	if testing.Verbose() {
		w = io.MultiWriter(b, os.Stderr)
	}
	t.Cleanup(func() {
		if t.Failed() && !testing.Verbose() {
			b.mu.Lock()
			t.Logf("log:\n%s", b.buf.String())
			b.mu.Unlock()
		}
	})
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(safety)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// certSet writes a CA, a server leaf and a client leaf into a temp dir.
type certSet struct {
	dir string
	ca  *pki.CA
}

func newCertSet(t *testing.T) *certSet {
	t.Helper()
	ca, err := pki.NewCA("ptproxy test CA")
	if err != nil {
		t.Fatal(err)
	}
	cs := &certSet{dir: t.TempDir(), ca: ca}
	if err := os.WriteFile(cs.path("ca.pem"), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return cs
}

func (cs *certSet) path(name string) string { return filepath.Join(cs.dir, name) }

func (cs *certSet) write(t *testing.T, name string, l *pki.Leaf) (cert, key string) {
	t.Helper()
	cert, key = cs.path(name+".pem"), cs.path(name+"-key.pem")
	if err := os.WriteFile(cert, l.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, l.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (cs *certSet) serverTLS(t *testing.T, peer string, names ...string) *tls.Config {
	t.Helper()
	l, err := cs.ca.Server(names...)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := cs.write(t, "server", l)
	cfg, err := ServerTLS(cs.path("ca.pem"), cert, key, peer)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (cs *certSet) clientTLS(t *testing.T, peer string, l *pki.Leaf) *tls.Config {
	t.Helper()
	cert, key := cs.write(t, "client", l)
	cfg, err := ClientTLS(cs.path("ca.pem"), cert, key, peer)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (cs *certSet) client(t *testing.T, names ...string) *pki.Leaf {
	t.Helper()
	l, err := cs.ca.Client(names...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var testTransport = Transport{
	MaxIdleTimeout:       2 * time.Second,
	KeepAliveInterval:    500 * time.Millisecond,
	MaxConcurrentStreams: 100,
	StreamReceiveWindow:  1 << 20,
	ReceiveWindow:        4 << 20,
}

// echo answers with the method, path and body it received.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
})

type testServer struct {
	*Server
	logs   *logBuf
	errc   chan error
	cancel context.CancelFunc
}

func startServer(t *testing.T, tlsConf *tls.Config, port int, h http.Handler) *testServer {
	t.Helper()
	return startServerMod(t, tlsConf, port, h, nil)
}

// startServerMod is startServer with options changed by mod.
func startServerMod(t *testing.T, tlsConf *tls.Config, port int, h http.Handler, mod func(*ServerOptions)) *testServer {
	t.Helper()
	if port == 0 {
		port = nettest.FreePort(t, "udp")
	}
	log, logs := newLogger(t)
	o := ServerOptions{
		BindAddress: "127.0.0.1", Port: port, TLS: tlsConf, Transport: testTransport,
		Handler: httpHandler(h), Logger: log.With("side", "server"), PeerHostname: "client.test",
	}
	if mod != nil {
		mod(&o)
	}
	s, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, logs: logs, errc: make(chan error, 1), cancel: cancel}
	go func() { ts.errc <- s.Serve(ctx) }()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) port() int { return ts.Addr().(*net.UDPAddr).Port }

// stop closes the server and waits for Serve; idempotent.
func (ts *testServer) stop() {
	ts.cancel()
	select {
	case <-ts.errc:
	case <-time.After(safety):
		panic("server Serve did not return")
	}
	ts.errc <- nil // keep stop idempotent
}

type testClient struct {
	*Client
	logs *logBuf
	errc chan error
	stop context.CancelFunc

	mu    sync.Mutex
	trans []Transition
}

func startClient(t *testing.T, tlsConf *tls.Config, port int, mod func(*ClientOptions)) *testClient {
	t.Helper()
	log, logs := newLogger(t)
	tc := &testClient{logs: logs, errc: make(chan error, 1)}
	o := ClientOptions{
		PeerHostname: "server.test", ConnectAddress: "127.0.0.1", Port: port, BindAddress: "127.0.0.1",
		TLS: tlsConf, Transport: testTransport, ConnectInterval: 200 * time.Millisecond,
		Logger: log.With("side", "client"),
		OnTransition: func(tr Transition) {
			tc.mu.Lock()
			tc.trans = append(tc.trans, tr)
			tc.mu.Unlock()
		},
	}
	if mod != nil {
		mod(&o)
	}
	c, err := NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	tc.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	tc.stop = cancel
	go func() { tc.errc <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-tc.errc:
		case <-time.After(safety):
			t.Error("client Run did not return")
		}
	})
	return tc
}

// readyRecorded reports that the client is ready and its hook has
// recorded the transition there: the state machine makes a state visible
// before it calls the hook, so State alone can run ahead of transitions.
func (tc *testClient) readyRecorded() bool {
	if tc.State() != Ready {
		return false
	}
	tr := tc.transitions()
	return len(tr) > 0 && tr[len(tr)-1].To == Ready
}

func (tc *testClient) transitions() []Transition {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return append([]Transition(nil), tc.trans...)
}

// failReasons returns the reasons of all fail transitions.
func (tc *testClient) failReasons() []string {
	var out []string
	for _, tr := range tc.transitions() {
		if tr.Event == EvFail && tr.Reason != nil {
			out = append(out, tr.Reason.Error())
		}
	}
	return out
}

func get(t *testing.T, rt http.RoundTripper, path, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "https://server.test"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return rt.RoundTrip(req)
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

func slogJSON(b *logBuf) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func slogJSONW(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, nil))
}

// relaySockets opens the two sockets of a test relay in front of server:
// ln, where the client sends, and up, connected to the server.
func relaySockets(t *testing.T, server *net.UDPAddr) (ln, up *net.UDPConn) {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err = net.DialUDP("udp", nil, server)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	return ln, up
}
