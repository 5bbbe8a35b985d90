package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

var update = flag.Bool("update", false, "rewrite the .golden and .err files under testdata/")

// noEnv is an empty environment: tests never read the real one.
var noEnv []string

func mustLoad(t *testing.T, path string, environ []string) *Config {
	t.Helper()
	c, err := LoadFile(path, environ)
	if err != nil {
		t.Fatalf("LoadFile(%s): %v", path, err)
	}
	return c
}

func loadString(t *testing.T, text string, environ []string) (*Config, error) {
	t.Helper()
	return LoadBytes([]byte(text), FormatTOML, "/etc/ptproxy/test.toml", environ)
}

// fields lists the Field of every *FieldError in err, in order.
func fields(err error) []string {
	var out []string
	for _, fe := range FieldErrors(err) {
		out = append(out, fe.Field)
	}
	return out
}

func TestReadmeClientExample(t *testing.T) {
	c := mustLoad(t, "testdata/valid/client.toml", noEnv)
	dir := filepath.Join("testdata", "valid")

	want := Defaults()
	want.General.Mode = ModeClient
	want.General.PeerHostname = "bar.example.org"
	want.General.ConnectAddress = "bar.example.org" // defaults to peer_hostname
	want.General.HTTPBindAddress = "127.0.0.1:20080"
	want.TLS.CA = filepath.Join(dir, "rootCA.pem")
	want.TLS.Cert = filepath.Join(dir, "foo.example.org-client.pem")
	want.TLS.Key = filepath.Join(dir, "foo.example.org-client-key.pem")
	assertConfig(t, c, &want)

	// The documented defaults, spelled out.
	if c.General.QUICPort != 20010 || c.General.BindAddress != "::" {
		t.Errorf("quic_port/bind_address = %d/%q", c.General.QUICPort, c.General.BindAddress)
	}
	if c.Transport.MaxIdleTimeout.Duration() != 5*time.Second || c.Transport.KeepAliveInterval.Duration() != 2*time.Second {
		t.Errorf("timeouts = %v/%v", c.Transport.MaxIdleTimeout.Duration(), c.Transport.KeepAliveInterval.Duration())
	}
	if c.System.ConnectInterval.Duration() != time.Second || !c.System.TCPNodelay || !c.System.WaitForFirstAttempt || c.System.WatchdogFactor != 1.5 || c.System.AddForwarded {
		t.Errorf("system = %+v", c.System)
	}
	if got := c.SetKeys(); !slices.Equal(got, []string{"general.mode", "general.peer_hostname", "general.http_bind_address", "tls.ca", "tls.cert", "tls.key"}) {
		t.Errorf("SetKeys = %v", got)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q, want none", w)
	}
	if c.File() != "testdata/valid/client.toml" {
		t.Errorf("File = %q", c.File())
	}
}

func TestReadmeServerExample(t *testing.T) {
	c := mustLoad(t, "testdata/valid/server.toml", noEnv)
	dir := filepath.Join("testdata", "valid")

	want := Defaults()
	want.General.Mode = ModeServer
	want.General.PeerHostname = "foo.example.org"
	want.General.HTTPBindAddress = "" // Client only
	want.General.ServerSelection = "" // Client only
	want.General.HTTPConnectAddress = "localhost:8081"
	want.TLS.CA = filepath.Join(dir, "rootCA.pem")
	want.TLS.Cert = filepath.Join(dir, "bar.example.org.pem")
	want.TLS.Key = filepath.Join(dir, "bar.example.org-key.pem")
	assertConfig(t, c, &want)
}

func assertConfig(t *testing.T, got, want *Config) {
	t.Helper()
	g, _ := json.MarshalIndent(got, "", "  ")
	w, _ := json.MarshalIndent(want, "", "  ")
	if !bytes.Equal(g, w) {
		t.Errorf("config mismatch\ngot:\n%s\nwant:\n%s", g, w)
	}
}

