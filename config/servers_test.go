package config

import (
	"reflect"
	"strings"
	"testing"
)

func TestServersValid(t *testing.T) {
	toml := `[general]
mode = "Client"
peer_hostname = "a.example"
connect_address = "10.0.0.1"
quic_port = 4433
server_selection = "active_active"
http_bind_address = "127.0.0.1:8080"
[tls]
cert = "c"
key = "k"

[[servers]]
peer_hostname = "b.example"

[[servers]]
peer_hostname = "c.example"
connect_address = "10.0.0.3"
quic_port = 5000

[[servers]]
peer_hostname = "a.example"
connect_address = "10.0.0.4"
`
	c, err := loadString(t, toml, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := []Server{{PeerHostname: "b.example"}, {PeerHostname: "c.example", ConnectAddress: "10.0.0.3", QUICPort: 5000}, {PeerHostname: "a.example", ConnectAddress: "10.0.0.4"}}
	if !reflect.DeepEqual(c.Servers, want) || c.General.ServerSelection != SelectActiveActive {
		t.Fatalf("servers %+v selection %q", c.Servers, c.General.ServerSelection)
	}
	eff := c.EffectiveServers()
	wantEff := []Server{
		{PeerHostname: "a.example", ConnectAddress: "10.0.0.1", QUICPort: 4433, Name: "a.example@10.0.0.1:4433"},
		{PeerHostname: "b.example", ConnectAddress: "b.example", QUICPort: 4433, Name: "b.example"},
		{PeerHostname: "c.example", ConnectAddress: "10.0.0.3", QUICPort: 5000, Name: "c.example"},
		{PeerHostname: "a.example", ConnectAddress: "10.0.0.4", QUICPort: 4433, Name: "a.example@10.0.0.4:4433"},
	}
	if !reflect.DeepEqual(eff, wantEff) {
		t.Fatalf("effective servers\n got %+v\nwant %+v", eff, wantEff)
	}

	yaml := `general:
  mode: Client
  peer_hostname: a.example
  connect_address: 10.0.0.1
  quic_port: 4433
  server_selection: active_active
  http_bind_address: "127.0.0.1:8080"
tls:
  cert: c
  key: k
servers:
  - peer_hostname: b.example
  - peer_hostname: c.example
    connect_address: 10.0.0.3
    quic_port: 5000
  - peer_hostname: a.example
    connect_address: 10.0.0.4
`
	y, err := LoadBytes([]byte(yaml), FormatYAML, "/etc/ptproxy/test.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(y.Servers, want) || y.General.ServerSelection != SelectActiveActive {
		t.Fatalf("YAML: servers %+v selection %q", y.Servers, y.General.ServerSelection)
	}
}

// TestServersDefaults: a file without [[servers]] has one server, the
// general section's, selected by priority, as before.
func TestServersDefaults(t *testing.T) {
	c, err := loadString(t, clientHead, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Servers != nil || c.General.ServerSelection != SelectPriority {
		t.Fatalf("servers %+v selection %q", c.Servers, c.General.ServerSelection)
	}
	eff := c.EffectiveServers()
	if want := []Server{{PeerHostname: "p", ConnectAddress: "p", QUICPort: DefaultQUICPort, Name: "p"}}; !reflect.DeepEqual(eff, want) {
		t.Fatalf("effective %+v", eff)
	}
	e, err := loadString(t, clientHead, []string{"PTPROXY_GENERAL__SERVER_SELECTION=active_active"})
	if err != nil || e.General.ServerSelection != SelectActiveActive {
		t.Fatalf("from the environment: %v %q", err, e.General.ServerSelection)
	}
}

func TestServersInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
		msg        string
	}{
		{"no peer_hostname", "[[servers]]\nquic_port = 1\n", []string{"servers[0].peer_hostname"}, "required"},
		{"bad peer_hostname", "[[servers]]\npeer_hostname = \"a b\"\n", []string{"servers[0].peer_hostname"}, "invalid character"},
		{"bad connect_address", "[[servers]]\npeer_hostname = \"b\"\nconnect_address = \"10.0.0.1:5\"\n", []string{"servers[0].connect_address"}, "without port"},
		{"port too large", "[[servers]]\npeer_hostname = \"b\"\nquic_port = 70000\n", []string{"servers[0].quic_port"}, "between 1 and 65535"},
		{"port zero", "[[servers]]\npeer_hostname = \"b\"\nquic_port = 0\n", []string{"servers[0].quic_port"}, "between 1 and 65535"},
		{"port string", "[[servers]]\npeer_hostname = \"b\"\nquic_port = \"5\"\n", []string{"servers[0].quic_port"}, "integer"},
		{"same as general", "[[servers]]\npeer_hostname = \"p\"\n", []string{"servers[0]"}, "the same server as general.peer_hostname"},
		{"twice", "[[servers]]\npeer_hostname = \"b\"\n[[servers]]\npeer_hostname = \"b\"\nconnect_address = \"b\"\nquic_port = 20010\n", []string{"servers[1]"}, "the same server as servers[0]"},
		{"unknown key", "[[servers]]\npeer_hostname = \"b\"\nport = 5\n", []string{"servers[0].port"}, "unknown key"},
		{"not a table", "", []string{"servers"}, "array of tables"},
		{"bad selection", "", []string{"general.server_selection"}, `"priority", "active_active"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := clientHead + tc.text
			if tc.name == "not a table" {
				text = "servers = 5\n" + clientHead
			}
			if tc.name == "bad selection" {
				text = strings.Replace(clientHead, "[tls]", "server_selection = \"first\"\n[tls]", 1)
			}
			_, err := loadString(t, text, noEnv)
			if got := fields(err); !sameSet(got, tc.want) {
				t.Fatalf("fields = %q, want %q (%v)", got, tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "/etc/ptproxy/test.toml: ") {
				t.Errorf("message %q lacks %q or the file", err, tc.msg)
			}
		})
	}
	_, err := loadString(t, strings.Replace(serverHead, "[tls]", "server_selection = \"priority\"\n[tls]", 1)+"[[servers]]\npeer_hostname = \"b\"\n", noEnv)
	if got := fields(err); !sameSet(got, []string{"servers", "general.server_selection"}) {
		t.Fatalf("server mode: fields %q (%v)", got, err)
	}
	if !strings.Contains(err.Error(), "servers: only allowed in Client mode") {
		t.Errorf("server mode: %v", err)
	}
	_, err = loadString(t, clientHead, []string{"PTPROXY_SERVERS__PEER_HOSTNAME=b"})
	if err == nil || !strings.Contains(err.Error(), "only the configuration file can set") {
		t.Errorf("servers from the environment: %v", err)
	}
}
