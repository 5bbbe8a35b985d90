package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
)

// maxVarint is the largest value a QUIC variable-length integer can carry
// (RFC 9000 section 16), hence the largest flow-control window.
const maxVarint = 1<<62 - 1

// Validate checks c as a whole: required fields, enum spellings, value
// ranges, and the fields that only one mode allows. It returns every problem
// as a *FieldError, joined with errors.Join, or nil.
//
// [Load] and friends call it already. For a Config built in code (not
// loaded), a mode-specific or optional field counts as given when it is
// non-zero and differs from [Defaults].
func (c *Config) Validate() error {
	fe := c.check()
	if len(fe) == 0 {
		return nil
	}
	errs := make([]error, len(fe))
	for i, e := range fe {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// validate is Validate for Load: it drops problems about keys whose value
// was already refused while loading and about keys of sections that are
// missing or malformed (bad holds those keys and sections), so that each
// mistake is reported once.
func (c *Config) validate(present, bad map[string]bool) []error {
	var errs []error
	for _, e := range c.check() {
		sec, _, _ := strings.Cut(e.Field, ".")
		if bad[e.Field] || bad[sec] || !present[sec] && (sec == "general" || sec == "tls") {
			continue
		}
		errs = append(errs, e)
	}
	return errs
}

// checker collects the problems of one validation run.
type checker struct {
	c    *Config
	errs []*FieldError
}

func (k *checker) fail(key, format string, args ...any) {
	k.errs = append(k.errs, &FieldError{File: k.c.file, Env: k.c.env[key], Field: key, Problem: fmt.Sprintf(format, args...)})
}

// given reports whether key was supplied: explicitly set when c was loaded;
// non-zero and different from the default when c was built in code.
func (c *Config) given(key string) bool {
	if c.set != nil {
		return c.set[key]
	}
	f := schemaByKey[key]
	v := f.value(c)
	d := Defaults()
	return !v.IsZero() && !reflect.DeepEqual(v.Interface(), f.value(&d).Interface())
}

func (c *Config) check() []*FieldError {
	k := &checker{c: c}
	g, t, tr, s := &c.General, &c.TLS, &c.Transport, &c.System

	// [general]
	modeOK := false
	switch g.Mode {
	case ModeClient, ModeServer:
		modeOK = true
	case "":
		k.fail("general.mode", `required: set mode = "Client" or mode = "Server"`)
	default:
		k.fail("general.mode", `invalid value %q: must be one of "Client", "Server" (case-sensitive)`, g.Mode)
	}
	if g.PeerHostname == "" {
		k.fail("general.peer_hostname", "required: the DNS name (or IP address) the peer's certificate must match")
	} else if p := checkHostname(g.PeerHostname); p != "" {
		k.fail("general.peer_hostname", "parsing peer hostname %q: %s", g.PeerHostname, p)
	}
	if g.QUICPort < 1 || g.QUICPort > 65535 {
		k.fail("general.quic_port", "must be a UDP port between 1 and 65535, got %d", g.QUICPort)
	}
	if a, err := netip.ParseAddr(g.BindAddress); err != nil || a.Zone() != "" {
		k.fail("general.bind_address", `must be an IP address such as "::" or "0.0.0.0" (no port, no zone), got %q`, g.BindAddress)
	}
	if modeOK {
		client := g.Mode == ModeClient
		if !client && c.given("general.connect_address") {
			k.fail("general.connect_address", "only allowed in Client mode")
		}
		if !client && c.given("general.http_bind_address") {
			k.fail("general.http_bind_address", "only allowed in Client mode")
		}
		if client && c.given("general.http_connect_address") {
			k.fail("general.http_connect_address", "only allowed in Server mode")
		}
		if !client && g.HTTPConnectAddress == "" && !c.hasGroup(DefaultGroupName) {
			k.fail("general.http_connect_address", `required in Server mode: the origin's host:port, e.g. "localhost:8081"`)
		}
	}
	if (g.Mode != ModeServer) && g.ConnectAddress != "" {
		if p := checkHostname(g.ConnectAddress); p != "" {
			k.fail("general.connect_address", "must be a host name or an IP address without port (the port is quic_port), got %q: %s", g.ConnectAddress, p)
		}
	}
	if g.Mode != ModeServer && g.HTTPBindAddress != "" {
		if p := checkHostPort(g.HTTPBindAddress, true); p != "" {
			k.fail("general.http_bind_address", "%s", p)
		}
	} else if g.Mode == ModeClient && g.HTTPBindAddress == "" {
		k.fail("general.http_bind_address", `must not be empty (default %q)`, DefaultHTTPBindAddress)
	}
	if g.Mode != ModeClient && g.HTTPConnectAddress != "" {
		if p := checkConnectAddress(g.HTTPConnectAddress); p != "" {
			k.fail("general.http_connect_address", "parsing connect address: %s", p)
		}
	}

	// general.peer_hostnames and the routing sections (routes.go)
	if modeOK {
		k.checkRoutes()
	}

	// [tls]
	if t.Cert == "" {
		k.fail("tls.cert", "required: path of the PEM certificate chain presented to the peer")
	}
	if t.Key == "" {
		k.fail("tls.key", "required: path of the PEM private key of tls.cert")
	}
	switch {
	case (t.ListenerCert != "" || t.ListenerKey != "") && g.Mode == ModeServer:
		k.fail("tls.listener_cert", "only allowed in Client mode (TLS on the HTTP/1.1 listener)")
	case t.ListenerCert != "" && t.ListenerKey == "":
		k.fail("tls.listener_key", "required with tls.listener_cert: path of its PEM private key")
	case t.ListenerKey != "" && t.ListenerCert == "":
		k.fail("tls.listener_cert", "required with tls.listener_key: path of the PEM certificate chain the listener presents")
	}

	// [transport]
	if tr.MaxIdleTimeout <= 0 {
		k.fail("transport.max_idle_timeout", "must be positive (milliseconds), got %d: quic-go cannot disable the idle timeout, and it also bounds connection attempts", tr.MaxIdleTimeout)
	}
	if tr.KeepAliveInterval < 0 {
		k.fail("transport.keep_alive_interval", "must not be negative (milliseconds; 0 disables keep-alives), got %d", tr.KeepAliveInterval)
	}
	if c.given("transport.initial_rtt") && tr.InitialRTT <= 0 {
		k.fail("transport.initial_rtt", "must be positive (milliseconds) when set, got %d", tr.InitialRTT)
	}
	if tr.MaxConcurrentHTTPStreams < 1 {
		k.fail("transport.max_concurrent_http_streams", "must be at least 1, got %d", tr.MaxConcurrentHTTPStreams)
	}
	k.window("transport.stream_receive_window", tr.StreamReceiveWindow, true)
	k.window("transport.initial_window", tr.InitialWindow, true)
	k.window("transport.receive_window", tr.ReceiveWindow, true)
	k.window("transport.send_window", tr.SendWindow, c.given("transport.send_window"))
	k.socketBuffer("transport.socket_receive_buffer_size", tr.SocketReceiveBufferSize)
	k.socketBuffer("transport.socket_send_buffer_size", tr.SocketSendBufferSize)
	switch tr.CongestionAlgorithm {
	case CongestionBbr, CongestionCubic, CongestionNewReno, CongestionNone:
	default:
		k.fail("transport.congestion_algorithm", `invalid value %q: must be one of "Bbr", "Cubic", "NewReno", "None" (case-sensitive)`, tr.CongestionAlgorithm)
	}
	k.atLeast1("transport.max_request_line_bytes", tr.MaxRequestLineBytes)
	k.atLeast1("transport.max_header_bytes", tr.MaxHeaderBytes)
	k.atLeast1("transport.max_header_count", tr.MaxHeaderCount)
	k.atLeast1("transport.max_response_header_bytes", tr.MaxResponseHeaderBytes)
	switch tr.FEC {
	case FECOff, FECOn, FECAuto:
	default:
		k.fail("transport.fec", `invalid value %q: must be one of "off", "on", "auto"`, tr.FEC)
	}
	if tr.FECGroupSize < 1 || tr.FECGroupSize > MaxFECGroupSize {
		k.fail("transport.fec_group_size", "must be between 1 and %d (datagrams per FEC group), got %d", MaxFECGroupSize, tr.FECGroupSize)
	}
	if tr.FECRepair < 1 || tr.FECRepair > MaxFECRepair {
		k.fail("transport.fec_repair", "must be between 1 and %d (repair datagrams per full FEC group), got %d", MaxFECRepair, tr.FECRepair)
	}
	if tr.FECPacketSize < MinFECPacketSize || tr.FECPacketSize > MaxFECPacketSize {
		k.fail("transport.fec_packet_size", "must be between %d and %d (bytes of a QUIC packet with FEC on; the path must carry 10 more), got %d", MinFECPacketSize, MaxFECPacketSize, tr.FECPacketSize)
	}

	// [system]
	k.nonNegative("system.connect_interval", s.ConnectInterval, "")
	if !(s.WatchdogFactor > 0) || math.IsInf(s.WatchdogFactor, 0) {
		k.fail("system.watchdog_factor", "must be a finite number greater than 0 (the watchdog ping period is WATCHDOG_USEC divided by it), got %v", s.WatchdogFactor)
	}
	k.nonNegative("system.drain_timeout", s.DrainTimeout, "; 0 waits without limit")
	if s.AdminAddress != "" {
		if p := checkHostPort(s.AdminAddress, true); p != "" {
			k.fail("system.admin_address", "%s", p)
		}
	}
	k.nonNegative("system.header_read_timeout", s.HeaderReadTimeout, "; 0 means no limit")
	k.nonNegative("system.upstream_timeout", s.UpstreamTimeout, "; 0 means no limit")
	k.nonNegative("system.session_wait_timeout", s.SessionWaitTimeout, "; 0 answers 503 at once")
	k.atLeast1("system.max_connections", s.MaxConnections)
	if s.OriginIdleTimeout < 1 {
		k.fail("system.origin_idle_timeout", "must be at least 1 (milliseconds), got %d", s.OriginIdleTimeout)
	}
	if s.DefaultHost != "" {
		if p := checkConnectAddress(s.DefaultHost); p != "" {
			k.fail("system.default_host", "%s", p)
		}
	}
	switch s.LogFormat {
	case LogFormatAuto, LogFormatText, LogFormatJSON:
	default:
		k.fail("system.log_format", `invalid value %q: must be one of "auto", "text", "json"`, s.LogFormat)
	}
	switch s.LogLevel {
	case LogLevelDebug, LogLevelInfo, LogLevelWarn, LogLevelError:
	default:
		k.fail("system.log_level", `invalid value %q: must be one of "debug", "info", "warn", "error"`, s.LogLevel)
	}
	return k.errs
}

func (k *checker) window(key string, v int64, must bool) {
	switch {
	case !must:
	case v <= 0:
		k.fail(key, "must be positive (bytes), got %d", v)
	case v > maxVarint:
		k.fail(key, "must be at most %d (the QUIC limit), got %d", int64(maxVarint), v)
	}
}

func (k *checker) socketBuffer(key string, v int64) {
	if !k.c.given(key) {
		return
	}
	if v <= 0 || v > math.MaxInt32 {
		k.fail(key, "must be between 1 and %d bytes when set (omit it for the OS default), got %d", math.MaxInt32, v)
	}
}

func (k *checker) atLeast1(key string, v int) {
	if v < 1 {
		k.fail(key, "must be at least 1, got %d", v)
	}
}

func (k *checker) nonNegative(key string, v Millis, zero string) {
	if v < 0 {
		k.fail(key, "must not be negative (milliseconds%s), got %d", zero, v)
	}
}

// checkHostname accepts an IP literal (no zone, no brackets) or a DNS name
// following RFC 1035 label rules with underscores allowed, which is what the
// original accepts as a TLS server name (rustls ServerName). It returns the
// problem, or "".
func checkHostname(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return "an IPv6 zone is not allowed"
		}
		return ""
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" {
		return "empty name"
	}
	if len(name) > 253 {
		return "longer than 253 characters"
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" {
			return "empty label"
		}
		if len(l) > 63 {
			return fmt.Sprintf("label %q longer than 63 characters", l)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Sprintf("label %q starts or ends with a hyphen", l)
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Sprintf("invalid character %q", r)
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		return "not a valid IP address, and a DNS name cannot end in an all-numeric label"
	}
	return ""
}

