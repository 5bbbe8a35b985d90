// Package config loads and validates ptproxy configuration files.
//
// The file format is the one of the original Rust ptproxy (TOML, sections
// [general], [tls], [transport] and [system], integer milliseconds for
// durations, case-sensitive capitalised enum values), so existing ptproxy
// configuration files load unchanged. ptproxy-go adds a few fields of its own,
// kept in the same sections and marked "ptproxy-go extension" in
// docs/config.md.
//
// Values are layered, lowest to highest precedence: built-in defaults
// ([Defaults]), the file (TOML, or YAML with the same keys when the name ends
// in .yaml/.yml), then environment variables named
// PTPROXY_<SECTION>__<FIELD> (for example PTPROXY_GENERAL__PEER_HOSTNAME).
//
// Every problem is reported as a [*FieldError]; several problems are joined
// with [errors.Join] so the operator sees all of them at once.
//
// config imports only the standard library and koanf (with its mapstructure
// decoder).
package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Millis is a duration written as an integer number of milliseconds, the unit
// ptproxy uses for every duration in its configuration file.
type Millis int64

// Duration converts m to a [time.Duration].
func (m Millis) Duration() time.Duration { return time.Duration(m) * time.Millisecond }

// Mode is the role of this ptproxy instance ([general] mode).
type Mode string

// The two roles. The spelling is case-sensitive, as in the original.
const (
	// ModeClient listens for HTTP/1.1 requests and dials the peer over QUIC.
	ModeClient Mode = "Client"
	// ModeServer accepts the peer's QUIC connection and sends requests to the
	// origin.
	ModeServer Mode = "Server"
)

// CongestionAlgorithm is the [transport] congestion_algorithm value. quic-go
// cannot select a congestion controller, so it is accepted for compatibility
// only (see [Config.Warnings]).
type CongestionAlgorithm string

// The values the original accepts (case-sensitive).
const (
	CongestionBbr     CongestionAlgorithm = "Bbr"
	CongestionCubic   CongestionAlgorithm = "Cubic"
	CongestionNewReno CongestionAlgorithm = "NewReno"
	CongestionNone    CongestionAlgorithm = "None"
)

// FECMode is the [transport] fec value (ptproxy-go extension).
type FECMode string

// FEC modes. Both ends must set the same one.
const (
	// FECOff sends plain QUIC datagrams on the socket (the default).
	FECOff FECMode = "off"
	// FECOn adds Reed-Solomon repair datagrams below QUIC (docs/transport.md).
	FECOn FECMode = "on"
	// FECAuto is FECOn with the repairs and their interleaving following
	// the loss the peer measures and reports (docs/transport.md).
	FECAuto FECMode = "auto"
)

// LogFormat selects the operator log encoding (ptproxy-go extension).
type LogFormat string

// Log formats.
const (
	// LogFormatAuto is human-readable text when stderr is a terminal, JSON
	// otherwise.
	LogFormatAuto LogFormat = "auto"
	LogFormatText LogFormat = "text"
	LogFormatJSON LogFormat = "json"
)

// LogLevel is the minimum level of the operator log (ptproxy-go extension).
type LogLevel string

// Log levels.
const (
	LogLevelDebug LogLevel = "debug"
	LogLevelInfo  LogLevel = "info"
	LogLevelWarn  LogLevel = "warn"
	LogLevelError LogLevel = "error"
)

// Defaults of the original ptproxy and of the ptproxy-go extensions.
const (
	DefaultQUICPort          = 20010
	DefaultBindAddress       = "::"
	DefaultHTTPBindAddress   = "[::]:20080"
	DefaultStreamReceiveWin  = 1_000_000
	DefaultInitialWindow     = 14_720
	DefaultReceiveWindow     = 15 * 1024 * 1024 // quic-go's own maximum connection window; see docs/config.md
	DefaultMaxConcurrentHTTP = 100
	DefaultFECGroupSize      = 16
	DefaultFECRepair         = 2
	MaxFECGroupSize          = 128
	MaxFECRepair             = 32

	// DefaultFECPacketSize is quic-go's packet size with FEC on: a repair
	// (packet + 10 bytes) is then no larger than quic-go's own first
	// packets without FEC (1280 B), which every QUIC path must carry.
	DefaultFECPacketSize = 1270
	// MinFECPacketSize and MaxFECPacketSize bound transport.fec_packet_size:
	// QUIC's smallest datagram (RFC 9000 14), and quic-go's largest.
	MinFECPacketSize = 1200
	MaxFECPacketSize = 1452
)