// TestDefaults pins every built-in default, independently of Defaults().
func TestDefaults(t *testing.T) {
	d := Defaults()
	want := Config{
		General: General{QUICPort: 20010, BindAddress: "::", HTTPBindAddress: "[::]:20080", ServerSelection: "priority"},
		Transport: Transport{
			MaxIdleTimeout: 5000, KeepAliveInterval: 2000, MaxConcurrentHTTPStreams: 100,
			StreamReceiveWindow: 1_000_000, InitialWindow: 14720, ReceiveWindow: 15 * 1024 * 1024,
			CongestionAlgorithm: "Bbr",
			MaxRequestLineBytes: 8192, MaxHeaderBytes: 65536, MaxHeaderCount: 100,
			MaxResponseHeaderBytes: 10 << 20,
			FEC:                    "off", FECGroupSize: 16, FECRepair: 2, FECPacketSize: 1270,
		},
		System: System{
			ConnectInterval: 1000, TCPNodelay: true, WaitForFirstAttempt: true, WatchdogFactor: 1.5,
			DrainTimeout: 30000, HeaderReadTimeout: 10000, UpstreamTimeout: 0, SessionWaitTimeout: 5000, MaxConnections: 1024,
			LogFormat: "auto", LogLevel: "info", OriginIdleTimeout: 4000,
		},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Defaults() =\n%+v\nwant\n%+v", d, want)
	}

	// A minimal file gets exactly these for every optional section.
	c, err := loadString(t, "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Transport != want.Transport || c.System != want.System {
		t.Errorf("loaded transport/system differ from defaults:\n%+v\n%+v", c.Transport, c.System)
	}
	if c.General.HTTPBindAddress != "[::]:20080" || c.General.ConnectAddress != "p" || c.TLS.CA != "" || c.TLS.SkipVerify {
		t.Errorf("general/tls defaults: %+v %+v", c.General, c.TLS)
	}
}

func TestMillis(t *testing.T) {
	if got := Millis(1500).Duration(); got != 1500*time.Millisecond {
		t.Errorf("Millis(1500).Duration() = %v", got)
	}
}

// TestGolden loads every valid fixture and compares the Config, as indented
// JSON, with <stem>.golden. A TOML fixture and its YAML twin share the golden
// file, which pins that both syntaxes give identical structs.
func TestGolden(t *testing.T) {
	paths, err := filepath.Glob("testdata/valid/*.*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range paths {
		ext := filepath.Ext(p)
		if ext != ".toml" && ext != ".yaml" && ext != ".yml" {
			continue
		}
		n++
		t.Run(filepath.Base(p), func(t *testing.T) {
			c := mustLoad(t, p, noEnv)
			got, err := json.MarshalIndent(c, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := strings.TrimSuffix(p, ext) + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s:\n%s", p, golden, got)
			}
		})
	}
	if n < 5 {
		t.Fatalf("found only %d valid fixtures", n)
	}
}

func TestYAMLMatchesTOML(t *testing.T) {
	for _, stem := range []string{"client", "server"} {
		tc := mustLoad(t, "testdata/valid/"+stem+".toml", noEnv)
		yc := mustLoad(t, "testdata/valid/"+stem+".yaml", noEnv)
		if !reflect.DeepEqual(tc.General, yc.General) || tc.TLS != yc.TLS || tc.Transport != yc.Transport || tc.System != yc.System {
			t.Errorf("%s: YAML and TOML differ", stem)
		}
		if !slices.Equal(tc.SetKeys(), yc.SetKeys()) {
			t.Errorf("%s: set keys differ: %v vs %v", stem, tc.SetKeys(), yc.SetKeys())
		}
	}
}

func TestFormatFromPath(t *testing.T) {
	for path, want := range map[string]Format{
		"a.toml": FormatTOML, "a.yaml": FormatYAML, "a.YML": FormatYAML, "/etc/ptproxy/x": FormatTOML, "a.conf": FormatTOML,
	} {
		if got := FormatFromPath(path); got != want {
			t.Errorf("FormatFromPath(%q) = %q, want %q", path, got, want)
		}
	}
	if _, err := LoadBytes(nil, "json", "x", noEnv); err == nil {
		t.Error("unsupported format accepted")
	}
}

