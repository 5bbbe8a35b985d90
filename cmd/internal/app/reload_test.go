package app

import (
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/ptproxy/ptproxy/session"
)

// TestReloadSwitchesOriginWhileDownloadContinues: a reload that points the
// server at another origin sends new requests there at once, while a
// download already running from the first origin completes, byte for byte,
// on its own connection.
func TestReloadSwitchesOriginWhileDownloadContinues(t *testing.T) {
	release := make(chan struct{})
	first := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/download" {
			io.WriteString(w, "one")
			return
		}
		w.Header().Set("Content-Length", "200000")
		w.Write([]byte(strings.Repeat("a", 100000)))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte(strings.Repeat("b", 100000)))
	}))
	second := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "two") }))
	p := startPair(t, http.NotFoundHandler())
	// startPair's origin is a placeholder: point the server at the first
	// origin through a reload too, then at the second.
	reloadOrigin := func(addr string) ReloadResult {
		t.Helper()
		cfg := *p.server.live
		cfg.General.HTTPConnectAddress = addr
		res, err := p.server.Reload(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := reloadOrigin(first); !slices.Equal(res.Applied, []string{"general.http_connect_address"}) || len(res.Kept) != 0 {
		t.Fatalf("reload result %+v", res)
	}
	c := callerClient()
	resp, err := c.Get(p.url + "/download")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 100000)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}

	reloadOrigin(second)
	if got := getBody(t, c, p.url+"/x"); got != "two" {
		t.Fatalf("after the reload: %q, want the second origin", got)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(head)+string(rest) != strings.Repeat("a", 100000)+strings.Repeat("b", 100000) {
		t.Fatalf("download across the reload: %d+%d bytes, %v", len(head), len(rest), err)
	}
}

func getBody(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	_, body := getStatusBody(t, c, url)
	return body
}

// getStatusBody sends a GET and returns the status and the whole body.
func getStatusBody(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestReloadRefusedKeepsRunning: a reload whose certificate cannot be
// loaded is refused whole (the error names the file) and nothing changes;
// keys that need a restart are reported and keep their running value.
func TestReloadRefusedKeepsRunning(t *testing.T) {
	p := startPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	bad := *p.server.live
	bad.TLS.Cert = p.pki.path("missing.pem")
	bad.General.HTTPConnectAddress = "127.0.0.1:1"
	if _, err := p.server.Reload(&bad); !errors.Is(err, errReloadRefused) || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("reload with a missing certificate: %v", err)
	}
	if p.server.live.General.HTTPConnectAddress == bad.General.HTTPConnectAddress {
		t.Fatal("a refused reload changed the origin")
	}
	if got := getBody(t, callerClient(), p.url+"/"); got != "ok" {
		t.Fatalf("after the refused reload: %q", got)
	}

	restart := *p.client.live
	restart.System.ConnectInterval = 4321
	restart.Transport.FECRepair = 3
	restart.System.AddForwarded = true
	res, err := p.client.Reload(&restart)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Kept, []string{"transport.fec_repair", "system.connect_interval"}) || !slices.Equal(res.Applied, []string{"system.add_forwarded"}) {
		t.Fatalf("reload result %+v", res)
	}
	if p.client.live.System.ConnectInterval == 4321 || !p.client.live.System.AddForwarded {
		t.Fatalf("running configuration after the reload: %+v", p.client.live.System)
	}
	mode := *p.client.live
	mode.General.Mode = "Server"
	if _, err := p.client.Reload(&mode); !errors.Is(err, errReloadRefused) {
		t.Fatalf("a mode change was not refused: %v", err)
	}
}

