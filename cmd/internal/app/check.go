package app

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session"
)

const checkUsage = `Usage: ptproxy check [-c FILE]

Validates a configuration file and its certificates the way ptproxy would
load them at startup, without starting anything (no listener is opened,
nothing is dialled), and prints the effective setup, one item per line:
mode, addresses, the peer's name, the default route, FEC, every setting
that differs from its default, the certificates, then every warning and
every problem. Exit status 0 when ptproxy would start with this
configuration (warnings allowed), 1 when it would not, or when the peer
would refuse the certificate.

Options:
  -c, --config FILE   configuration file, TOML or YAML (default /etc/ptproxy/config.toml)

Environment variables PTPROXY_<SECTION>__<FIELD> override the file, as when
running; see docs/config.md.
`

// expiryWarning is how long before its end a certificate is warned about.
const expiryWarning = 30 * 24 * time.Hour

// runCheck is ptproxy check: it validates the configuration and the
// certificates and prints the effective setup (docs/config.md "Checking a
// configuration").
func runCheck(args []string, stdout, stderr io.Writer) int {
	return check(args, stdout, stderr, os.Environ(), time.Now())
}

// check is runCheck with the process environment and the clock passed in.
func check(args []string, stdout, stderr io.Writer, environ []string, now time.Time) int {
	fs := flag.NewFlagSet("ptproxy check", flag.ContinueOnError)
	path := configFlag(fs, "configuration file")
	if code, done := parseArgs(fs, args, checkUsage, stdout, stderr); done {
		return code
	}
	r := checkConfig(*path, environ, now)
	r.write(stdout)
	if len(r.errors) > 0 {
		return ExitFatal
	}
	return ExitOK
}

// checkReport is what check prints: items of the effective setup, then
// warnings, then problems, each in the order found.
type checkReport struct {
	items    [][2]string
	warnings []string
	errors   []string
}

func (r *checkReport) item(key, format string, args ...any) {
	r.items = append(r.items, [2]string{key, fmt.Sprintf(format, args...)})
}