func TestEnvOverridesFile(t *testing.T) {
	env := []string{
		"HOME=/root", // not ours: ignored
		"PTPROXY_GENERAL__PEER_HOSTNAME=baz.example.org",
		"PTPROXY_SYSTEM__ADD_FORWARDED=true",
		"PTPROXY_TRANSPORT__MAX_IDLE_TIMEOUT=12000",
		"PTPROXY_SYSTEM__WATCHDOG_FACTOR=3",
		"PTPROXY_TLS__CERT=other.pem",
		"PTPROXY_TRANSPORT__INITIAL_RTT=50",
	}
	c := mustLoad(t, "testdata/valid/client.toml", env)
	if c.General.PeerHostname != "baz.example.org" || c.General.ConnectAddress != "baz.example.org" {
		t.Errorf("peer_hostname/connect_address = %q/%q", c.General.PeerHostname, c.General.ConnectAddress)
	}
	if !c.System.AddForwarded || c.Transport.MaxIdleTimeout != 12000 || c.System.WatchdogFactor != 3 {
		t.Errorf("env values not applied: %+v %+v", c.System, c.Transport)
	}
	if want := filepath.Join("testdata", "valid", "other.pem"); c.TLS.Cert != want {
		t.Errorf("tls.cert = %q, want %q (relative to the file's directory)", c.TLS.Cert, want)
	}
	if c.General.HTTPBindAddress != "127.0.0.1:20080" {
		t.Errorf("file value lost: %q", c.General.HTTPBindAddress)
	}
	for _, k := range []string{"system.add_forwarded", "transport.initial_rtt", "general.peer_hostname"} {
		if !c.IsSet(k) {
			t.Errorf("IsSet(%q) = false", k)
		}
	}
	if c.IsSet("system.tcp_nodelay") {
		t.Error("IsSet(system.tcp_nodelay) = true for a default")
	}
	if w := c.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "transport.initial_rtt") {
		t.Errorf("Warnings = %q", w)
	}
}

func TestEnvAloneSuppliesSections(t *testing.T) {
	env := []string{
		"PTPROXY_GENERAL__MODE=Server",
		"PTPROXY_GENERAL__PEER_HOSTNAME=foo.example.org",
		"PTPROXY_GENERAL__HTTP_CONNECT_ADDRESS=localhost:8081",
		"PTPROXY_TLS__CERT=c.pem",
		"PTPROXY_TLS__KEY=k.pem",
	}
	c, err := LoadBytes(nil, FormatTOML, "", env)
	if err != nil {
		t.Fatal(err)
	}
	if c.General.Mode != ModeServer || c.TLS.Key != "k.pem" {
		t.Errorf("got %+v %+v", c.General, c.TLS)
	}
}

// TestForeignEnvIgnored: PTPROXY_* names that do not have the config's
// shape belong to someone else (Kubernetes' service links for a Service
// named ptproxy, scripts) and must not stop the process.
func TestForeignEnvIgnored(t *testing.T) {
	file := "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n"
	foreign := []string{
		"PTPROXY_PORT=tcp://10.96.0.12:20080",
		"PTPROXY_SERVICE_HOST=10.96.0.12",
		"PTPROXY_SERVICE_PORT=20080",
		"PTPROXY_PORT_20080_TCP_ADDR=10.96.0.12",
		"PTPROXY_PORT_20080_TCP_PROTO=tcp",
		"PTPROXY_BIN=/usr/local/bin/ptproxy",
		"PTPROXY_CONFIG=/etc/x.toml",
	}
	c, err := loadString(t, file, append(foreign, "PTPROXY_GENERAL__PEER_HOSTNAME=q"))
	if err != nil {
		t.Fatal(err)
	}
	if c.General.PeerHostname != "q" {
		t.Errorf("the config's own variable was not applied: %q", c.General.PeerHostname)
	}
	got := c.IgnoredEnv()
	slices.Sort(got)
	want := []string{"PTPROXY_BIN", "PTPROXY_CONFIG", "PTPROXY_PORT", "PTPROXY_PORT_20080_TCP_ADDR", "PTPROXY_PORT_20080_TCP_PROTO", "PTPROXY_SERVICE_HOST", "PTPROXY_SERVICE_PORT"}
	if !slices.Equal(got, want) {
		t.Errorf("ignored %v, want %v", got, want)
	}
}

