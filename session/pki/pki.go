// Package pki creates throwaway and deployment certificates in memory:
// one ECDSA P-256 certificate authority and leaf certificates signed by it
// for the two ptproxy roles. Nothing here touches the disk except
// [WriteFiles].
//
// The recipe mirrors what the original ptproxy documents with mkcert: the
// server gets a serverAuth certificate for its name ("mkcert <name>"), the
// client a clientAuth certificate whose SAN is the name the server pins as
// peer_hostname ("mkcert -client <name>").
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority held in memory.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // "CERTIFICATE"
	KeyPEM  []byte // PKCS#8 "PRIVATE KEY"
}

// Leaf is a certificate issued by a [CA] with its key, in the three forms
// callers need: parsed, PEM (for files) and ready for crypto/tls.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte // leaf "CERTIFICATE" only (the CA is distributed separately)
	KeyPEM  []byte // PKCS#8 "PRIVATE KEY"
	TLS     tls.Certificate
}

// LeafOptions control [CA.Leaf]. The zero value of a time field means the
// default (NotBefore one hour ago, NotAfter one year after NotBefore).
type LeafOptions struct {
	// Names become SANs: IP literals as IP SANs, everything else as DNS SANs.
	// The first name is also the subject CommonName (ignored by verifiers).
	Names     []string
	NotBefore time.Time
	NotAfter  time.Time
	// ExtKeyUsage defaults to serverAuth when empty.
	ExtKeyUsage []x509.ExtKeyUsage
}

// CAOptions control [NewCAWith]. The zero value of a time field means the
// default (NotBefore one hour ago, NotAfter ten years after NotBefore).
type CAOptions struct {
	CommonName string
	NotBefore  time.Time
	NotAfter   time.Time
}

// NewCA creates a self-signed ECDSA P-256 CA valid for ten years.
func NewCA(commonName string) (*CA, error) {
	return NewCAWith(CAOptions{CommonName: commonName})
}

// NewCAWith creates a self-signed ECDSA P-256 CA with explicit options
// (a fixed validity window makes output that shows dates reproducible).
func NewCAWith(opts CAOptions) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := window(opts.NotBefore, opts.NotAfter, 10)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName, Organization: []string{"ptproxy"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pkcs8PEM(key)
	if err != nil {
		return nil, err
	}
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  keyPEM,
	}, nil
}

// Server issues a serverAuth leaf for names (DNS or IP SANs).
func (ca *CA) Server(names ...string) (*Leaf, error) {
	return ca.Leaf(LeafOptions{Names: names, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
}

// Client issues a clientAuth leaf for names. The names go into the SAN as
// for a server certificate, because ptproxy's server matches the client
// certificate's SAN against its peer_hostname (like mkcert -client).
func (ca *CA) Client(names ...string) (*Leaf, error) {
	return ca.Leaf(LeafOptions{Names: names, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// Leaf issues a certificate with explicit options (validity window, usages).
func (ca *CA) Leaf(opts LeafOptions) (*Leaf, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("pki: nil CA")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating leaf key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := window(opts.NotBefore, opts.NotAfter, 1)
	usages := opts.ExtKeyUsage
	if len(usages) == 0 {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"ptproxy"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	if len(opts.Names) > 0 {
		tmpl.Subject.CommonName = opts.Names[0]
	}
	for _, n := range opts.Names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("creating leaf certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := pkcs8PEM(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  keyPEM,
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
	}, nil
}

// window fills in a validity window: a zero notBefore is an hour ago, a
// zero notAfter the given number of years after notBefore.
func window(notBefore, notAfter time.Time, years int) (time.Time, time.Time) {
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = notBefore.AddDate(years, 0, 0)
	}
	return notBefore, notAfter
}

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFiles writes ca.pem (the CA certificate) and, for each named leaf,
// <name>.pem and <name>-key.pem into dir. Key files get mode 0600,
// certificates 0644. Existing files are not overwritten (error).
func WriteFiles(dir string, ca *CA, leaves map[string]*Leaf) error {
	if ca == nil {
		return errors.New("pki: nil CA")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	for name, l := range leaves {
		if name == "" || name == "ca" || filepath.Base(name) != name {
			return fmt.Errorf("pki: invalid leaf file name %q", name)
		}
		if err := writeNew(filepath.Join(dir, name+".pem"), l.CertPEM, 0o644); err != nil {
			return err
		}
		if err := writeNew(filepath.Join(dir, name+"-key.pem"), l.KeyPEM, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// WriteCAKey writes the CA private key to path with mode 0600 (only needed
// when more leaves will be issued later from the same CA).
func WriteCAKey(path string, ca *CA) error {
	return writeNew(path, ca.KeyPEM, 0o600)
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	// Chmod so the umask cannot widen or narrow what the caller asked for.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

func pkcs8PEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial: %w", err)
	}
	return s, nil
}