// Config is a loaded, validated ptproxy configuration.
//
// Build one with [Load], [LoadFile] or [LoadBytes]. After loading:
//   - TLS paths (and transport.qlog_dir) are absolute or relative to the
//     process working directory, already resolved against the directory of
//     the configuration file;
//   - in Client mode General.ConnectAddress holds the effective dial host
//     (peer_hostname when not set) and General.HTTPConnectAddress is empty;
//   - in Server mode General.ConnectAddress and General.HTTPBindAddress are
//     empty.
type Config struct {
	General   General   `koanf:"general" json:"general"`
	TLS       TLS       `koanf:"tls" json:"tls"`
	Transport Transport `koanf:"transport" json:"transport"`
	System    System    `koanf:"system" json:"system"`

	// Server-side routing (ptproxy-go extension, docs/routes.md): arrays of
	// tables, decoded apart from the flat key schema (routes.go).
	OriginGroups    []OriginGroup   `koanf:"-" json:"origin_groups,omitempty"`
	Endpoints       []Endpoint      `koanf:"-" json:"endpoints,omitempty"`
	DefaultEndpoint DefaultEndpoint `koanf:"-" json:"default_endpoint,omitzero"`
	// Client mode: extra listeners, and routes to named endpoints
	// (client_routes.go).
	Listeners []Listener `koanf:"-" json:"listeners,omitempty"`
	Routes    []Route    `koanf:"-" json:"routes,omitempty"`
	// Client mode: servers besides general.peer_hostname's (servers.go).
	Servers []Server `koanf:"-" json:"servers,omitempty"`

	// file is the configuration file name used in errors ("" if none).
	file string
	// set holds the keys ("section.field") given explicitly in the file or the
	// environment.
	set map[string]bool
	// env maps a key set from the environment to its variable name.
	env map[string]string
	// ignoredEnv lists PTPROXY_* variables not of the config's shape.
	ignoredEnv []string
}

// IgnoredEnv lists the PTPROXY_* variables that were not read because they
// do not have the PTPROXY_<SECTION>__<FIELD> shape (for a debug line).
func (c *Config) IgnoredEnv() []string { return c.ignoredEnv }

// General is the [general] section (required).
type General struct {
	// Mode is "Client" or "Server" (required, case-sensitive).
	Mode Mode `koanf:"mode" json:"mode"`
	// PeerHostname is the name the peer's certificate must match (Client: also
	// the SNI and the default dial target). A DNS name or an IP literal.
	PeerHostname string `koanf:"peer_hostname" json:"peer_hostname"`
	// PeerHostnames (Server only) are further client names accepted besides
	// PeerHostname; the name a client certificate matched is its identity
	// for the endpoints' access rules.
	PeerHostnames []string `koanf:"peer_hostnames" json:"peer_hostnames,omitempty"`
	// QUICPort is the UDP port bound (Server) or dialled (Client).
	QUICPort int `koanf:"quic_port" json:"quic_port"`
	// BindAddress is the local IP of the QUIC UDP socket.
	BindAddress string `koanf:"bind_address" json:"bind_address"`
	// ConnectAddress (Client only) is the host or IP dialled; resolved by the
	// session at every attempt. Defaults to PeerHostname.
	ConnectAddress string `koanf:"connect_address" json:"connect_address"`
	// HTTPBindAddress (Client only) is the host:port of the HTTP/1.1 listener.
	HTTPBindAddress string `koanf:"http_bind_address" json:"http_bind_address"`
	// HTTPConnectAddress (Server only, required there) is the host:port of the
	// plain-HTTP origin.
	HTTPConnectAddress string `koanf:"http_connect_address" json:"http_connect_address"`
	// ServerSelection (Client only) is how requests pick a server when
	// [[servers]] adds more: "priority" or "active_active".
	ServerSelection ServerSelection `koanf:"server_selection" json:"server_selection,omitempty"`
}