// checkHostPort accepts "host:port" with a numeric port (0 allowed when
// zeroPort, meaning an ephemeral port) and an IPv6 host in brackets.
func checkHostPort(s string, zeroPort bool) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf(`must be host:port (e.g. "127.0.0.1:20080" or "[::]:20080"), got %q: %v`, s, err)
	}
	lo := 1
	if zeroPort {
		lo = 0
	}
	if n, err := strconv.Atoi(port); err != nil || n < lo || n > 65535 {
		return fmt.Sprintf("port %q in %q must be a number between %d and 65535", port, s, lo)
	}
	if host != "" {
		if p := checkHostname(host); p != "" {
			return fmt.Sprintf("host %q in %q: %s", host, s, p)
		}
	}
	return ""
}

// checkConnectAddress validates http_connect_address the way the original
// does, by building "http://<value>/" and parsing it as a URL; on top of that
// the value must be exactly the URL's authority (no user info, path, query or
// fragment) with a numeric port if one is given. Without a port, 80 is used.
func checkConnectAddress(s string) string {
	u, err := url.Parse("http://" + s + "/")
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("%q is not a valid host:port: %v", s, err)
	}
	if u.User != nil || u.Host != s || u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Sprintf("%q must be just host:port (no scheme, user, path or query)", s)
	}
	if u.Hostname() == "" {
		return fmt.Sprintf("%q has no host", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("port %q in %q must be a number between 1 and 65535", p, s)
		}
	}
	return ""
}

