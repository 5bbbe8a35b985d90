package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestIssueAndVerify(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("server.example", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("client.example")
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: "server.example", Roots: pool}); err != nil {
		t.Fatalf("server cert for DNS name: %v", err)
	}
	if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: pool}); err != nil {
		t.Fatalf("server cert for IP: %v", err)
	}
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client cert: %v", err)
	}
	if err := cli.Cert.VerifyHostname("client.example"); err != nil {
		t.Fatalf("client SAN: %v", err)
	}
	if _, err := cli.Cert.Verify(x509.VerifyOptions{Roots: pool}); err == nil {
		t.Fatal("client cert verified as server cert")
	}
	blk, _ := pem.Decode(cli.KeyPEM)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("key PEM type: %+v", blk)
	}
	if _, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredLeaf(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.Leaf(LeafOptions{
		Names:       []string{"old.example"},
		NotBefore:   time.Now().Add(-48 * time.Hour),
		NotAfter:    time.Now().Add(-24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	ce, ok := errors.AsType[x509.CertificateInvalidError](err)
	if !ok || ce.Reason != x509.Expired {
		t.Fatalf("want Expired, got %v", err)
	}
}

func TestCAValidityWindow(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := NewCAWith(CAOptions{CommonName: "fixed CA", NotBefore: nb})
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.NotBefore.Equal(nb) || !ca.Cert.NotAfter.Equal(nb.AddDate(10, 0, 0)) || ca.Cert.Subject.CommonName != "fixed CA" {
		t.Fatalf("CA %q valid %v to %v", ca.Cert.Subject.CommonName, ca.Cert.NotBefore, ca.Cert.NotAfter)
	}
	l, err := ca.Leaf(LeafOptions{Names: []string{"x.example"}, NotBefore: nb})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: nb.AddDate(0, 6, 0)}); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFiles(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("s.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteFiles(dir, ca, map[string]*Leaf{"server": srv}); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"ca.pem": 0o644, "server.pem": 0o644, "server-key.pem": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	if err := WriteFiles(dir, ca, nil); err == nil {
		t.Fatal("overwrote existing ca.pem")
	}
}