// TLS is the [tls] section (required).
type TLS struct {
	// CA is a PEM bundle to verify the peer against; empty means the system
	// roots.
	CA string `koanf:"ca" json:"ca"`
	// SkipVerify is accepted for compatibility and NEVER honoured: ptproxy-go
	// always verifies the peer. [Config.Warnings] reports it when true.
	SkipVerify bool `koanf:"skip_verify" json:"skip_verify"`
	// Cert is the PEM certificate chain presented to the peer (required).
	Cert string `koanf:"cert" json:"cert"`
	// Key is the PEM private key of Cert (required).
	Key string `koanf:"key" json:"key"`
	// ListenerCert and ListenerKey (Client only, both or neither) make the
	// HTTP/1.1 listener speak TLS (HTTPS) to local callers that want it.
	ListenerCert string `koanf:"listener_cert" json:"listener_cert"`
	ListenerKey  string `koanf:"listener_key" json:"listener_key"`
}

// Transport is the [transport] section (optional). Zero values of the
// optional fields (InitialRTT, SendWindow, socket buffer sizes) mean "not
// set"; an explicit 0 in the file is refused.
type Transport struct {
	MaxIdleTimeout           Millis              `koanf:"max_idle_timeout" json:"max_idle_timeout"`
	KeepAliveInterval        Millis              `koanf:"keep_alive_interval" json:"keep_alive_interval"`
	InitialRTT               Millis              `koanf:"initial_rtt" json:"initial_rtt"` // no effect with quic-go
	MaxConcurrentHTTPStreams int                 `koanf:"max_concurrent_http_streams" json:"max_concurrent_http_streams"`
	StreamReceiveWindow      int64               `koanf:"stream_receive_window" json:"stream_receive_window"`
	InitialWindow            int64               `koanf:"initial_window" json:"initial_window"` // no effect with quic-go
	ReceiveWindow            int64               `koanf:"receive_window" json:"receive_window"`
	SendWindow               int64               `koanf:"send_window" json:"send_window"` // no effect with quic-go
	SocketReceiveBufferSize  int64               `koanf:"socket_receive_buffer_size" json:"socket_receive_buffer_size"`
	SocketSendBufferSize     int64               `koanf:"socket_send_buffer_size" json:"socket_send_buffer_size"`
	CongestionAlgorithm      CongestionAlgorithm `koanf:"congestion_algorithm" json:"congestion_algorithm"` // no effect with quic-go

	// ---- ptproxy-go extensions (not in the original) ----

	// MaxRequestLineBytes bounds an HTTP/1.1 request line.
	MaxRequestLineBytes int `koanf:"max_request_line_bytes" json:"max_request_line_bytes"`
	// MaxHeaderBytes bounds a whole HTTP/1.1 head (start line + fields).
	MaxHeaderBytes int `koanf:"max_header_bytes" json:"max_header_bytes"`
	// MaxHeaderCount bounds the number of header fields of an HTTP/1.1 head.
	MaxHeaderCount int `koanf:"max_header_count" json:"max_header_count"`
	// MaxResponseHeaderBytes bounds an origin's response head (Server); the
	// origin is trusted more than a caller, so the default is Go's client's.
	MaxResponseHeaderBytes int `koanf:"max_response_header_bytes" json:"max_response_header_bytes"`
	// QlogDir, when set, receives one qlog file per QUIC connection.
	QlogDir string `koanf:"qlog_dir" json:"qlog_dir"`
	// FEC switches forward error correction below QUIC, "off", "on" or
	// "auto"; both ends must agree.
	FEC FECMode `koanf:"fec" json:"fec"`
	// FECGroupSize is the number of QUIC datagrams per FEC group.
	FECGroupSize int `koanf:"fec_group_size" json:"fec_group_size"`
	// FECRepair is the number of repair datagrams of a full group; with
	// "auto" the most the adaptive mode may send when set explicitly.
	FECRepair int `koanf:"fec_repair" json:"fec_repair"`
	// FECPacketSize is the size of quic-go's packets with FEC on (path
	// MTU discovery is off then); a datagram on the wire is up to 10
	// bytes larger.
	FECPacketSize int `koanf:"fec_packet_size" json:"fec_packet_size"`
}