// TestReloadCertificates: after the server reloads a certificate from
// another CA, the session already up keeps working; a new client that
// trusts only the old CA is refused at its handshake, and one that trusts
// the new CA connects. The client side's reload of its CA lets it
// reconnect to the new certificate.
func TestReloadCertificates(t *testing.T) {
	p := startPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	p2 := newTestPKI(t) // another CA, same names
	cfg := *p.server.live
	cfg.TLS.Cert, cfg.TLS.Key = p2.path("server.pem"), p2.path("server-key.pem")
	res, err := p.server.Reload(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Applied, []string{"tls.cert", "tls.key"}) {
		t.Fatalf("reload result %+v", res)
	}
	if got := getBody(t, callerClient(), p.url+"/"); got != "ok" {
		t.Fatalf("the running session after the reload: %q", got)
	}
	port := p.server.QUICAddr().(*net.UDPAddr).Port

	oldTrust, _ := newTestLogger(t)
	stale := startInstance(t, p.pki.clientConfig(port), oldTrust)
	newTrustCfg := p.pki.clientConfig(port)
	newTrustCfg.TLS.CA = p2.path("ca.pem")
	newTrust, _ := newTestLogger(t)
	fresh := startInstance(t, newTrustCfg, newTrust)
	waitReady(t, fresh)
	if st := stale.Client().State(); st == session.Ready {
		t.Fatal("a client trusting only the old CA got a session with the new certificate")
	}

	// The stale client reloads its CA and connects on its next attempt.
	scfg := *stale.live
	scfg.TLS.CA = p2.path("ca.pem")
	if _, err := stale.Reload(&scfg); err != nil {
		t.Fatal(err)
	}
	waitReady(t, stale)
	if got := getBody(t, callerClient(), "http://"+stale.HTTPAddr().String()+"/"); got != "ok" {
		t.Fatalf("after the client's reload: %q", got)
	}
}

// TestReloadRevokesClients: a server reload that stops accepting a client
// closes that client's connection at once (and its reconnection is
// refused), while the connections of clients still accepted stay up:
// first by removing a name from general.peer_hostnames, then by a CA that
// no longer signs the other client's certificate.
func TestReloadRevokesClients(t *testing.T) {
	p := newTestPKI(t)
	opsCert, opsKey := p.issueLeaf(t, "ops", x509.ExtKeyUsageClientAuth, "ops.test")
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	scfg := p.serverConfig(origin)
	scfg.General.PeerHostnames = []string{"ops.test"}
	slog, slb := newTestLogger(t)
	server := startInstance(t, scfg, slog)
	port := server.QUICAddr().(*net.UDPAddr).Port

	alog, alb := newTestLogger(t)
	app := startInstance(t, p.clientConfig(port), alog)
	ocfg := p.clientConfig(port)
	ocfg.TLS.Cert, ocfg.TLS.Key = opsCert, opsKey
	olog, _ := newTestLogger(t)
	opsClient := startInstance(t, ocfg, olog)
	waitReady(t, app)
	waitReady(t, opsClient)
	for _, c := range []*Instance{app, opsClient} {
		if got := getBody(t, callerClient(), "http://"+c.HTTPAddr().String()+"/"); got != "ok" {
			t.Fatalf("before the reload: %q", got)
		}
	}
	lost := func(lb *logBuffer) int {
		n := 0
		for _, r := range lb.records() {
			if r["event"] == "lost" {
				n++
			}
		}
		return n
	}

	// ops.test is no longer an accepted name.
	cfg := *server.live
	cfg.General.PeerHostnames = nil
	res, err := server.Reload(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Applied, "general.peer_hostnames") || slices.Contains(res.Kept, "general.peer_hostnames") {
		t.Fatalf("reload result %+v, want general.peer_hostnames applied", res)
	}
	if !slb.contains("closing connection: the client is no longer accepted", "ops.test") {
		t.Error("no WARN line naming the refused identity")
	}
	eventually(t, "the ops client's session closed", func() bool { return opsClient.Client().State() != session.Ready })
	eventually(t, "the ops client's reconnection refused", func() bool { return slb.contains("handshake refused", "ops.test") })
	if code, _ := getStatusBody(t, callerClient(), "http://"+opsClient.HTTPAddr().String()+"/"); code != http.StatusServiceUnavailable {
		t.Errorf("a request through the refused client: %d, want 503", code)
	}
	if got := getBody(t, callerClient(), "http://"+app.HTTPAddr().String()+"/"); got != "ok" || lost(alb) != 0 {
		t.Fatalf("the accepted client after the reload: %q, %d sessions lost", got, lost(alb))
	}

	// A CA that did not sign client.test's certificate.
	other := newTestPKI(t)
	cfg2 := *server.live
	cfg2.TLS.CA = other.path("ca.pem")
	if _, err := server.Reload(&cfg2); err != nil {
		t.Fatal(err)
	}
	if !slb.contains("closing connection: the client is no longer accepted", clientName, "unknown authority") {
		t.Error("no WARN line naming the client and its unknown authority")
	}
	eventually(t, "the client's session closed", func() bool { return lost(alb) == 1 })
}
