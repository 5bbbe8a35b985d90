package app

import (
	"bytes"
	"crypto/x509"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/pki"
)

var update = flag.Bool("update", false, "rewrite the .golden files under testdata/check")

// checkEpoch is when the test certificates become valid; checkNow is the
// clock ptproxy check runs with: 100 days later.
var (
	checkEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	checkNow   = checkEpoch.AddDate(0, 0, 100)
)

// TestCheck drives ptproxy check (the command, with a fixed clock and an
// explicit environment) over the configurations of testdata/check, copied
// next to a PKI issued at checkEpoch, and compares the output with
// <name>.golden ($DIR stands for the folder). Regenerate with:
// go test ./cmd/internal/app -run TestCheck -update
func TestCheck(t *testing.T) {
	cases := []struct {
		name  string // of the golden file; default: file's stem
		file  string
		env   []string
		setup func(t *testing.T, p *testPKI)
		exit  int
		want  []string // lines or parts of lines the output must have
	}{
		{file: "client.toml", exit: 0, want: []string{
			"mode:        Client",
			"route:       default: listener 127.0.0.1:20080 -> peer server.test at server.test:20010 -> origin on the server",
			"cert names:  client.test (the server's general.peer_hostname must be one of these)",
			"cert issuer: CN=test CA,O=ptproxy (chains to tls.ca)",
			"result:      OK",
		}},
		{file: "servers.toml", exit: 0, want: []string{
			"selection:   active_active (requests go round robin to the servers whose session is ready)",
			"server:      1: server.test at server.test:20010 (general.peer_hostname; its certificate must carry server.test)",
			"server:      2: server2.test at 10.0.0.2:4433 (servers[0]; its certificate must carry server2.test)",
		}},
		{file: "server.yaml", exit: 0, want: []string{
			"config:      $DIR/server.yaml (YAML)",
			"listen:      0.0.0.0:4433 (QUIC)",
			"origin:      localhost:8081 (HTTP/1.1)",
			"route:       default: listener 0.0.0.0:4433 -> peer client.test -> origin localhost:8081",
			"setting:     transport.max_idle_timeout = 10000 (default 5000)",
			"setting:     system.admin_address = \"127.0.0.1:9090\" (default \"\")",
		}},
		{
			name: "env-override",
			file: "server-env.toml",
			env: []string{
				"PTPROXY_GENERAL__HTTP_CONNECT_ADDRESS=origin.internal:8080",
				"PTPROXY_TRANSPORT__FEC=on",
				"PTPROXY_PORT=tcp://10.0.0.1:20080", // Kubernetes' kind: ignored
				"HOME=/root",
			},
			exit: 0,
			want: []string{
				"origin:      origin.internal:8080 (HTTP/1.1)",
				"fec:         on (16 datagrams per group, 2 repair; the peer must set fec = \"on\" too)",
				"setting:     transport.fec = \"on\" (default \"off\", from PTPROXY_TRANSPORT__FEC)",
				"ignored:     PTPROXY_PORT",
			},
		},
		{file: "several-errors.toml", exit: 1, want: []string{
			"error:       $DIR/several-errors.toml: transport.max_idel_timeout: unknown key (did you mean \"max_idle_timeout\"?)",
			"error:       $DIR/several-errors.toml: general.quic_port: must be a UDP port between 1 and 65535, got 0",
			"error:       $DIR/several-errors.toml: general.http_bind_address: only allowed in Client mode",
			"error:       $DIR/several-errors.toml: general.http_connect_address: required in Server mode",
			"error:       $DIR/several-errors.toml: transport.fec: invalid value \"On\"",
			"error:       $DIR/several-errors.toml: tls.ca: loading root CA certificates ($DIR/missing-ca.pem): open $DIR/missing-ca.pem: no such file or directory",
			"error:       $DIR/several-errors.toml: tls.key: loading certificate key ($DIR/client-key.pem): private key does not match certificate $DIR/server.pem",
			"result:      FAILED: 7 errors, 0 warnings",
		}},
		{file: "key-mismatch.toml", exit: 1, want: []string{
			"error:       $DIR/key-mismatch.toml: tls.key: loading certificate key ($DIR/server-key.pem): private key does not match certificate $DIR/client.pem",
		}},
		{
			file: "expired.toml",
			setup: func(t *testing.T, p *testPKI) {
				writeCheckLeaf(t, p, "expired", checkEpoch, checkNow.Add(-24*time.Hour))
			},
			exit: 1,
			want: []string{
				"cert valid:  2030-01-01T00:00:00Z to 2030-04-10T00:00:00Z (expired)",
				"error:       $DIR/expired.toml: tls.cert: certificate for \"client.test\" expired on 2030-04-10T00:00:00Z: the peer will refuse it",
			},
		},
		{
			file: "expires-soon.toml",
			setup: func(t *testing.T, p *testPKI) {
				writeCheckLeaf(t, p, "expires-soon", checkEpoch, checkNow.Add(12*24*time.Hour+time.Hour))
			},
			exit: 0,
			want: []string{
				"warning:     tls.cert: certificate for \"client.test\" expires on 2030-04-23T01:00:00Z (in 12 days): renew it",
				"result:      OK with 1 warning",
			},
		},
		{file: "missing-ca.toml", exit: 1, want: []string{
			"error:       $DIR/missing-ca.toml: tls.ca: loading root CA certificates ($DIR/no-such-ca.pem): open $DIR/no-such-ca.pem: no such file or directory",
		}},
		{file: "swapped.toml", exit: 1, want: []string{
			"error:       $DIR/swapped.toml: tls.cert: certificate is not valid for client authentication (extended key usage serverAuth): the server will refuse it",
			"warning:     tls.cert: the certificate carries \"server.test\", general.peer_hostname, the name of the server: is it the server's certificate?",
		}},
		{
			file: "other-ca.toml",
			setup: func(t *testing.T, p *testPKI) {
				other, err := pki.NewCAWith(pki.CAOptions{CommonName: "other CA", NotBefore: checkEpoch})
				if err != nil {
					t.Fatal(err)
				}
				writeLeafFrom(t, p, other, "other-ca", checkEpoch, time.Time{})
			},
			exit: 0,
			want: []string{
				"cert issuer: CN=other CA,O=ptproxy (does not chain to tls.ca)",
				"warning:     tls.cert: the certificate does not chain to tls.ca",
			},
		},
		{
			file: "expired-ca.toml",
			setup: func(t *testing.T, p *testPKI) {
				old, err := pki.NewCAWith(pki.CAOptions{CommonName: "old CA", NotBefore: checkEpoch, NotAfter: checkNow.Add(-time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				writeLeafFrom(t, p, old, "expired-ca", checkEpoch, time.Time{})
				if err := os.WriteFile(p.path("expired-ca/ca.pem"), old.CertPEM, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			exit: 1,
			want: []string{
				"ca cert:     CN=old CA,O=ptproxy, valid 2030-01-01T00:00:00Z to 2030-04-10T23:00:00Z",
				"error:       $DIR/expired-ca.toml: tls.ca: no certificate in $DIR/expired-ca/ca.pem is currently valid: every peer certificate will be refused",
				"result:      FAILED: 1 error, 0 warnings",
			},
		},
		{file: "knobs.toml", exit: 0, want: []string{
			"warning:     transport.initial_rtt = 150 is accepted but has no effect",
			"warning:     transport.initial_window = 487500 is accepted but has no effect",
			"warning:     transport.congestion_algorithm = \"Cubic\" is accepted but has no effect",
			"warning:     tls.skip_verify = true is IGNORED",
		}},
		{name: "keylog-and-bad-env", file: "client.toml", env: []string{"SSLKEYLOGFILE=/tmp/keys.log", "PTPROXY_SYSTEM__LOG_LEVEL=trace"}, exit: 1, want: []string{
			"warning:     " + keyLogWarning + " (file /tmp/keys.log)",
			"error:       environment variable PTPROXY_SYSTEM__LOG_LEVEL (system.log_level): invalid value \"trace\"",
		}},
	}
	for _, tc := range cases {
		name := tc.name
		if name == "" {
			name = strings.TrimSuffix(tc.file, filepath.Ext(tc.file))
		}
		t.Run(name, func(t *testing.T) {
			p := newTestPKIAt(t, checkEpoch)
			path := p.path(tc.file)
			src, err := os.ReadFile(filepath.Join("testdata", "check", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, src, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, p)
			}
			var stdout, stderr bytes.Buffer
			code := check([]string{"-c", path}, &stdout, &stderr, tc.env, checkNow)
			out := strings.ReplaceAll(stdout.String(), p.dir, "$DIR")
			if code != tc.exit {
				t.Errorf("exit %d, want %d", code, tc.exit)
			}
			if stderr.Len() > 0 {
				t.Errorf("stderr: %s", stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			compareGolden(t, filepath.Join("testdata", "check", name+".golden"), out)
		})
	}
}

// compareGolden compares got with the file golden, or rewrites the file
// with -update.
func compareGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/internal/app -run TestCheck -update)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test ./cmd/internal/app -run TestCheck -update and review the diff):\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

// writeCheckLeaf writes a client certificate of p's CA valid from
// notBefore to notAfter into p's folder name/.
func writeCheckLeaf(t *testing.T, p *testPKI, name string, notBefore, notAfter time.Time) {
	t.Helper()
	writeLeafFrom(t, p, p.ca, name, notBefore, notAfter)
}

func writeLeafFrom(t *testing.T, p *testPKI, ca *pki.CA, name string, notBefore, notAfter time.Time) {
	t.Helper()
	l, err := ca.Leaf(pki.LeafOptions{
		Names:       []string{clientName},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.writeLeaf(t, name, l)
}

// A configuration that cannot be read is one problem, named with the path.
func TestCheckUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	var stdout, stderr bytes.Buffer
	if code := check([]string{"--config", path}, &stdout, &stderr, nil, checkNow); code != ExitFatal {
		t.Fatalf("exit %d, want %d", code, ExitFatal)
	}
	want := "config:      " + path + " (TOML)\n" +
		"error:       reading configuration file: open " + path + ": no such file or directory\n" +
		"result:      FAILED: 1 error, 0 warnings\n"
	if stdout.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", stdout.String(), want)
	}
}

// check opens no socket: the addresses it is given are busy, and it says OK.
func TestCheckBindsNothing(t *testing.T) {
	p := newTestPKI(t)
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	port := udp.LocalAddr().(*net.UDPAddr).Port
	configs := map[string]string{
		"server.toml": "[general]\nmode = \"Server\"\npeer_hostname = \"client.test\"\nbind_address = \"127.0.0.1\"\n" +
			"quic_port = " + strconv.Itoa(port) + "\nhttp_connect_address = \"" + tcp.Addr().String() + "\"\n" +
			"[tls]\nca = \"ca.pem\"\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n" +
			"[system]\nadmin_address = \"" + tcp.Addr().String() + "\"\n",
		"client.toml": "[general]\nmode = \"Client\"\npeer_hostname = \"server.test\"\nconnect_address = \"127.0.0.1\"\n" +
			"quic_port = " + strconv.Itoa(port) + "\nhttp_bind_address = \"" + tcp.Addr().String() + "\"\n" +
			"[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n",
	}
	for name, body := range configs {
		path := p.path(name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		if code := check([]string{"-c", path}, &stdout, &stderr, nil, time.Now()); code != ExitOK {
			t.Errorf("%s: exit %d, want 0\n%s%s", name, code, stdout.String(), stderr.String())
		}
	}
}

// ptproxy check [-c FILE] dispatches from Main (with the process's
// environment and clock); -h prints the help, a stray argument is a usage
// error.
func TestCheckCommandLine(t *testing.T) {
	p := newTestPKI(t)
	path := p.path("client.toml")
	src, err := os.ReadFile(filepath.Join("testdata", "check", "client.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args   []string
		exit   int
		stdout string
		stderr string
	}{
		{args: []string{"check", "-c", path}, exit: ExitOK, stdout: "result:      OK\n"},
		{args: []string{"check", "-c", p.path("none.toml")}, exit: ExitFatal, stdout: "no such file or directory"},
		{args: []string{"check", "-h"}, exit: ExitOK, stdout: "Usage: ptproxy check [-c FILE]"},
		{args: []string{"check", "-c", path, "extra"}, exit: exitUsage, stderr: "unexpected argument \"extra\""},
		{args: []string{"check", "--bogus"}, exit: exitUsage, stderr: "flag provided but not defined: -bogus\nUsage: ptproxy check [-c FILE]"},
		{args: []string{"-h"}, exit: ExitOK, stdout: "ptproxy check [-c FILE]"},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(tc.args, &stdout, &stderr)
		if code != tc.exit || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) ||
			tc.stderr == "" && stderr.Len() > 0 { // -h: the help once, on stdout
			t.Errorf("%q: exit %d (want %d)\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.exit, stdout.String(), stderr.String())
		}
	}
}