// System is the [system] section (optional).
type System struct {
	ConnectInterval     Millis  `koanf:"connect_interval" json:"connect_interval"`
	TCPNodelay          bool    `koanf:"tcp_nodelay" json:"tcp_nodelay"`
	WaitForFirstAttempt bool    `koanf:"wait_for_first_attempt" json:"wait_for_first_attempt"`
	WatchdogFactor      float64 `koanf:"watchdog_factor" json:"watchdog_factor"`
	AddForwarded        bool    `koanf:"add_forwarded" json:"add_forwarded"`

	// ---- ptproxy-go extensions (not in the original) ----

	// DrainTimeout bounds how long the first SIGINT/SIGTERM waits for
	// in-flight requests; 0 waits without limit (the original's behaviour).
	DrainTimeout Millis `koanf:"drain_timeout" json:"drain_timeout"`
	// AdminAddress, when set, is the host:port of a metrics/health listener.
	AdminAddress string `koanf:"admin_address" json:"admin_address"`
	// HeaderReadTimeout bounds reading an HTTP/1.1 request head; 0 = none.
	HeaderReadTimeout Millis `koanf:"header_read_timeout" json:"header_read_timeout"`
	// UpstreamTimeout bounds waiting for the origin's response head; 0 = none.
	UpstreamTimeout Millis `koanf:"upstream_timeout" json:"upstream_timeout"`
	// SessionWaitTimeout bounds how long a request that finds no session
	// (Client) waits for one before it is answered 503; 0 answers at once
	// (the original's behaviour).
	SessionWaitTimeout Millis `koanf:"session_wait_timeout" json:"session_wait_timeout"`
	// MaxConnections bounds concurrent HTTP/1.1 connections on the client
	// listener.
	MaxConnections int `koanf:"max_connections" json:"max_connections"`
	// LogFormat is "auto", "text" or "json".
	LogFormat LogFormat `koanf:"log_format" json:"log_format"`
	// LogLevel is "debug", "info", "warn" or "error".
	LogLevel LogLevel `koanf:"log_level" json:"log_level"`
	// AccessLog logs one line per proxied request.
	AccessLog bool `koanf:"access_log" json:"access_log"`
	// OriginIdleTimeout is how long a pooled origin connection may stay
	// idle (Server); below the origin's own keep-alive timeout.
	OriginIdleTimeout Millis `koanf:"origin_idle_timeout" json:"origin_idle_timeout"`
	// DefaultHost is the authority for an HTTP/1.0 request without Host
	// (Client); empty means the address the caller connected to.
	DefaultHost string `koanf:"default_host" json:"default_host"`
}

// Defaults returns the built-in defaults: the lowest configuration layer.
// Required fields (mode, peer_hostname, cert, key, and http_connect_address
// in Server mode) are empty, and connect_address is empty because its default
// is derived from peer_hostname at load time.
func Defaults() Config {
	return Config{
		General: General{
			QUICPort:        DefaultQUICPort,
			BindAddress:     DefaultBindAddress,
			HTTPBindAddress: DefaultHTTPBindAddress,
			ServerSelection: SelectPriority,
		},
		Transport: Transport{
			MaxIdleTimeout:           5000,
			KeepAliveInterval:        2000,
			MaxConcurrentHTTPStreams: DefaultMaxConcurrentHTTP,
			StreamReceiveWindow:      DefaultStreamReceiveWin,
			InitialWindow:            DefaultInitialWindow,
			ReceiveWindow:            DefaultReceiveWindow,
			CongestionAlgorithm:      CongestionBbr,

			MaxRequestLineBytes: 8192,
			MaxHeaderBytes:      65536,
			MaxHeaderCount:      100,

			MaxResponseHeaderBytes: 10 << 20,

			FEC:          FECOff,
			FECGroupSize: DefaultFECGroupSize,
			FECRepair:    DefaultFECRepair,

			FECPacketSize: DefaultFECPacketSize,
		},
		System: System{
			ConnectInterval:     1000,
			TCPNodelay:          true,
			WaitForFirstAttempt: true,
			WatchdogFactor:      1.5,
			AddForwarded:        false,

			DrainTimeout:       30000,
			HeaderReadTimeout:  10000,
			UpstreamTimeout:    0,
			SessionWaitTimeout: 5000,
			MaxConnections:     1024,
			LogFormat:          LogFormatAuto,
			LogLevel:           LogLevelInfo,
			AccessLog:          false,
			OriginIdleTimeout:  4000,
			DefaultHost:        "",
		},
	}
}

