package session

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// alpnH3 is HTTP/3's ALPN token (RFC 9114 3.1).
const alpnH3 = "h3"

// ClientTLS builds the client-side TLS config: TLS 1.3 only, ALPN h3, the
// server certificate verified against caFile for peerHostname (DNS name or
// IP literal, also sent as SNI unless it is an IP), the client certificate
// from certFile/keyFile, and a session cache so reconnects resume.
//
// caFile "" means the system roots. Security note: then ANY publicly trusted
// certificate for peerHostname is accepted as the peer.
func ClientTLS(caFile, certFile, keyFile, peerHostname string) (*tls.Config, error) {
	roots, err := loadRoots(caFile)
	if err != nil {
		return nil, err
	}
	cert, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if err := checkPeerHostname(peerHostname); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpnH3},
		RootCAs:            roots,
		ServerName:         peerHostname,
		Certificates:       []tls.Certificate{cert},
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
	}, nil
}

// ServerTLS builds the server-side TLS config: TLS 1.3 only, ALPN h3, the
// server certificate from certFile/keyFile, and mandatory client
// certificates verified against caFile (clientAuth usage) whose SAN must
// match peerHostname (DNS or IP SAN; the CN is ignored), as the original's
// custom verifier did, or one of morePeers (general.peer_hostnames). A
// certificate from the right CA issued to another name is refused.
// VerifyConnection also runs on resumed sessions, so the pin holds there
// too. [PeerIdentity] tells which of the names a certificate matched.
//
// caFile "" means the system roots: then any publicly trusted certificate
// for peerHostname would be accepted as a client.
//
// [Server] installs a per-handshake variant of this config (same rules) to
// log refusals with the remote address; the returned config is safe on its
// own.
func ServerTLS(caFile, certFile, keyFile, peerHostname string, morePeers ...string) (*tls.Config, error) {
	pool, err := loadRoots(caFile)
	if err != nil {
		return nil, err
	}
	if pool == nil {
		if pool, err = x509.SystemCertPool(); err != nil {
			return nil, fmt.Errorf("loading root CA certificates (system): %w", err)
		}
	}
	cert, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	names := append([]string{peerHostname}, morePeers...)
	for _, n := range names {
		if err := checkPeerHostname(n); err != nil {
			return nil, err
		}
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		NextProtos:       []string{alpnH3},
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        pool,
		VerifyConnection: peerNameVerifier(names),
	}, nil
}

// withKeyLog returns cfg, or a clone writing TLS secrets to w (SSLKEYLOGFILE;
// the composition root opens the file and warns).
func withKeyLog(cfg *tls.Config, w io.Writer) *tls.Config {
	if w == nil {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.KeyLogWriter = w
	return cfg
}

// peerNameVerifier checks the client leaf against the accepted names
// (peer_hostname, then peer_hostnames). It runs after crypto/tls verified
// the chain (RequireAndVerifyClientCert).
func peerNameVerifier(names []string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &PeerRejectedError{Reason: "no client certificate"}
		}
		return matchPeer(cs.PeerCertificates[0], names...)
	}
}

// matchPeer accepts leaf when it matches one of names.
func matchPeer(leaf *x509.Certificate, names ...string) error {
	if _, err := PeerIdentity(leaf, names); err != nil {
		what := fmt.Sprintf("peer_hostname %q", names[0])
		if len(names) > 1 {
			what = fmt.Sprintf("any of peer_hostname and peer_hostnames %q", names)
		}
		return &PeerRejectedError{
			Reason: fmt.Sprintf("client certificate for %q does not match %s", certNames(leaf), what),
			Err:    err,
		}
	}
	return nil
}

// PeerIdentity returns the first of names that leaf is valid for (a DNS or
// IP SAN, as crypto/x509 matches host names): the client's identity. The
// error is the first name's mismatch.
func PeerIdentity(leaf *x509.Certificate, names []string) (string, error) {
	var first error
	for _, n := range names {
		err := leaf.VerifyHostname(n)
		if err == nil {
			return n, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = errors.New("no accepted client name configured")
	}
	return "", first
}

// strictClientVerifier verifies the whole client chain itself (used with
// ClientAuth = RequestClientCert in the per-handshake config), so that every
// refusal, including "no certificate", "unknown authority" and "expired",
// passes through one place that can log it with the remote address.
// The rules equal RequireAndVerifyClientCert + peerNameVerifier.
func strictClientVerifier(pool *x509.CertPool, peerHostname string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &PeerRejectedError{Reason: "no client certificate"}
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			return &PeerRejectedError{Reason: classifyX509(err, leaf), Err: err}
		}
		if peerHostname == "" {
			return nil // the name is checked by the caller's VerifyConnection
		}
		return matchPeer(leaf, peerHostname)
	}
}