func (r *checkReport) write(w io.Writer) {
	line := func(k, v string) { fmt.Fprintf(w, "%-12s %s\n", k+":", v) }
	for _, it := range r.items {
		line(it[0], it[1])
	}
	for _, s := range r.warnings {
		line("warning", s)
	}
	for _, s := range r.errors {
		line("error", s)
	}
	switch {
	case len(r.errors) > 0:
		line("result", fmt.Sprintf("FAILED: %s, %s", plural(len(r.errors), "error"), plural(len(r.warnings), "warning")))
	case len(r.warnings) > 0:
		line("result", fmt.Sprintf("OK with %s", plural(len(r.warnings), "warning")))
	default:
		line("result", "OK")
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// checker examines one loaded (possibly partial) configuration.
type checker struct {
	r   checkReport
	cfg *config.Config
	now time.Time
	// bad holds the keys and sections a configuration problem names: their
	// values are not trusted.
	bad map[string]bool
	// caOutOfWindow is set when a certificate of tls.ca is expired or not
	// yet valid (reported once, by checkCAs).
	caOutOfWindow bool
}

// problem reports a problem with key of the configuration, named like the
// configuration's own problems.
func (k *checker) problem(key, format string, args ...any) {
	k.r.errors = append(k.r.errors, k.field(k.cfg.File(), key, format, args...))
}

// warn reports a warning about key, named like startup's warnings (by
// the key, or the environment variable that set it).
func (k *checker) warn(key, format string, args ...any) {
	k.r.warnings = append(k.r.warnings, k.field("", key, format, args...))
}

func (k *checker) field(file, key, format string, args ...any) string {
	fe := &config.FieldError{File: file, Env: k.cfg.EnvVar(key), Field: key, Problem: fmt.Sprintf(format, args...)}
	return fe.Error()
}

// trusted reports whether key's value can be used: no problem names it or
// its section.
func (k *checker) trusted(key string) bool {
	sec, _, _ := strings.Cut(key, ".")
	return !k.bad[key] && !k.bad[sec]
}

// checkConfig loads path as ptproxy does and checks it and its certificates.
func checkConfig(path string, environ []string, now time.Time) *checkReport {
	cfg, err := config.LoadFilePartial(path, environ)
	k := &checker{cfg: cfg, now: now, bad: make(map[string]bool)}
	k.r.item("config", "%s (%s)", path, strings.ToUpper(string(config.FormatFromPath(path))))
	fes := config.FieldErrors(err)
	for _, fe := range fes {
		k.r.errors = append(k.r.errors, fe.Error())
		k.bad[fe.Field] = true
	}
	if err != nil && len(fes) == 0 {
		k.r.errors = append(k.r.errors, err.Error()) // the file could not be read
	}
	if cfg == nil {
		return &k.r
	}
	valid := err == nil
	if valid {
		k.summary()
	}
	if ignored := cfg.IgnoredEnv(); len(ignored) > 0 {
		k.r.item("ignored", "%s (not of the PTPROXY_<SECTION>__<FIELD> shape)", strings.Join(ignored, " "))
	}
	for _, w := range cfg.Warnings() {
		// Each starts with its key; a value refused above is not also
		// "accepted but has no effect".
		if key, _, _ := strings.Cut(w, " "); k.trusted(key) {
			k.r.warnings = append(k.r.warnings, w)
		}
	}
	if valid && cfg.General.Mode == config.ModeServer {
		k.originTLSFiles()
	}
	if loaded := k.certificates(); valid && loaded {
		// What startup does with the files: it must accept them too.
		if _, err := tlsConfig(cfg); err != nil {
			k.r.errors = append(k.r.errors, err.Error())
		}
	}
	for _, kv := range environ {
		if name, file, _ := strings.Cut(kv, "="); name == "SSLKEYLOGFILE" && file != "" {
			k.r.warnings = append(k.r.warnings, keyLogWarning+" (file "+file+")")
		}
	}
	return &k.r
}

// summary prints the effective setup of a valid configuration.
func (k *checker) summary() {
	c := k.cfg
	g := c.General
	quic := net.JoinHostPort(g.BindAddress, fmt.Sprint(g.QUICPort))
	k.r.item("mode", "%s", g.Mode)
	if g.Mode == config.ModeClient {
		peer := net.JoinHostPort(g.ConnectAddress, fmt.Sprint(g.QUICPort))
		k.r.item("listen", "%s (HTTP/1.1)", g.HTTPBindAddress)
		k.r.item("connect", "%s (QUIC from UDP %s%s)", peer, net.JoinHostPort(g.BindAddress, "0"), resolvedNote(g.ConnectAddress))
		k.r.item("peer", "%s (the server's certificate must carry this name as a DNS or IP SAN and chain to tls.ca)", g.PeerHostname)
		k.r.item("origin", "the server's general.http_connect_address")
		k.r.item("route", "default: listener %s -> peer %s at %s -> origin on the server", g.HTTPBindAddress, g.PeerHostname, peer)
		k.servers()
		k.clientRoutes()
	} else {
		origin := g.HTTPConnectAddress
		if origin == "" {
			origin = "group " + config.DefaultGroupName
		}
		k.r.item("listen", "%s (QUIC)", quic)
		k.r.item("origin", "%s (HTTP/1.1)", origin)
		k.r.item("peer", "%s (the client's certificate must carry this name as a DNS or IP SAN, be issued for clientAuth and chain to tls.ca; the CN is ignored)", g.PeerHostname)
		k.r.item("route", "default: listener %s -> peer %s -> origin %s", quic, g.PeerHostname, origin)
		k.routes()
	}
	switch t := c.Transport; t.FEC {
	case config.FECOn:
		k.r.item("fec", "on (%d datagrams per group, %d repair; the peer must set fec = \"on\" too)", t.FECGroupSize, t.FECRepair)
	case config.FECAuto:
		k.r.item("fec", "auto (%d datagrams per group, 1 to %d repairs from the loss the peer reports; the peer must set fec = \"auto\" too)", t.FECGroupSize, fecRepair(c))
	default:
		k.r.item("fec", "off")
	}
	for _, s := range slices.Concat(c.NonDefault("transport"), c.NonDefault("system")) {
		from := ""
		if s.Env != "" {
			from = ", from " + s.Env
		}
		k.r.item("setting", "%s = %s (default %s%s)", s.Key, s.Value, s.Default, from)
	}
}

// resolvedNote says that a connect address that is a name is looked up at
// every connection attempt.
func resolvedNote(host string) string {
	if net.ParseIP(host) != nil {
		return ""
	}
	return "; the name is resolved at every attempt"
}

// certificates checks the [tls] files: everything ClientTLS/ServerTLS
// check, one problem per file, then what the peer will check. It reports
// whether every file loaded (then startup's own loading is tried too).
func (k *checker) certificates() (loaded bool) {
	t := k.cfg.TLS
	loaded = true
	var roots *x509.CertPool
	caAt := "tls.ca"
	switch {
	case !k.trusted("tls.ca"):
		loaded = false
	case t.CA == "":
		k.r.item("tls.ca", "unset (the system roots)")
		k.warn("tls.ca", "unset: the peer is verified against the system roots, so any publicly trusted certificate for general.peer_hostname is accepted as the peer; set tls.ca")
		if pool, err := x509.SystemCertPool(); err == nil {
			roots, caAt = pool, "the system roots"
		}
	default:
		cas, err := session.LoadCACerts(t.CA)
		if err != nil {
			k.problem("tls.ca", "%v", err)
			loaded = false
			break
		}
		k.r.item("tls.ca", "%s (%s)", t.CA, plural(len(cas), "certificate"))
		roots = k.checkCAs(cas)
	}

	var chain []*x509.Certificate
	if k.trusted("tls.cert") && t.Cert != "" {
		var err error
		if chain, err = session.LoadCertChain(t.Cert); err != nil {
			k.problem("tls.cert", "%v", err)
		} else {
			k.checkLeaf(chain, roots, caAt)
		}
	}
	var key crypto.Signer
	if k.trusted("tls.key") && t.Key != "" {
		var err error
		if key, err = session.LoadPrivateKey(t.Key); err != nil {
			k.problem("tls.key", "%v", err)
		}
	}
	if chain == nil || key == nil {
		return false
	}
	if err := session.CheckKeyMatch(chain[0], key, t.Cert, t.Key); err != nil {
		k.problem("tls.key", "%v", err)
		return false
	}
	k.r.item("tls.key", "%s (%s, matches tls.cert)", t.Key, keyType(key))
	return loaded
}

// checkCAs prints the CA certificates, warns about those out of their
// validity window or close to its end, refuses a bundle none of whose
// certificates is valid, and returns the pool.
func (k *checker) checkCAs(cas []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	var notes []string
	valid := 0
	for _, c := range cas {
		pool.AddCert(c)
		k.r.item("ca cert", "%s, valid %s to %s", c.Subject, stamp(c.NotBefore), stamp(c.NotAfter))
		if note, severe := k.validity(c); severe {
			k.caOutOfWindow = true
			notes = append(notes, fmt.Sprintf("CA certificate %q %s: a peer certificate issued by it will be refused", c.Subject.String(), note))
		} else {
			valid++
			if note != "" {
				notes = append(notes, fmt.Sprintf("CA certificate %q %s: renew it; a peer certificate issued by it will be refused after that", c.Subject.String(), note))
			}
		}
	}
	if valid == 0 {
		k.problem("tls.ca", "no certificate in %s is currently valid: every peer certificate will be refused", k.cfg.TLS.CA)
		return pool
	}
	for _, n := range notes {
		k.warn("tls.ca", "%s", n)
	}
	return pool
}

// validity describes c's validity window at k.now: "" when valid for more
// than expiryWarning; a note with severe set when not valid now; a note
// with severe unset when it ends within expiryWarning.
func (k *checker) validity(c *x509.Certificate) (note string, severe bool) {
	switch {
	case k.now.Before(c.NotBefore):
		return "is not valid before " + stamp(c.NotBefore), true
	case k.now.After(c.NotAfter):
		return "expired on " + stamp(c.NotAfter), true
	case c.NotAfter.Sub(k.now) < expiryWarning:
		return fmt.Sprintf("expires on %s (in %s)", stamp(c.NotAfter), daysLeft(c.NotAfter.Sub(k.now))), false
	}
	return "", false
}

// checkLeaf prints our own certificate and checks what the peer will:
// validity, SANs, extended key usage for our role, and (warning only) the
// chain to our own tls.ca, which the peer uses when both ends share one CA.
func (k *checker) checkLeaf(chain []*x509.Certificate, roots *x509.CertPool, caAt string) {
	leaf := chain[0]
	g := k.cfg.General
	k.r.item("tls.cert", "%s (%s)", k.cfg.TLS.Cert, plural(len(chain), "certificate"))
	names := certNames(leaf)
	role, peer := "", ""
	modeOK := k.trusted("general.mode") && (g.Mode == config.ModeClient || g.Mode == config.ModeServer)
	if modeOK {
		role, peer = "server", "client"
		if g.Mode == config.ModeClient {
			role, peer = "client", "server"
		}
	}
	if len(names) == 0 {
		k.r.item("cert names", "none (no DNS or IP SAN; CN %q)", leaf.Subject.CommonName)
		k.problem("tls.cert", "certificate has no DNS or IP SAN: the peer matches its peer_hostname against the SAN only (the CN %q is ignored) and will refuse it", leaf.Subject.CommonName)
	} else if modeOK {
		k.r.item("cert names", "%s (the %s's general.peer_hostname must be one of these)", strings.Join(names, " "), peer)
	} else {
		k.r.item("cert names", "%s", strings.Join(names, " "))
	}
	k.r.item("cert usage", "%s", usageNames(leaf))
	if modeOK {
		want := x509.ExtKeyUsageServerAuth
		if g.Mode == config.ModeClient {
			want = x509.ExtKeyUsageClientAuth
		}
		if !hasUsage(leaf, want) {
			k.problem("tls.cert", "certificate is not valid for %s authentication (extended key usage %s): the %s will refuse it", role, usageNames(leaf), peer)
		}
		if k.trusted("general.peer_hostname") && slices.Contains(names, g.PeerHostname) {
			k.warn("tls.cert", "the certificate carries %q, general.peer_hostname, the name of the %s: is it the %s's certificate?", g.PeerHostname, peer, peer)
		}
	}
	note, severe := k.validity(leaf)
	left := daysLeft(leaf.NotAfter.Sub(k.now)) + " left"
	switch {
	case k.now.Before(leaf.NotBefore):
		left = "not yet valid"
	case k.now.After(leaf.NotAfter):
		left = "expired"
	}
	k.r.item("cert valid", "%s to %s (%s)", stamp(leaf.NotBefore), stamp(leaf.NotAfter), left)
	switch {
	case severe:
		k.problem("tls.cert", "certificate for %q %s: the peer will refuse it", strings.Join(names, ","), note)
	case note != "":
		k.warn("tls.cert", "certificate for %q %s: renew it; the peer will refuse it after that", strings.Join(names, ","), note)
	}
	if roots == nil {
		k.r.item("cert issuer", "%s", leaf.Issuer)
		return
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   k.now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, // checked above for our role
	})
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
		k.r.item("cert issuer", "%s (chains to %s)", leaf.Issuer, caAt)
	case errors.As(err, &unknown):
		k.r.item("cert issuer", "%s (does not chain to %s)", leaf.Issuer, caAt)
		k.warn("tls.cert", "the certificate does not chain to %s (%v): the peer verifies it against its own tls.ca, so this works only if the two ends use different CAs; with one CA on both ends (as ptproxy certs writes) every handshake fails", caAt, err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && (severe || k.caOutOfWindow):
		k.r.item("cert issuer", "%s", leaf.Issuer) // expiry reported above
	default:
		k.r.item("cert issuer", "%s (does not verify against %s)", leaf.Issuer, caAt)
		k.problem("tls.cert", "the certificate chain does not verify against %s: %v: the peer will refuse it", caAt, err)
	}
}

// certNames lists the DNS and IP SANs of c, the names a peer checks.
func certNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

var usageName = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:             "any",
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

func usageNames(c *x509.Certificate) string {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return "any (no extended key usage)"
	}
	var out []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := usageName[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("usage %d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	return strings.Join(out, " ")
}

// hasUsage reports whether crypto/x509 accepts c for want: no extended
// key usage at all, "any", or want itself.
func hasUsage(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.Contains(c.ExtKeyUsage, want) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}

func keyType(k crypto.Signer) string {
	switch p := k.Public().(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + p.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d bits", p.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", k.Public())
}

// stamp formats a certificate time as the session's refusal messages do.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// daysLeft formats a remaining duration in whole days.
func daysLeft(d time.Duration) string { return plural(int(d/(24*time.Hour)), "day") }