func TestEnvErrors(t *testing.T) {
	file := "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n"
	tests := []struct {
		env, wantEnv, wantField, wantProblem string
	}{
		{"PTPROXY_GENERAL__QUIC_PORT=abc", "PTPROXY_GENERAL__QUIC_PORT", "general.quic_port", `expected integer, got "abc"`},
		{"PTPROXY_TRANSPORT__MAX_IDLE_TIMEOUT=5s", "PTPROXY_TRANSPORT__MAX_IDLE_TIMEOUT", "transport.max_idle_timeout", `expected integer (milliseconds), got "5s"`},
		{"PTPROXY_SYSTEM__ADD_FORWARDED=yes", "PTPROXY_SYSTEM__ADD_FORWARDED", "system.add_forwarded", "expected boolean"},
		{"PTPROXY_SYSTEM__WATCHDOG_FACTOR=fast", "PTPROXY_SYSTEM__WATCHDOG_FACTOR", "system.watchdog_factor", "expected float"},
		{"PTPROXY_GENERAL__PEER_HOSTNME=x", "PTPROXY_GENERAL__PEER_HOSTNME", "", `unknown key "general.peer_hostnme"`},
		{"PTPROXY_QUIC__PORT=1", "PTPROXY_QUIC__PORT", "", `unknown section "quic"`},
		{"PTPROXY_GENERAL_MODE=Client", "PTPROXY_GENERAL_MODE", "", "double underscore: PTPROXY_GENERAL__MODE"},
		{"PTPROXY_SYSTEM_ADD_FORWARDED=true", "PTPROXY_SYSTEM_ADD_FORWARDED", "", "double underscore: PTPROXY_SYSTEM__ADD_FORWARDED"},
		{"PTPROXY_GENERAL__NO_SUCH_FIELD=1", "PTPROXY_GENERAL__NO_SUCH_FIELD", "", `unknown key "general.no_such_field"`},
		// A valid value that fails validation names the variable too.
		{"PTPROXY_GENERAL__QUIC_PORT=0", "PTPROXY_GENERAL__QUIC_PORT", "general.quic_port", "between 1 and 65535"},
		{"PTPROXY_GENERAL__MODE=client", "PTPROXY_GENERAL__MODE", "general.mode", `"Client", "Server"`},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			_, err := loadString(t, file, []string{tt.env})
			fes := FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(fes), err)
			}
			fe := fes[0]
			if fe.Env != tt.wantEnv || fe.Field != tt.wantField || !strings.Contains(fe.Problem, tt.wantProblem) {
				t.Errorf("got %+v", fe)
			}
			if !strings.Contains(err.Error(), tt.wantEnv) {
				t.Errorf("message does not name the variable: %v", err)
			}
		})
	}
}

