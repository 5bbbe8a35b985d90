package pairs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/config"
)

func testEnv(t *testing.T, serverNS string) *Env {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	os.MkdirAll(certs, 0o755)
	for _, f := range []string{"ca.pem", ClientName + "-client.pem", ClientName + "-client-key.pem", ServerName + ".pem", ServerName + "-key.pem"} {
		os.WriteFile(filepath.Join(certs, f), []byte("-----BEGIN X-----\n-----END X-----\n"), 0o600)
	}
	e := &Env{Work: dir, Certs: certs, ServerIP: "127.0.0.1", OriginPort: 21080, PortBase: 21000,
		Bins:            Bins{Ptproxy: "/bin/ptproxy", Nginx: "/usr/sbin/nginx", Caddy: "/bin/caddy", HAProxy: "/usr/sbin/haproxy"},
		ConnectInterval: 700 * time.Millisecond, PtproxyEnv: []string{"GOMAXPROCS=1"}}
	if serverNS != "" {
		e.ClientNS, e.ServerNS, e.ServerIP = "ptb-a", serverNS, "10.201.0.2"
	}
	return e
}

func TestBuildEveryPair(t *testing.T) {
	for _, ns := range []string{"", "ptb-b"} {
		e := testEnv(t, ns)
		for i, name := range All {
			p, err := Build(e, name)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if name == Direct {
				if p.Server != nil || p.Addr != e.ServerIP+":21080" {
					t.Fatalf("direct: %+v", p)
				}
				continue
			}
			if want := "127.0.0.1:" + []string{"", "21180", "21280", "21380", "21480", "21580"}[i]; p.Addr != want {
				t.Errorf("%s listens on %s, want %s", name, p.Addr, want)
			}
			if p.Server.NS != e.ServerNS || p.Client.NS != e.ClientNS {
				t.Errorf("%s: namespaces %q %q", name, p.Server.NS, p.Client.NS)
			}
			if ns != "" && !strings.Contains(p.Client.CommandLine(), "ip netns exec ptb-a ") {
				t.Errorf("%s: command line %q", name, p.Client.CommandLine())
			}
		}
	}
}

// The generated ptproxy configurations must load with ptproxy's own
// configuration package, so a change there cannot silently break the
// benchmark.
func TestPtproxyConfigsLoad(t *testing.T) {
	e := testEnv(t, "ptb-b")
	p, err := Build(e, Ptproxy)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"server.toml", "client.toml"} {
		path := filepath.Join(e.Work, Ptproxy, f)
		if _, err := config.LoadFile(path, nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(p.Client.CommandLine(), "GOMAXPROCS=1 ") || strings.Contains(p.Client.CommandLine(), "FEC") {
		t.Errorf("ptproxy env not applied as given: %s", p.Client.CommandLine())
	}
	b, _ := os.ReadFile(filepath.Join(e.Work, Ptproxy, "client.toml"))
	for _, want := range []string{`connect_address = "10.201.0.2"`, "connect_interval = 700", `http_bind_address = "127.0.0.1:21180"`, "max_connections = 4096"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("client.toml lacks %s:\n%s", want, b)
		}
	}
}

// The FEC pair is ptproxy plus its own environment on both sides, after
// the common one, in a folder and on ports of its own.
func TestPtproxyAltPair(t *testing.T) {
	e := testEnv(t, "")
	e.PtproxyAltEnv = []string{"PTPROXY_TRANSPORT__FEC=auto"}
	p, err := Build(e, PtproxyAlt)
	if err != nil {
		t.Fatal(err)
	}
	for _, proc := range []*Proc{p.Server, p.Client} {
		if cl := proc.CommandLine(); !strings.Contains(cl, "GOMAXPROCS=1 PTPROXY_TRANSPORT__FEC=auto ") || !strings.Contains(cl, filepath.Join(e.Work, PtproxyAlt)) {
			t.Errorf("%s: %s", proc.Name, cl)
		}
	}
	if len(e.PtproxyEnv) != 1 {
		t.Errorf("the common environment was changed: %q", e.PtproxyEnv)
	}
	if p.Server.Argv[0] != e.Bins.Ptproxy {
		t.Errorf("without Bins.PtproxyAlt the pair runs %s, not %s", p.Server.Argv[0], e.Bins.Ptproxy)
	}

	// Built from another commit (--alt-commit): its own binary, and the
	// ptproxy pair keeps the working tree's.
	e.Bins.PtproxyAlt = "/bin/ptproxy-0123abc"
	if p, err = Build(e, PtproxyAlt); err != nil {
		t.Fatal(err)
	}
	for _, proc := range []*Proc{p.Server, p.Client} {
		if proc.Argv[0] != e.Bins.PtproxyAlt {
			t.Errorf("%s runs %s, not %s", proc.Name, proc.Argv[0], e.Bins.PtproxyAlt)
		}
	}
	if q, err := Build(e, Ptproxy); err != nil || q.Server.Argv[0] != e.Bins.Ptproxy {
		t.Errorf("the ptproxy pair runs %v (%v), not %s", q.Server.Argv, err, e.Bins.Ptproxy)
	}
	if _, err := config.LoadFile(filepath.Join(e.Work, PtproxyAlt, "client.toml"), nil); err != nil {
		t.Error(err)
	}
}

func TestPeerConfigsCarryMutualTLS(t *testing.T) {
	e := testEnv(t, "")
	for _, c := range []struct {
		pair, file string
		want       []string
	}{
		{Nginx, "front.conf", []string{"worker_connections 4096;", "worker_rlimit_nofile 8192;", "proxy_ssl_verify on;", "proxy_ssl_certificate ", "keepalive 64;", "proxy_ssl_protocols TLSv1.3;", "proxy_buffering off;"}},
		{Nginx, "back.conf", []string{"ssl_verify_client on;", "keepalive 64;"}},
		{Caddy, "front.Caddyfile", []string{"versions 3", "tls_client_auth ", "tls_trust_pool file "}},
		{Caddy, "back.Caddyfile", []string{"mode require_and_verify", "protocols h3", "strict_sni_host insecure_off"}},
		{HAProxy, "front.cfg", []string{"verify required", "http-reuse always", "nbthread 1"}},
		{HAProxy, "back.cfg", []string{"verify required", "ssl-min-ver TLSv1.3"}},
	} {
		if _, err := Build(e, c.pair); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(e.Work, c.pair, c.file))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s/%s lacks %q", c.pair, c.file, w)
			}
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "a b": "'a b'", "it's": `'it'\''s'`, "": "''", "K=v/x:1": "K=v/x:1"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
