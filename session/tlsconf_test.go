package session

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a cert for key and returns its path.
func writeCertFor(t *testing.T, dir string, key any, pub any) string {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "k"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"k.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "cert.pem")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return p
}

func TestKeyFormats(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	p8, _ := x509.MarshalPKCS8PrivateKey(ec)
	cases := []struct {
		name    string
		key     any
		pub     any
		pem     []byte
		wantErr string
	}{
		{"pkcs8", ec, &ec.PublicKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), ""},
		{"sec1", ec, &ec.PublicKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ""},
		{"pkcs1", rk, &rk.PublicKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), ""},
		{"two keys", ec, &ec.PublicKey, append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), "2 PEM private keys"},
		{"no key", ec, &ec.PublicKey, []byte("nothing here\n"), "no PEM private key"},
		{"mismatch", rk, &rk.PublicKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), "does not match"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cert := writeCertFor(t, t.TempDir(), c.key, c.pub)
			keyPath := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+"-key.pem")
			os.WriteFile(keyPath, c.pem, 0o600)
			_, err := ClientTLS("", cert, keyPath, "k.test")
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "loading certificate key ("+keyPath+")") {
				t.Fatalf("err = %v, want %q naming %s", err, c.wantErr, keyPath)
			}
		})
	}
}

func TestTLSConfigShape(t *testing.T) {
	cs := newCertSet(t)
	srv := cs.serverTLS(t, "client.test", "server.test")
	if srv.MinVersion != 0x0304 || srv.NextProtos[0] != "h3" || srv.ClientAuth != 4 /* RequireAndVerifyClientCert */ || srv.VerifyConnection == nil {
		t.Fatalf("server config %+v", srv)
	}
	cl := cs.clientTLS(t, "server.test", cs.client(t, "client.test"))
	if cl.ServerName != "server.test" || cl.ClientSessionCache == nil || cl.RootCAs == nil || cl.MinVersion != 0x0304 {
		t.Fatalf("client config %+v", cl)
	}
	if _, err := ClientTLS(cs.path("missing.pem"), "x", "y", "server.test"); err == nil || !strings.Contains(err.Error(), "loading root CA certificates ("+cs.path("missing.pem")+")") {
		t.Fatalf("missing CA error: %v", err)
	}
}

func TestKeyLogWriter(t *testing.T) {
	cs := newCertSet(t)
	srv := startServer(t, cs.serverTLS(t, "client.test", "server.test"), 0, echo)
	var kl syncBuffer
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.port(), func(o *ClientOptions) {
		o.KeyLogWriter = &kl
	})
	waitFor(t, "client ready", func() bool { return cl.State() == Ready })
	if !strings.Contains(kl.String(), "CLIENT_HANDSHAKE_TRAFFIC_SECRET") {
		t.Fatalf("key log: %q", kl.String())
	}
}

type syncBuffer struct{ logBuf }

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestSocketBuffersApplied(t *testing.T) {
	udp, err := listenUDP("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	var logs bytes.Buffer
	applySocketBuffers(udp, Transport{SocketReceiveBuffer: 256 << 10, SocketSendBuffer: 256 << 10}, slogJSONW(&logs))
	for _, which := range []string{"receive", "send"} {
		got, ok := readBuffer(udp, which, 256<<10)
		if ok && got < 256<<10 && !strings.Contains(logs.String(), "smaller than requested") {
			t.Errorf("%s buffer %d < requested and no warning logged", which, got)
		}
	}
	if _, err := listenUDP("not-an-ip", 0); err == nil {
		t.Error("bad bind address accepted")
	}
}
