package app

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session"
	"github.com/ptproxy/ptproxy/session/pki"
)

// Names the test certificates are issued for.
const (
	clientName = "client.test"
	serverName = "server.test"
)

// testPKI is a CA with certificates written to files, as a deployment has.
type testPKI struct {
	dir string
	ca  *pki.CA
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	return newTestPKIAt(t, time.Time{})
}

// newTestPKIAt is newTestPKI with every certificate valid from notBefore
// (zero: an hour ago), the CA for ten years and the leaves for one, so that
// output showing their dates is reproducible.
func newTestPKIAt(t testing.TB, notBefore time.Time) *testPKI {
	t.Helper()
	ca, err := pki.NewCAWith(pki.CAOptions{CommonName: "test CA", NotBefore: notBefore})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: t.TempDir(), ca: ca}
	cl, err := ca.Leaf(pki.LeafOptions{Names: []string{clientName}, NotBefore: notBefore, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ca.Leaf(pki.LeafOptions{Names: []string{serverName}, NotBefore: notBefore, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFiles(p.dir, ca, map[string]*pki.Leaf{"client": cl, "server": sv}); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPKI) path(name string) string { return filepath.Join(p.dir, name) }

// issueLeaf issues a leaf for names with one extended key usage from the
// test CA, writes it under name and returns its paths.
func (p *testPKI) issueLeaf(t testing.TB, name string, usage x509.ExtKeyUsage, names ...string) (cert, key string) {
	t.Helper()
	l, err := p.ca.Leaf(pki.LeafOptions{Names: names, ExtKeyUsage: []x509.ExtKeyUsage{usage}})
	if err != nil {
		t.Fatal(err)
	}
	return p.writeLeaf(t, name, l)
}

// writeLeaf writes an extra leaf (for negative tests) and returns its paths.
func (p *testPKI) writeLeaf(t testing.TB, name string, l *pki.Leaf) (cert, key string) {
	t.Helper()
	dir := filepath.Join(p.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, l.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, l.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (p *testPKI) serverConfig(origin string) *config.Config {
	c := config.Defaults()
	c.General.Mode = config.ModeServer
	c.General.PeerHostname = clientName
	c.General.BindAddress = "127.0.0.1"
	c.General.QUICPort = 0
	c.General.HTTPConnectAddress = origin
	c.General.HTTPBindAddress = ""
	c.TLS = config.TLS{CA: p.path("ca.pem"), Cert: p.path("server.pem"), Key: p.path("server-key.pem")}
	return &c
}

func (p *testPKI) clientConfig(quicPort int) *config.Config {
	c := config.Defaults()
	c.General.Mode = config.ModeClient
	c.General.PeerHostname = serverName
	c.General.ConnectAddress = "127.0.0.1"
	c.General.BindAddress = "127.0.0.1"
	c.General.QUICPort = quicPort
	c.General.HTTPBindAddress = "127.0.0.1:0"
	c.TLS = config.TLS{CA: p.path("ca.pem"), Cert: p.path("client.pem"), Key: p.path("client-key.pem")}
	// Fast retries keep the tests short; nothing asserts on durations.
	c.System.ConnectInterval = 100
	// Requests without a session are answered 503 at once (the tests of
	// the 503 path); TestEndToEndRequestWaitsForSession sets a wait.
	c.System.SessionWaitTimeout = 0
	return &c
}

// logBuffer collects JSON log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) records() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// contains reports whether some record's text (all values) mentions every
// one of the words.
func (l *logBuffer) contains(words ...string) bool {
	for _, r := range l.records() {
		b, _ := json.Marshal(r)
		s := string(b)
		all := true
		for _, w := range words {
			if !strings.Contains(s, w) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func newTestLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	h := slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", lb.buf.String())
		}
	})
	return slog.New(h), lb
}

func startInstance(t testing.TB, cfg *config.Config, log *slog.Logger) *Instance {
	t.Helper()
	in, err := Start(cfg, log)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.General.Mode, err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

// eventually polls cond until it holds; the deadline is a safety net for a
// hung test, not an assertion about speed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitReady(t testing.TB, client *Instance) {
	t.Helper()
	eventually(t, "tunnel ready", func() bool { return client.Client().State() == session.Ready })
}

// pair is a running origin, server and client.
type pair struct {
	pki            *testPKI
	origin         string
	server, client *Instance
	serverLog      *logBuffer
	clientLog      *logBuffer
	url            string
}

func startPair(t testing.TB, origin http.Handler) *pair {
	t.Helper()
	p := &pair{pki: newTestPKI(t)}
	p.origin = startOrigin(t, origin)
	slog, slb := newTestLogger(t)
	p.serverLog = slb
	p.server = startInstance(t, p.pki.serverConfig(p.origin), slog)
	clog, clb := newTestLogger(t)
	p.clientLog = clb
	p.client = startInstance(t, p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port), clog)
	waitReady(t, p.client)
	p.url = "http://" + p.client.HTTPAddr().String()
	return p
}

// startOrigin serves h on loopback with net/http.
func startOrigin(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	})
	return ln.Addr().String()
}

// callerClient is the app talking to the client side; no proxy from the
// environment, and no transparent decompression.
func callerClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 200}}
}
