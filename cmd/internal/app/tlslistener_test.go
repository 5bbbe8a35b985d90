package app

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ptproxy/ptproxy/session/pki"
)

// TestEndToEndTLSListener: with tls.listener_cert the client's listener
// speaks HTTPS to local callers (Forwarded says proto=https), refuses plain
// HTTP, and a reload with a new certificate is what the next handshake
// presents.
func TestEndToEndTLSListener(t *testing.T) {
	var forwarded atomic.Value
	p := &pair{pki: newTestPKI(t)}
	p.origin = startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Store(r.Header.Get("Forwarded"))
		io.WriteString(w, "ok")
	}))
	leaf := func(name string) (string, string) {
		l, err := p.pki.ca.Leaf(pki.LeafOptions{Names: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return p.pki.writeLeaf(t, name, l)
	}
	cert1, key1 := leaf("listener1")
	slog, _ := newTestLogger(t)
	p.server = startInstance(t, p.pki.serverConfig(p.origin), slog)
	ccfg := p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port)
	ccfg.TLS.ListenerCert, ccfg.TLS.ListenerKey = cert1, key1
	ccfg.System.AddForwarded = true
	clog, _ := newTestLogger(t)
	p.client = startInstance(t, ccfg, clog)
	waitReady(t, p.client)
	addr := p.client.HTTPAddr().String()

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.pki.ca.CertPEM)
	var seen *x509.Certificate
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{
		RootCAs: roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			seen = cs.PeerCertificates[0]
			return nil
		},
	}}}
	if got := getBody(t, c, "https://"+addr+"/"); got != "ok" {
		t.Fatalf("over HTTPS: %q", got)
	}
	if f, _ := forwarded.Load().(string); !strings.Contains(f, "proto=https") {
		t.Fatalf("Forwarded %q, want proto=https", f)
	}
	first := seen.SerialNumber

	if resp, err := callerClient().Get("http://" + addr + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP accepted on the TLS listener")
		}
	}

	cert2, key2 := leaf("listener2")
	cfg := *p.client.live
	cfg.TLS.ListenerCert, cfg.TLS.ListenerKey = cert2, key2
	if _, err := p.client.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	if got := getBody(t, c, "https://"+addr+"/"); got != "ok" {
		t.Fatalf("over HTTPS after the reload: %q", got)
	}
	if seen.SerialNumber.Cmp(first) == 0 {
		t.Fatal("the handshake after the reload presented the old certificate")
	}
}
