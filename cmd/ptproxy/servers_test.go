package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ptproxy/ptproxy/session/nettest"
	"github.com/ptproxy/ptproxy/session/pki"
)

// TestSystemdStatusSeveralServers: a client process with two servers tells
// systemd one STATUS line with every session's state: both ready, then,
// once the second server stopped, the second no longer ready while the
// first stays ready and requests still pass.
func TestSystemdStatusSeveralServers(t *testing.T) {
	origin := startOrigin(t)
	s := writeConfigs(t, origin.addr, 1000)
	sv2, err := s.ca.Server("server2.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFiles(filepath.Join(s.dir, "s2"), s.ca, map[string]*pki.Leaf{"server2": sv2}); err != nil {
		t.Fatal(err)
	}
	port2 := nettest.FreePort(t, "udp")
	server, err := os.ReadFile(s.serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	server2 := strings.NewReplacer(fmt.Sprintf("quic_port = %d", s.quicPort), fmt.Sprintf("quic_port = %d", port2),
		`cert = "server.pem"`, `cert = "s2/server2.pem"`, `key = "server-key.pem"`, `key = "s2/server2-key.pem"`).Replace(string(server))
	server2Cfg := filepath.Join(s.dir, "server2.toml")
	client, err := os.ReadFile(s.client)
	if err != nil {
		t.Fatal(err)
	}
	clientCfg := string(client) + fmt.Sprintf(`
[[servers]]
peer_hostname = "server2.test"
connect_address = "127.0.0.1"
quic_port = %d
`, port2)
	for path, body := range map[string]string{server2Cfg: server2, s.client: clientCfg} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	startProc(t, "server", s.serverCfg)
	srv2 := startProc(t, "server2", server2Cfg)
	sock := newNotifySock(t)
	startProc(t, "client", s.client, sdEnv(sock)...)

	const bothReady = "STATUS=tunnels: server.test ready, server2.test ready"
	eventually(t, "both sessions ready in STATUS", func() bool { return sock.index(bothReady) >= 0 })
	if sock.index("READY=1") < 0 {
		t.Error("no READY=1 with both sessions ready")
	}

	srv2.signal(t, syscall.SIGTERM)
	if code := srv2.exitCode(t); code != 0 {
		t.Fatalf("server2 exit %d", code)
	}
	// A later line has the first ready and the second in another state.
	eventually(t, "STATUS with the second server gone", func() bool {
		msgs := sock.all()
		for _, m := range msgs[sock.index(bothReady)+1:] {
			for _, l := range strings.Split(m, "\n") {
				if rest, ok := strings.CutPrefix(l, "STATUS=tunnels: server.test ready, server2.test "); ok && !strings.HasPrefix(rest, "ready") {
					return true
				}
			}
		}
		return false
	})
	r := <-fire(s.httpAddr, "/fast", 1)
	if r.err != nil || r.status != 200 || r.body != "done /fast" {
		t.Fatalf("request with one server left: %d %q %v", r.status, r.body, r.err)
	}
}