// File returns the name of the configuration file c was loaded from ("" when
// loaded from bytes without a name).
func (c *Config) File() string { return c.file }

// IsSet reports whether key ("section.field", e.g. "transport.initial_rtt")
// was given explicitly in the file or the environment, as opposed to coming
// from the defaults.
func (c *Config) IsSet(key string) bool { return c.set[key] }

// EnvVar returns the environment variable that set key ("section.field"),
// or "" when the value came from the file or the defaults.
func (c *Config) EnvVar(key string) string { return c.env[key] }

// Setting is one configuration key with its effective value, for display.
type Setting struct {
	Key     string // "section.field"
	Value   string // as written in TOML: strings quoted
	Default string // the built-in default, in the same form
	Env     string // the environment variable that set it, or ""
}

// NonDefault returns the keys of section whose effective value differs
// from [Defaults], in declaration order. Paths are shown resolved.
func (c *Config) NonDefault(section string) []Setting {
	d := Defaults()
	var out []Setting
	for i := range schema {
		f := &schema[i]
		if f.Section != section {
			continue
		}
		v, dv := f.value(c), f.value(&d)
		if reflect.DeepEqual(v.Interface(), dv.Interface()) {
			continue
		}
		out = append(out, Setting{Key: f.Key, Value: tomlLiteral(v), Default: tomlLiteral(dv), Env: c.env[f.Key]})
	}
	return out
}

// tomlLiteral renders a field's value the way it is written in a TOML file.
func tomlLiteral(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String())
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = tomlLiteral(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// SetKeys returns the explicitly set keys, in declaration order.
func (c *Config) SetKeys() []string {
	var out []string
	for _, f := range schema {
		if c.set[f.Key] {
			out = append(out, f.Key)
		}
	}
	return out
}

// Warnings returns one message per explicitly set field that ptproxy-go
// accepts for compatibility but cannot honour, in a fixed order:
// transport.initial_rtt, transport.initial_window, transport.send_window,
// transport.congestion_algorithm, then tls.skip_verify (only when true). The
// composition root logs each at WARN level once at startup.
func (c *Config) Warnings() []string {
	var w []string
	if c.IsSet("transport.initial_rtt") {
		w = append(w, fmt.Sprintf("transport.initial_rtt = %d is accepted but has no effect: "+
			"quic-go has no initial-RTT setting (it always assumes 100 ms until the first RTT sample)",
			c.Transport.InitialRTT))
	}
	if c.IsSet("transport.initial_window") {
		w = append(w, fmt.Sprintf("transport.initial_window = %d is accepted but has no effect: "+
			"quic-go has no initial congestion window setting (it always starts at 32 packets)",
			c.Transport.InitialWindow))
	}
	if c.IsSet("transport.send_window") {
		w = append(w, fmt.Sprintf("transport.send_window = %d is accepted but has no effect: "+
			"quic-go has no send window setting (sending is bounded by the peer's flow-control windows and congestion control)",
			c.Transport.SendWindow))
	}
	if c.IsSet("transport.congestion_algorithm") {
		w = append(w, fmt.Sprintf("transport.congestion_algorithm = %q is accepted but has no effect: "+
			"quic-go cannot select a congestion controller; it always uses its built-in NewReno-style controller with pacing",
			c.Transport.CongestionAlgorithm))
	}
	if c.TLS.SkipVerify {
		w = append(w, "tls.skip_verify = true is IGNORED: ptproxy-go NEVER skips peer certificate verification; "+
			"the peer is still verified against tls.ca (or the system roots) and general.peer_hostname. "+
			"Remove the setting to silence this warning")
	}
	return w
}