func TestRelativePaths(t *testing.T) {
	text := "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\n" +
		"[tls]\nca = \"ca/root.pem\"\ncert = \"/abs/cert.pem\"\nkey = \"../private/key.pem\"\n" +
		"[transport]\nqlog_dir = \"qlog\"\n"
	tests := []struct {
		path                string
		ca, cert, key, qlog string
	}{
		{"/etc/ptproxy/foo.toml", "/etc/ptproxy/ca/root.pem", "/abs/cert.pem", "/etc/private/key.pem", "/etc/ptproxy/qlog"},
		{"conf/foo.toml", "conf/ca/root.pem", "/abs/cert.pem", "private/key.pem", "conf/qlog"},
		{"foo.toml", "ca/root.pem", "/abs/cert.pem", "../private/key.pem", "qlog"},
		{"", "ca/root.pem", "/abs/cert.pem", "../private/key.pem", "qlog"},
	}
	for _, tt := range tests {
		c, err := LoadBytes([]byte(text), FormatTOML, tt.path, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		got := [4]string{c.TLS.CA, c.TLS.Cert, c.TLS.Key, c.Transport.QlogDir}
		want := [4]string{filepath.FromSlash(tt.ca), filepath.FromSlash(tt.cert), filepath.FromSlash(tt.key), filepath.FromSlash(tt.qlog)}
		if got != want {
			t.Errorf("path %q: got %q, want %q", tt.path, got, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "nope.toml"), noEnv)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}

// TestInvalid loads every invalid fixture, checks which fields the errors
// name, and compares the full message with <file>.err.
func TestInvalid(t *testing.T) {
	tests := map[string][]string{
		"unknown-key.toml":                 {"general.peer_hostnme", "general.peer_hostname"},
		"unknown-key.yaml":                 {"general.http_bind_adress"},
		"unknown-section.toml":             {"quic"},
		"section-not-table.toml":           {"transport"},
		"missing-sections.toml":            {"general", "tls", "transport.max_idle_timeout"},
		"missing-required.toml":            {"general.mode", "general.peer_hostname", "tls.cert", "tls.key"},
		"lowercase-mode.toml":              {"general.mode"},
		"bad-types.toml":                   {"general.quic_port", "system.tcp_nodelay", "system.watchdog_factor", "tls.skip_verify", "transport.congestion_algorithm", "transport.initial_rtt", "transport.max_idle_timeout", "transport.stream_receive_window"},
		"client-with-server-fields.toml":   {"general.http_connect_address"},
		"server-with-client-fields.toml":   {"general.connect_address", "general.http_bind_address"},
		"server-missing-http-connect.toml": {"general.http_connect_address"},
		"bad-enums.toml":                   {"transport.congestion_algorithm", "transport.fec", "system.log_format", "system.log_level"},
		"fec-too-large.toml":               {"transport.fec_group_size", "transport.fec_repair", "transport.fec_packet_size"},
		"watchdog-zero.toml":               {"system.watchdog_factor"},
		"watchdog-negative.toml":           {"system.watchdog_factor"},
		"watchdog-nan.toml":                {"system.watchdog_factor"},
		"bad-addresses.toml":               {"general.peer_hostname", "general.quic_port", "general.bind_address", "general.connect_address", "general.http_bind_address", "system.admin_address", "system.default_host"},
		"bad-http-connect.toml":            {"general.http_connect_address"},
		"zero-values.toml": {"general.quic_port", "transport.max_idle_timeout", "transport.keep_alive_interval",
			"transport.initial_rtt", "transport.max_concurrent_http_streams", "transport.stream_receive_window",
			"transport.initial_window", "transport.receive_window", "transport.send_window",
			"transport.socket_receive_buffer_size", "transport.socket_send_buffer_size",
			"transport.max_request_line_bytes", "transport.max_header_bytes", "transport.max_header_count",
			"transport.max_response_header_bytes", "transport.fec_group_size", "transport.fec_repair", "transport.fec_packet_size",
			"system.connect_interval", "system.drain_timeout", "system.header_read_timeout",
			"system.upstream_timeout", "system.session_wait_timeout", "system.max_connections", "system.origin_idle_timeout"},
		"syntax.toml": {""},
		"null.yaml":   {"tls.ca"},
	}
	paths, _ := filepath.Glob("testdata/invalid/*")
	for _, p := range paths {
		if strings.HasSuffix(p, ".err") {
			continue
		}
		if _, ok := tests[filepath.Base(p)]; !ok {
			t.Errorf("fixture %s has no entry in the test table", p)
		}
	}
	for name, wantFields := range tests {
		t.Run(name, func(t *testing.T) {
			p := "testdata/invalid/" + name
			c, err := LoadFile(p, noEnv)
			if err == nil {
				t.Fatalf("loaded without error: %+v", c)
			}
			if c != nil {
				t.Error("non-nil Config with an error")
			}
			fes := FieldErrors(err)
			if len(fes) == 0 {
				t.Fatalf("no *FieldError in %v", err)
			}
			for _, fe := range fes {
				if fe.File != p {
					t.Errorf("error does not name the file: %+v", fe)
				}
			}
			got := fields(err)
			if !sameSet(got, wantFields) {
				t.Errorf("fields = %q, want %q\n%v", got, wantFields, err)
			}
			msg := err.Error() + "\n"
			golden := p + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(msg), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("%v (run go test ./config -update)", rerr)
			}
			if msg != string(want) {
				t.Errorf("message differs from %s:\ngot:\n%s\nwant:\n%s", golden, msg, want)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestUnknownKeyMessage(t *testing.T) {
	_, err := LoadFile("testdata/invalid/unknown-key.toml", noEnv)
	msg := err.Error()
	for _, want := range []string{"testdata/invalid/unknown-key.toml", "general.peer_hostnme", "unknown key", `did you mean "peer_hostname"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestModeRules(t *testing.T) {
	const tlsSec = "[tls]\ncert = \"c\"\nkey = \"k\"\n"
	tests := []struct {
		name    string
		general string
		want    []string // fields in error; nil = valid
	}{
		{"client minimal", `mode = "Client"` + "\npeer_hostname = \"p\"", nil},
		{"client http_bind_address", `mode = "Client"` + "\npeer_hostname = \"p\"\nhttp_bind_address = \"[::1]:8080\"", nil},
		{"client connect_address", `mode = "Client"` + "\npeer_hostname = \"p\"\nconnect_address = \"192.0.2.1\"", nil},
		{"client http_connect_address", `mode = "Client"` + "\npeer_hostname = \"p\"\nhttp_connect_address = \"o:80\"", []string{"general.http_connect_address"}},
		{"server minimal", `mode = "Server"` + "\npeer_hostname = \"p\"\nhttp_connect_address = \"o:80\"", nil},
		{"server no port", `mode = "Server"` + "\npeer_hostname = \"p\"\nhttp_connect_address = \"origin\"", nil},
		{"server missing http_connect_address", `mode = "Server"` + "\npeer_hostname = \"p\"", []string{"general.http_connect_address"}},
		{"server empty http_connect_address", `mode = "Server"` + "\npeer_hostname = \"p\"\nhttp_connect_address = \"\"", []string{"general.http_connect_address"}},
		{"server http_bind_address default value", `mode = "Server"` + "\npeer_hostname = \"p\"\nhttp_connect_address = \"o:80\"\nhttp_bind_address = \"[::]:20080\"", []string{"general.http_bind_address"}},
		{"server connect_address", `mode = "Server"` + "\npeer_hostname = \"p\"\nhttp_connect_address = \"o:80\"\nconnect_address = \"p\"", []string{"general.connect_address"}},
		{"lowercase server", `mode = "server"` + "\npeer_hostname = \"p\"", []string{"general.mode"}},
		{"upper case", `mode = "CLIENT"` + "\npeer_hostname = \"p\"", []string{"general.mode"}},
		{"missing mode", `peer_hostname = "p"`, []string{"general.mode"}},
		{"peer ip", `mode = "Client"` + "\npeer_hostname = \"2001:db8::2\"", nil},
		{"peer bad", `mode = "Client"` + "\npeer_hostname = \"bad host\"", []string{"general.peer_hostname"}},
		{"peer empty", `mode = "Client"` + "\npeer_hostname = \"\"", []string{"general.peer_hostname"}},
		{"port 65536", `mode = "Client"` + "\npeer_hostname = \"p\"\nquic_port = 65536", []string{"general.quic_port"}},
		{"port 1", `mode = "Client"` + "\npeer_hostname = \"p\"\nquic_port = 1", nil},
		{"bind ipv4", `mode = "Client"` + "\npeer_hostname = \"p\"\nbind_address = \"127.0.0.1\"", nil},
		{"bind with port", `mode = "Client"` + "\npeer_hostname = \"p\"\nbind_address = \"127.0.0.1:1\"", []string{"general.bind_address"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadString(t, "[general]\n"+tt.general+"\n"+tlsSec, noEnv)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if c.General.Mode == ModeServer && (c.General.HTTPBindAddress != "" || c.General.ConnectAddress != "") {
					t.Errorf("server keeps client fields: %+v", c.General)
				}
				if c.General.Mode == ModeClient && c.General.HTTPConnectAddress != "" {
					t.Errorf("client keeps server field: %+v", c.General)
				}
				return
			}
			if got := fields(err); !sameSet(got, tt.want) {
				t.Errorf("fields = %q, want %q (%v)", got, tt.want, err)
			}
		})
	}
}

func TestModeOnlyMessages(t *testing.T) {
	_, err := loadString(t, "[general]\nmode = \"Server\"\npeer_hostname = \"p\"\nhttp_bind_address = \"[::]:1\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n", noEnv)
	want := "/etc/ptproxy/test.toml: general.http_bind_address: only allowed in Client mode\n" +
		"/etc/ptproxy/test.toml: general.http_connect_address: required in Server mode: the origin's host:port, e.g. \"localhost:8081\""
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
	_, err = loadString(t, "[general]\nmode = \"client\"\npeer_hostname = \"p\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n", noEnv)
	if err == nil || !strings.Contains(err.Error(), `invalid value "client": must be one of "Client", "Server" (case-sensitive)`) {
		t.Errorf("got %v", err)
	}
}

func TestWatchdogFactor(t *testing.T) {
	for _, tt := range []struct {
		val string
		ok  bool
	}{
		{"1.5", true}, {"2", true}, {"0.5", true}, {"1e-3", true},
		{"0", false}, {"0.0", false}, {"-1", false}, {"inf", false}, {"nan", false}, {`"1.5"`, false},
	} {
		_, err := loadString(t, "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n[system]\nwatchdog_factor = "+tt.val+"\n", noEnv)
		if (err == nil) != tt.ok {
			t.Errorf("watchdog_factor = %s: err = %v, want ok=%v", tt.val, err, tt.ok)
		}
		if err != nil && !slices.Equal(fields(err), []string{"system.watchdog_factor"}) {
			t.Errorf("watchdog_factor = %s: fields %q", tt.val, fields(err))
		}
	}
}

func TestBadTypesAreNotTruncated(t *testing.T) {
	// mapstructure alone would silently truncate 20010.5 to 20010.
	_, err := loadString(t, "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\nquic_port = 20010.5\n[tls]\ncert = \"c\"\nkey = \"k\"\n", noEnv)
	if err == nil || !strings.Contains(err.Error(), "general.quic_port: expected integer, got float 20010.5") {
		t.Errorf("got %v", err)
	}
}

func TestWarnings(t *testing.T) {
	c := mustLoad(t, "testdata/valid/full-server.toml", noEnv)
	w := c.Warnings()
	prefixes := []string{
		"transport.initial_rtt = 1 ",
		"transport.initial_window = 1 ",
		"transport.send_window = 1 ",
		`transport.congestion_algorithm = "Cubic" `,
		"tls.skip_verify = true is IGNORED",
	}
	if len(w) != len(prefixes) {
		t.Fatalf("Warnings = %q", w)
	}
	for i, p := range prefixes {
		if !strings.HasPrefix(w[i], p) {
			t.Errorf("warning %d = %q, want prefix %q", i, w[i], p)
		}
	}
	if !strings.Contains(w[4], "NEVER skips peer certificate verification") {
		t.Errorf("skip_verify warning not loud enough: %q", w[4])
	}
	for _, s := range w[:4] {
		if !strings.Contains(s, "no effect") || !strings.Contains(s, "quic-go") {
			t.Errorf("warning does not say why: %q", s)
		}
	}

	// Only explicitly set fields warn, even when the value equals the default.
	c, err := loadString(t, "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nskip_verify = false\n[transport]\ncongestion_algorithm = \"Bbr\"\n", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "transport.congestion_algorithm") {
		t.Errorf("Warnings = %q", w)
	}
	if !c.IsSet("tls.skip_verify") || c.TLS.SkipVerify {
		t.Error("skip_verify = false not recorded as set")
	}
}

func TestValidateCodeBuilt(t *testing.T) {
	c := Defaults()
	c.General.Mode = ModeServer
	c.General.PeerHostname = "p"
	c.General.HTTPConnectAddress = "localhost:8081"
	c.TLS.Cert, c.TLS.Key = "c", "k"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	c.General.HTTPBindAddress = "127.0.0.1:1"
	c.System.WatchdogFactor = 0
	if got := fields(c.Validate()); !sameSet(got, []string{"general.http_bind_address", "system.watchdog_factor"}) {
		t.Errorf("fields = %q", got)
	}

	loaded := mustLoad(t, "testdata/valid/full-client.toml", noEnv)
	if err := loaded.Validate(); err != nil {
		t.Errorf("re-validating a loaded config: %v", err)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		e    FieldError
		want string
	}{
		{FieldError{File: "a.toml", Field: "general.mode", Problem: "bad"}, "a.toml: general.mode: bad"},
		{FieldError{File: "a.toml", Problem: "bad"}, "a.toml: bad"},
		{FieldError{Field: "general.mode", Problem: "bad"}, "general.mode: bad"},
		{FieldError{File: "a.toml", Env: "PTPROXY_X", Problem: "bad"}, "environment variable PTPROXY_X: bad"},
		{FieldError{File: "a.toml", Env: "PTPROXY_GENERAL__MODE", Field: "general.mode", Problem: "bad"}, "environment variable PTPROXY_GENERAL__MODE (general.mode): bad"},
		{FieldError{Problem: "bad"}, "bad"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	if got := FieldErrors(nil); got != nil {
		t.Errorf("FieldErrors(nil) = %v", got)
	}
}

// TestDecodeErrorsBackstop feeds a real mapstructure error (which the checks
// before decoding normally prevent) through decodeErrors.
func TestDecodeErrorsBackstop(t *testing.T) {
	var c Config
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{TagName: "koanf", ErrorUnused: true, Result: &c})
	if err != nil {
		t.Fatal(err)
	}
	derr := d.Decode(map[string]any{"general": map[string]any{"quic_port": "x"}})
	if derr == nil {
		t.Fatal("decoder accepted a string for an int")
	}
	fes := FieldErrors(errors.Join(decodeErrors(derr, "f.toml")...))
	if len(fes) != 1 || fes[0].Field != "general.quic_port" || fes[0].File != "f.toml" {
		t.Errorf("got %+v", fes)
	}
}

// LoadFilePartial returns LoadFile's error and, beside it, what could be
// built: refused values at their defaults, the rest loaded and resolved.
func TestLoadFilePartial(t *testing.T) {
	const p = "testdata/invalid/bad-enums.toml"
	_, want := LoadFile(p, noEnv)
	c, err := LoadFilePartial(p, noEnv)
	if err == nil || want == nil || err.Error() != want.Error() {
		t.Fatalf("error = %v, want LoadFile's %v", err, want)
	}
	if c == nil {
		t.Fatal("no partial configuration")
	}
	if c.General.Mode != ModeClient || c.General.ConnectAddress != "bar.example.org" {
		t.Errorf("general = %+v", c.General)
	}
	if c.Transport.FEC != "On" || c.System.AccessLog {
		t.Errorf("transport.fec = %q (invalid values are kept), system.access_log = %v", c.Transport.FEC, c.System.AccessLog)
	}
	if c, _ := LoadFilePartial("testdata/invalid/bad-types.toml", noEnv); c == nil || c.General.QUICPort != DefaultQUICPort {
		t.Errorf("a value of the wrong type is not left at its default: %+v", c)
	}
	if w := filepath.Join("testdata", "invalid", "c.pem"); c.TLS.Cert != w {
		t.Errorf("tls.cert = %q, want %q", c.TLS.Cert, w)
	}
	if c, err := LoadFilePartial("testdata/invalid/syntax.toml", noEnv); c != nil || err == nil {
		t.Errorf("syntax error: config %v, error %v", c, err)
	}
	if c, err := LoadFilePartial("testdata/valid/client.toml", noEnv); c == nil || err != nil {
		t.Errorf("valid file: config %v, error %v", c, err)
	}
}

func TestNonDefault(t *testing.T) {
	env := []string{"PTPROXY_TRANSPORT__FEC=on", "PTPROXY_SYSTEM__ADMIN_ADDRESS=127.0.0.1:9090"}
	c := mustLoad(t, "testdata/valid/tuning.toml", env)
	got := slices.Concat(c.NonDefault("transport"), c.NonDefault("system"))
	want := []Setting{
		{Key: "transport.initial_rtt", Value: "150", Default: "0"},
		{Key: "transport.initial_window", Value: "487500", Default: "14720"},
		{Key: "transport.fec", Value: `"on"`, Default: `"off"`, Env: "PTPROXY_TRANSPORT__FEC"},
		{Key: "system.admin_address", Value: `"127.0.0.1:9090"`, Default: `""`, Env: "PTPROXY_SYSTEM__ADMIN_ADDRESS"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("NonDefault =\n%+v\nwant\n%+v", got, want)
	}
	if v := c.EnvVar("transport.fec"); v != "PTPROXY_TRANSPORT__FEC" {
		t.Errorf("EnvVar(transport.fec) = %q", v)
	}
	if v := c.EnvVar("general.mode"); v != "" {
		t.Errorf("EnvVar(general.mode) = %q for a file value", v)
	}
	d := mustLoad(t, "testdata/valid/full-server.toml", noEnv)
	for _, s := range d.NonDefault("system") {
		if s.Key == "system.watchdog_factor" && s.Value != "0.5" {
			t.Errorf("float formatting: %+v", s)
		}
	}
}

func TestListenerTLSFields(t *testing.T) {
	const client = "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n"
	c, err := loadString(t, client+"listener_cert = \"l.pem\"\nlistener_key = \"l-key.pem\"\n", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.ListenerCert != "/etc/ptproxy/l.pem" || c.TLS.ListenerKey != "/etc/ptproxy/l-key.pem" {
		t.Errorf("paths not resolved against the file: %q %q", c.TLS.ListenerCert, c.TLS.ListenerKey)
	}
	for _, tc := range []struct{ text, field string }{
		{client + "listener_cert = \"l.pem\"\n", "tls.listener_key"},
		{client + "listener_key = \"l-key.pem\"\n", "tls.listener_cert"},
		{"[general]\nmode = \"Server\"\npeer_hostname = \"p\"\nhttp_connect_address = \"localhost:1\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nlistener_cert = \"l.pem\"\nlistener_key = \"k.pem\"\n", "tls.listener_cert"},
	} {
		_, err := loadString(t, tc.text, noEnv)
		if got := fields(err); len(got) != 1 || got[0] != tc.field {
			t.Errorf("%q: errors on %v, want %s (%v)", tc.text, got, tc.field, err)
		}
	}
}

// TestFECAuto: transport.fec = "auto" loads; fec_repair counts as set
// only when given (in auto mode it is then the ceiling of the repairs).
func TestFECAuto(t *testing.T) {
	c := mustLoad(t, "testdata/valid/client.toml", []string{"PTPROXY_TRANSPORT__FEC=auto"})
	if c.Transport.FEC != FECAuto || c.IsSet("transport.fec_repair") || c.Transport.FECGroupSize != DefaultFECGroupSize {
		t.Fatalf("fec %q, fec_repair set %v, group size %d", c.Transport.FEC, c.IsSet("transport.fec_repair"), c.Transport.FECGroupSize)
	}
	c = mustLoad(t, "testdata/valid/client.toml", []string{"PTPROXY_TRANSPORT__FEC=auto", "PTPROXY_TRANSPORT__FEC_REPAIR=4"})
	if c.Transport.FEC != FECAuto || !c.IsSet("transport.fec_repair") || c.Transport.FECRepair != 4 {
		t.Fatalf("fec %q, fec_repair %d set %v", c.Transport.FEC, c.Transport.FECRepair, c.IsSet("transport.fec_repair"))
	}
}