// finish applies the derived defaults after a successful validation: the
// dial host, fields the mode does not use, and paths relative to dir.
func (c *Config) finish(dir string) {
	switch c.General.Mode {
	case ModeClient:
		if c.General.ConnectAddress == "" {
			c.General.ConnectAddress = c.General.PeerHostname
		}
		c.General.HTTPConnectAddress = ""
	case ModeServer:
		c.General.ConnectAddress = ""
		c.General.HTTPBindAddress = ""
		c.General.ServerSelection = ""
	}
	c.TLS.CA = resolve(dir, c.TLS.CA)
	c.TLS.Cert = resolve(dir, c.TLS.Cert)
	c.TLS.Key = resolve(dir, c.TLS.Key)
	c.TLS.ListenerCert = resolve(dir, c.TLS.ListenerCert)
	c.TLS.ListenerKey = resolve(dir, c.TLS.ListenerKey)
	c.Transport.QlogDir = resolve(dir, c.Transport.QlogDir)
	for i := range c.OriginGroups {
		g := &c.OriginGroups[i]
		g.TLSCA, g.TLSCert, g.TLSKey = resolve(dir, g.TLSCA), resolve(dir, g.TLSCert), resolve(dir, g.TLSKey)
	}
}

// hasGroup reports whether an [[origin_groups]] entry is called name.
func (c *Config) hasGroup(name string) bool {
	for _, g := range c.OriginGroups {
		if g.Name == name {
			return true
		}
	}
	return false
}

// resolve makes a relative path relative to dir, as the original does for
// the [tls] paths (commit 37dd0ba). Absolute and empty paths are unchanged.
func resolve(dir, p string) string {
	if p == "" || dir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