func classifyX509(err error, leaf *x509.Certificate) string {
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return fmt.Sprintf("client certificate for %q: unknown authority", certNames(leaf))
	}
	if ce, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		switch ce.Reason {
		case x509.Expired:
			return fmt.Sprintf("client certificate for %q: expired or not yet valid (valid %s to %s)",
				certNames(leaf), leaf.NotBefore.UTC().Format("2006-01-02T15:04:05Z"), leaf.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
		case x509.IncompatibleUsage:
			return fmt.Sprintf("client certificate for %q: not valid for client authentication (extended key usage)", certNames(leaf))
		}
	}
	return fmt.Sprintf("client certificate for %q: %v", certNames(leaf), err)
}

func certNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "(no SAN)"
	}
	return strings.Join(names, ",")
}

func checkPeerHostname(h string) error {
	if h == "" {
		return errors.New("parsing peer hostname: empty")
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	// Loose DNS-name check; config validation is stricter.
	if strings.ContainsAny(h, " /:@") {
		return fmt.Errorf("parsing peer hostname: %q is neither a DNS name nor an IP address", h)
	}
	return nil
}

// loadRoots returns nil (system roots) for "".
func loadRoots(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	certs, err := LoadCACerts(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// LoadCACerts reads the PEM bundle caFile (tls.ca) as [ClientTLS] and
// [ServerTLS] do, with the same error wording, for callers that inspect the
// CA certificates (ptproxy check).
func LoadCACerts(caFile string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("loading root CA certificates (%s): %w", caFile, err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("loading root CA certificates (%s): %w", caFile, err)
	}
	return certs, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// LoadKeyPair loads a PEM chain and exactly one PEM private key. PKCS#8
// ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY") and SEC1 ("EC PRIVATE KEY")
// are accepted; the original accepted only PKCS#8.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certs, err := LoadCertChain(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := LoadPrivateKey(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := CheckKeyMatch(certs[0], key, certFile, keyFile); err != nil {
		return tls.Certificate{}, err
	}
	out := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// LoadCertChain reads the PEM certificate chain certFile (tls.cert), leaf
// first, as [ClientTLS] and [ServerTLS] do, with the same error wording.
// LoadCertChain, [LoadPrivateKey] and [CheckKeyMatch] are the three steps of
// loading the key pair, apart so that a caller (ptproxy check) can report a
// problem with each file.
func LoadCertChain(certFile string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("loading certificate (%s): %w", certFile, err)
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("loading certificate (%s): %w", certFile, err)
	}
	return certs, nil
}

// LoadPrivateKey reads the one PEM private key of keyFile (tls.key) as
// [ClientTLS] and [ServerTLS] do, with the same error wording.
func LoadPrivateKey(keyFile string) (crypto.Signer, error) {
	keyData, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading certificate key (%s): %w", keyFile, err)
	}
	key, err := parseOneKey(keyData)
	if err != nil {
		return nil, fmt.Errorf("loading certificate key (%s): %w", keyFile, err)
	}
	return key, nil
}

// CheckKeyMatch reports, as [ClientTLS] and [ServerTLS] do, an error when
// key (read from keyFile) is not the private key of leaf (read from
// certFile).
func CheckKeyMatch(leaf *x509.Certificate, key crypto.Signer, certFile, keyFile string) error {
	if !publicKeyMatches(leaf.PublicKey, key) {
		return fmt.Errorf("loading certificate key (%s): private key does not match certificate %s", keyFile, certFile)
	}
	return nil
}

func parseOneKey(data []byte) (crypto.Signer, error) {
	var keys []*pem.Block
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			keys = append(keys, b)
		}
	}
	switch len(keys) {
	case 0:
		return nil, errors.New("no PEM private key found")
	case 1:
	default:
		return nil, fmt.Errorf("%d PEM private keys found, want exactly one", len(keys))
	}
	b := keys[0]
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM key type %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", b.Type, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}

func publicKeyMatches(pub any, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch p := pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		e, ok := p.(equaler)
		return ok && e.Equal(key.Public())
	}
	return false
}
